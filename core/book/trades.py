"""Closed trades derived from the book: the "live" side of the nightly variance analysis.

A trade is one V6-managed strategy that has closed, valued from its own fills, so the
numbers are what the broker actually did (prices, quantities, commissions), not what
the cycle hoped for. Derivation is pure and idempotent: the same book gives the same
rows, and they are merged insert-only on `trade_id` (= strategy_id).

Conventions (shared with `schemas/analysis.py`):
- prices are per share; `entry_credit` is what the opening fills collected per strategy
  unit (negative for a debit), `exit_debit` what every later fill paid per unit
  (buy-backs, rolls, expiry settlements; negative for a credit);
- `pnl` is the strategy's cash flow in USD after commissions;
- `pnl_pct` is `pnl` as a percent of the entry credit (of the debit for long entries);
- `regime` is the regime recorded with the entry prediction ("unknown" without one);
- `exit_reason` is the rule that last decided to close it, else the book's close reason
  (expired, assigned, exercised, closed_externally).
"""

from __future__ import annotations

import polars as pl

from core.book.ledger import TableStore
from core.domain.strategies import CloseReason, IntentPurpose, StrategyStatus, StrategyType
from core.domain.timezones import UTC_US
from core.store.registry import REGISTRY

TRADED_TYPES = [t.value for t in StrategyType if t is not StrategyType.EXTERNAL]
_EXIT_ACTIONS = ["CLOSE", "REDUCE", "ROLL"]
_SECONDS_PER_DAY = 86_400.0


def closed_trades(
    strategies: pl.DataFrame,
    legs: pl.DataFrame,
    fills: pl.DataFrame,
    intents: pl.DataFrame,
    predictions: pl.DataFrame,
    decisions: pl.DataFrame,
) -> pl.DataFrame:
    """One `trades` row per closed, V6-managed strategy that has opening fills."""
    closed = strategies.filter(
        (pl.col("status") == StrategyStatus.CLOSED.value)
        & pl.col("managed")
        & pl.col("strategy_type").is_in(TRADED_TYPES)
        & pl.col("opened_at").is_not_null()
        & pl.col("closed_at").is_not_null()
    ).select("strategy_id", "strategy_type", "underlying", "opened_at", "closed_at", "close_reason")
    if closed.is_empty():
        return _empty()

    ids = closed.get_column("strategy_id")
    purpose = intents.select("order_ref", "purpose")
    priced = (
        fills.filter(pl.col("strategy_id").is_in(ids.implode()))
        .join(legs.select("leg_id", "multiplier"), on="leg_id", how="left")
        .join(purpose, on="order_ref", how="left")
        .with_columns(
            is_entry=pl.col("purpose") == IntentPurpose.OPEN.value,
            flow=pl.col("quantity") * pl.col("price"),  # + paid, - received (per share)
        )
        .with_columns(pl.col("is_entry").fill_null(False))
    )
    units_per_combo = (
        legs.filter(pl.col("strategy_id").is_in(ids.implode()))
        .group_by("strategy_id")
        .agg(ratio_sum=pl.col("ratio").abs().sum())
    )
    per_strategy = priced.group_by("strategy_id").agg(
        entry_contracts=pl.col("quantity").abs().filter(pl.col("is_entry")).sum(),
        entry_flow=pl.col("flow").filter(pl.col("is_entry")).sum(),
        exit_flow=pl.col("flow").filter(~pl.col("is_entry")).sum(),
        cash=-(pl.col("flow") * pl.col("multiplier")).sum(),
        commissions=pl.col("commission").fill_null(0.0).sum(),
        multiplier=pl.col("multiplier").max(),
    )
    regime = predictions.select("strategy_id", "regime").unique("strategy_id", keep="last")
    last_rule = (
        decisions.filter(pl.col("action").is_in(_EXIT_ACTIONS) & pl.col("rule").is_not_null())
        .sort("evaluated_at")
        .group_by("strategy_id")
        .agg(rule=pl.col("rule").last())
    )
    out = (
        closed.join(per_strategy, on="strategy_id", how="inner")
        .join(units_per_combo, on="strategy_id", how="left")
        .join(regime, on="strategy_id", how="left")
        .join(last_rule, on="strategy_id", how="left")
        .filter(pl.col("entry_contracts") > 0)
        .with_columns(units=(pl.col("entry_contracts") // pl.col("ratio_sum")).clip(lower_bound=1))
        .with_columns(
            entry_credit=-pl.col("entry_flow") / pl.col("units"),
            exit_debit=pl.col("exit_flow") / pl.col("units"),
            pnl=pl.col("cash") - pl.col("commissions"),
        )
        .with_columns(
            basis=pl.col("entry_credit").abs() * pl.col("multiplier") * pl.col("units"),
        )
        .select(
            trade_id=pl.col("strategy_id"),
            strategy_id=pl.col("strategy_id"),
            strategy_type=pl.col("strategy_type"),
            underlying=pl.col("underlying"),
            regime=pl.col("regime").fill_null("unknown"),
            opened_at=pl.col("opened_at"),
            closed_at=pl.col("closed_at"),
            holding_days=(pl.col("closed_at") - pl.col("opened_at")).dt.total_seconds()
            / _SECONDS_PER_DAY,
            quantity=pl.col("units").cast(pl.Int64),
            entry_credit=pl.col("entry_credit"),
            exit_debit=pl.col("exit_debit"),
            pnl=pl.col("pnl"),
            pnl_pct=pl.when(pl.col("basis") > 0)
            .then(pl.col("pnl") / pl.col("basis") * 100.0)
            .otherwise(0.0),
            exit_reason=pl.coalesce(
                pl.when(pl.col("close_reason") == CloseReason.CLOSED.value).then(pl.col("rule")),
                pl.col("close_reason"),
                pl.lit(CloseReason.CLOSED.value),
            ),
            slippage_vs_mid=pl.lit(None, dtype=pl.Float64),
            source=pl.lit("live"),
        )
    )
    return out.with_columns(pl.col("opened_at", "closed_at").cast(UTC_US)).sort("closed_at")


def trades_from_store(store: TableStore) -> pl.DataFrame:
    """`closed_trades` over the book tables of `store` (live book or a backtest's scratch)."""

    def table(name: str, columns: list[str] | None = None) -> pl.DataFrame:
        return store.read(name, columns=columns).collect()

    return closed_trades(
        table("strategies"),
        table("legs"),
        table("fills"),
        table("order_intents"),
        table("predictions"),
        table("decisions", ["strategy_id", "action", "rule", "evaluated_at"]),
    )


def record_closed_trades(store: TableStore) -> int:
    """Derive trades from the book and merge the new ones (insert-only, one commit).

    Returns how many trades were new."""
    trades = trades_from_store(store)
    before = store.read("trades", columns=["trade_id"]).collect().height
    store.merge("trades", trades, update=False)
    return store.read("trades", columns=["trade_id"]).collect().height - before


def _empty() -> pl.DataFrame:
    return REGISTRY["trades"].empty()
