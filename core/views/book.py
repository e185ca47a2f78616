"""The book as a person reads it (see the package doc).

Prices follow the book's conventions: a fill price is per share, a leg's `avg_price` is
its average opening price, and `ratio x multiplier x price` summed over a strategy's legs
is what one unit cost (negative: a credit received). The numbers of the last cycle (P&L %,
DTE, greeks, regime, the rule that decided) come from the latest `decisions` row of each
strategy: they are as of that evaluation, which is shown beside them, never presented as
live.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from zoneinfo import ZoneInfo

import polars as pl

from core.book.ledger import Book, TableStore
from core.domain.strategies import StrategyStatus

c = pl.col


class UnknownStrategy(KeyError):
    """No strategy with this id in the book."""


def open_legs(store: TableStore) -> pl.DataFrame:
    """Legs holding a position (quantity from fills), with their strategy's facts."""
    legs = Book(store).leg_positions(open_only=True)
    return legs.filter(c("quantity") != 0) if not legs.is_empty() else legs


def last_decisions(store: TableStore) -> pl.DataFrame:
    """The latest exit-rule evaluation of each strategy."""
    return store.read("decisions").sort("evaluated_at").group_by("strategy_id").last().collect()


def open_strategies(store: TableStore) -> pl.DataFrame:
    """One row per strategy holding a position: units, entry credit and the last cycle's
    mark, unrealised P&L (USD and % of credit), DTE, net delta/gamma, regime, profit
    target and the rule that decided (with when it was evaluated)."""
    legs = open_legs(store)
    if legs.is_empty():
        return pl.DataFrame(schema=_OPEN_SCHEMA)
    unit = c("ratio") * c("multiplier")
    per = legs.group_by("strategy_id", maintain_order=True).agg(
        c("strategy_type").first(),
        c("underlying").first(),
        c("managed").first().fill_null(False),
        (c("quantity").abs() // c("ratio").abs()).max().alias("units"),
        # what the position cost when opened; > 0 is a credit received
        (-(c("quantity") * c("multiplier") * c("avg_price")).sum()).alias("credit_usd"),
        (unit * c("avg_price")).sum().alias("_unit_entry"),
    )
    dec = last_decisions(store).select(
        "strategy_id",
        "evaluated_at",
        "profit_pct",
        "dte",
        "net_delta",
        "net_gamma",
        "regime",
        "profit_target_pct",
        "action",
        "rule",
        "reason",
    )
    out = per.join(dec, on="strategy_id", how="left")
    basis = c("credit_usd").abs()
    pnl = c("profit_pct") / 100.0 * basis
    return (
        out.with_columns(
            pnl.alias("unrealised_usd"),
            (c("credit_usd") - pnl).alias("mark_usd"),  # what closing would cost (credit)
            (c("net_delta") * c("units")).alias("net_delta"),
            (c("net_gamma") * c("units")).alias("net_gamma"),
        )
        .select(list(_OPEN_SCHEMA))
        .cast(_OPEN_SCHEMA)
        .sort("strategy_id")
    )


_OPEN_SCHEMA = pl.Schema(
    {
        "strategy_id": pl.String(),
        "strategy_type": pl.String(),
        "underlying": pl.String(),
        "managed": pl.Boolean(),
        "units": pl.Int64(),
        "credit_usd": pl.Float64(),
        "mark_usd": pl.Float64(),
        "unrealised_usd": pl.Float64(),
        "profit_pct": pl.Float64(),
        "dte": pl.Int64(),
        "net_delta": pl.Float64(),
        "net_gamma": pl.Float64(),
        "regime": pl.String(),
        "profit_target_pct": pl.Float64(),
        "action": pl.String(),
        "rule": pl.String(),
        "reason": pl.String(),
        "evaluated_at": pl.Datetime("us", "UTC"),
    }
)


def closed_trades(store: TableStore, *, since: date | None, tz: ZoneInfo) -> pl.DataFrame:
    """Closed trades, oldest first; `since` is a market date (inclusive) in `tz`."""
    trades = store.read("trades")
    if since is not None:
        trades = trades.filter(c("closed_at").dt.convert_time_zone(str(tz)).dt.date() >= since)
    return trades.sort("closed_at").collect()


@dataclass(frozen=True)
class StrategyLife:
    """Everything the book knows about one strategy, each part oldest first."""

    strategy: dict[str, object]
    legs: pl.DataFrame
    orders: pl.DataFrame  # intents joined with the broker's last word on each
    fills: pl.DataFrame
    decisions: pl.DataFrame
    trade: dict[str, object] | None

    @property
    def is_open(self) -> bool:
        return self.strategy.get("status") == StrategyStatus.OPEN.value


def strategy_life(store: TableStore, strategy_id: str) -> StrategyLife:
    """Intent, orders with prices, fills, rule decisions and close of one strategy."""
    mine = c("strategy_id") == strategy_id
    rows = store.read("strategies", where=mine).collect()
    if rows.is_empty():
        raise UnknownStrategy(strategy_id)
    intents = store.read("order_intents", where=mine).collect()
    orders = store.read("orders", where=mine).collect()
    timeline = (
        intents.select(
            "order_ref",
            "intent_seq",
            "purpose",
            "action",
            "quantity",
            c("limit_price").alias("intent_limit"),
            "created_at",
        )
        .join(
            orders.select(
                "order_ref",
                "status",
                "filled",
                "limit_price",
                "avg_fill_price",
                "message",
                "updated_at",
            ),
            on="order_ref",
            how="full",
            coalesce=True,
        )
        .sort("intent_seq", "order_ref", nulls_last=True)
    )
    trades = store.read("trades", where=mine).collect()
    return StrategyLife(
        strategy=rows.row(0, named=True),
        legs=store.read("legs", where=mine).collect().sort("leg_index"),
        orders=timeline,
        fills=store.read("fills", where=mine).collect().sort("time", "exec_id"),
        decisions=store.read("decisions", where=mine).collect().sort("evaluated_at"),
        trade=trades.row(0, named=True) if trades.height else None,
    )
