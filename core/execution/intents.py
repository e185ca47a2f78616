"""Intents and the book-keeping the executor needs around them.

The order of writes is what makes a crash safe (see `core.book.ledger`): the strategy
and its legs exist (PENDING) -> the intent is written, keyed by its deterministic orderRef
-> only then is the order sent. A retry reads the intents back and asks the broker for
each ref (`Broker.find_order`) before anything new goes out.

Besides `Book.record_intent`, the executor needs a few writes the ledger does not offer;
they are here, each an idempotent upsert of full rows in the book's own tables:
`set_strategy_quantity` (a partial entry keeps only what filled), `append_legs` (a roll
adds the new legs to the strategy it moves), `close_unfilled_legs` (legs that never
filled are closed as cancelled, so no PENDING leg lingers).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import polars as pl

from core.book.ledger import Book, TableStore
from core.domain import OrderRequest
from core.domain.order_refs import OrderRef
from core.domain.strategies import CloseReason, IntentPurpose, LegSpec, LegStatus, leg_id_for
from core.domain.timezones import MARKET_TZ, UTC_US
from core.reconcile import table_schema
from core.risk.exposure import worst_expiry_value
from core.risk.limits import DayUsage

RISK_ADDING = (IntentPurpose.OPEN, IntentPurpose.ROLL)  # orders the max-loss hard caps bound


def record_intent(book: Book, order: OrderRequest, purpose: IntentPurpose) -> OrderRef:
    """Write the intent BEFORE the order is submitted (insert-only on the orderRef)."""
    return book.record_intent(order, purpose)


def strategy_intents(
    store: TableStore, strategy_id: str, purposes: Sequence[IntentPurpose] | None = None
) -> pl.DataFrame:
    """The strategy's intents, oldest first (optionally only some purposes)."""
    where = pl.col("strategy_id") == strategy_id
    if purposes:
        where = where & pl.col("purpose").is_in([p.value for p in purposes])
    return store.read("order_intents", where=where).collect().sort("intent_seq")


def sent_today(store: TableStore, now: datetime) -> DayUsage:
    """What V6 executed on the market date of `now`: the day usage the hard caps add an
    order to. Counted from broker fills (what really went out): contracts and notional
    (|qty| x multiplier x strike) of every fill, max loss of each entry or roll order (its
    premium paid minus the worst expiry value of its fills, as `check_hard_caps` sees it)."""
    day = now.astimezone(MARKET_TZ).date()
    fills = (
        store.read("fills", where=pl.col("source") == "broker")
        .filter(pl.col("time").dt.convert_time_zone(MARKET_TZ.key).dt.date() == day)
        .select("order_ref", "leg_id", "quantity", "price")
        .collect()
    )
    if fills.is_empty():
        return DayUsage()
    legs = store.read(
        "legs", columns=["leg_id", "sec_type", "right", "multiplier", "strike"]
    ).collect()
    filled = fills.join(legs, on="leg_id", how="left").with_columns(
        pl.col("multiplier").fill_null(100), pl.col("strike").fill_null(0.0)
    )
    size = filled.select(
        contracts=pl.col("quantity").abs().sum(),
        notional=(
            pl.col("quantity").abs().cast(pl.Float64)
            * pl.col("multiplier").cast(pl.Float64)
            * pl.col("strike")
        ).sum(),
    ).row(0)
    risk_adding = store.read(
        "order_intents",
        where=pl.col("purpose").is_in([p.value for p in RISK_ADDING]),
        columns=["order_ref"],
    ).collect()
    orders = filled.join(risk_adding.unique(), on="order_ref", how="semi")
    loss = 0.0
    if orders.height:
        premium = orders.group_by("order_ref").agg(
            paid=(pl.col("quantity") * pl.col("multiplier") * pl.col("price")).sum()
        )
        loss = float(
            worst_expiry_value(orders, "order_ref")
            .join(premium, on="order_ref")
            .select((pl.col("paid") - pl.col("worst")).clip(lower_bound=0.0).sum())
            .item()
        )
    return DayUsage(int(size[0] or 0), float(size[1] or 0.0), loss)


def strategy_row(store: TableStore, strategy_id: str) -> dict[str, object] | None:
    rows = store.read("strategies", where=pl.col("strategy_id") == strategy_id).collect()
    return rows.row(0, named=True) if rows.height else None


def set_strategy_quantity(
    store: TableStore, strategy_id: str, quantity: int, note: str, now: datetime
) -> None:
    """Record that the strategy holds `quantity` units (a partial entry kept its fills)."""
    rows = store.read("strategies", where=pl.col("strategy_id") == strategy_id).collect()
    if rows.is_empty():
        raise KeyError(f"no strategy {strategy_id!r} in the book")
    store.merge(
        "strategies",
        rows.with_columns(
            quantity=pl.lit(quantity, dtype=pl.Int64),
            note=pl.lit(note),
            updated_at=pl.lit(now.astimezone(UTC)).cast(UTC_US),
        ),
    )


def append_legs(
    store: TableStore, strategy_id: str, legs: Sequence[LegSpec], now: datetime
) -> list[str]:
    """Add legs (PENDING) to an existing strategy; returns their leg ids. A contract the
    strategy already holds in a leg keeps that leg (no second leg per contract)."""
    have = store.read("legs", where=pl.col("strategy_id") == strategy_id).collect()
    if have.is_empty():
        raise KeyError(f"no legs for strategy {strategy_id!r}: open it first")
    known = set(have["con_id"].to_list())
    next_index = int(have["leg_index"].max()) + 1  # type: ignore[arg-type]
    ts = now.astimezone(UTC)
    rows = []
    for leg in legs:
        if leg.contract.con_id in known:
            continue
        c = leg.contract
        rows.append(
            {
                "con_id": c.con_id,
                "symbol": c.symbol,
                "sec_type": c.sec_type.value,
                "expiry": c.expiry,
                "strike": c.strike,
                "right": c.right.value if c.right else None,
                "multiplier": c.multiplier,
                "leg_id": leg_id_for(strategy_id, next_index),
                "strategy_id": strategy_id,
                "leg_index": next_index,
                "ratio": leg.ratio,
                "exchange": c.exchange,
                "currency": c.currency,
                "local_symbol": c.local_symbol,
                "trading_class": c.trading_class,
                "status": LegStatus.PENDING.value,
                "opened_at": None,
                "closed_at": None,
                "close_reason": None,
                "updated_at": ts,
            }
        )
        known.add(c.con_id)
        next_index += 1
    if rows:
        store.merge("legs", pl.DataFrame(rows, schema=table_schema("legs")))
    return [str(r["leg_id"]) for r in rows]


def close_unfilled_legs(
    store: TableStore, strategy_id: str, now: datetime, leg_ids: Sequence[str] | None = None
) -> int:
    """Close (reason cancelled) the strategy's PENDING legs that have no fills."""
    where = (pl.col("strategy_id") == strategy_id) & (pl.col("status") == LegStatus.PENDING.value)
    legs = store.read("legs", where=where).collect()
    if leg_ids is not None:
        legs = legs.filter(pl.col("leg_id").is_in(list(leg_ids)))
    filled = store.read("fills", where=pl.col("strategy_id") == strategy_id, columns=["leg_id"])
    legs = legs.join(filled.collect().unique(), on="leg_id", how="anti")
    if legs.is_empty():
        return 0
    ts = pl.lit(now.astimezone(UTC)).cast(UTC_US)
    store.merge(
        "legs",
        legs.with_columns(
            status=pl.lit(LegStatus.CLOSED.value),
            closed_at=ts,
            close_reason=pl.lit(CloseReason.CANCELLED.value),
            updated_at=ts,
        ),
    )
    return legs.height


__all__ = [
    "append_legs",
    "close_unfilled_legs",
    "record_intent",
    "sent_today",
    "set_strategy_quantity",
    "strategy_intents",
    "strategy_row",
]
