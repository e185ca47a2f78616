"""The Book: V6's record of what it holds, kept in the Delta tables of `schemas/book.py`.

Positions are derived, never stored: a leg's quantity is the sum of its fills, and fills
are written insert-only on `exec_id`. Everything else (strategies, legs, orders) is an
idempotent upsert of full rows, so any write can be replayed after a crash.

Protocol the entry pipeline follows (what makes a crash between submit and record safe):
`open_strategy` (strategy + legs, PENDING) -> `record_intent` (keyed by the deterministic
orderRef) -> submit -> `record_order` / `record_fills`. Reconciliation repairs whatever a
crash left out.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

import polars as pl

from core.clock import Clock, SystemClock
from core.domain import Execution, OrderRequest, OrderState
from core.domain.frames import executions_frame
from core.domain.order_refs import OrderRef, parse_order_ref
from core.domain.strategies import (
    CloseReason,
    IntentPurpose,
    LegSpec,
    LegStatus,
    Origin,
    StrategyStatus,
    StrategyType,
    leg_id_for,
    strategy_id_for,
)
from core.domain.timezones import UTC_US
from core.reconcile import (
    BOOK_TABLES,
    BookFrames,
    BrokerFrames,
    ReconcileResult,
    position_stats,
    reconcile,
    table_schema,
)

log = logging.getLogger(f"v6.{__name__}")


class TableStore(Protocol):
    """What the book needs from a store (DeltaStore, or MemoryStore in tests/backtests)."""

    def merge(self, name: str, batch: pl.DataFrame, *, update: bool = True) -> object: ...

    def read(
        self, name: str, where: pl.Expr | None = None, columns: list[str] | None = None
    ) -> pl.LazyFrame: ...


class Book:
    """Read and write the book. Every write is an idempotent merge (fills: insert-only)."""

    def __init__(self, store: TableStore, clock: Clock | None = None, account: str = "") -> None:
        self.store = store
        self.clock = clock or SystemClock()
        self.account = account

    def _now(self) -> datetime:
        return self.clock.now().astimezone(UTC)

    # -- reads ---------------------------------------------------------------------------
    def frames(self) -> BookFrames:
        """The whole book as frames, the input of `reconcile`."""
        return BookFrames(*(self.store.read(t).collect() for t in BOOK_TABLES))

    def strategies(self, *, status: Sequence[str] | None = None) -> pl.DataFrame:
        where = pl.col("status").is_in(list(status)) if status else None
        return self.store.read("strategies", where=where).collect()

    def legs(self, strategy_id: str | None = None) -> pl.DataFrame:
        where = pl.col("strategy_id") == strategy_id if strategy_id else None
        return self.store.read("legs", where=where).collect().sort("strategy_id", "leg_index")

    def fills(self, strategy_id: str | None = None) -> pl.DataFrame:
        where = pl.col("strategy_id") == strategy_id if strategy_id else None
        return self.store.read("fills", where=where).collect()

    def leg_positions(self, *, open_only: bool = True) -> pl.DataFrame:
        """Legs with their derived `quantity` and `avg_price` (per unit), plus strategy facts.

        Rules read this: legs of strategies with `managed=False` (EXTERNAL, untagged) must
        never be traded.
        """
        legs = self.store.read("legs").collect()
        stats = position_stats(self.store.read("fills").collect(), "leg_id").select(
            "leg_id", "quantity", "avg_price"
        )
        strat = (
            self.store.read(
                "strategies",
                columns=[
                    "strategy_id",
                    "strategy_type",
                    "origin",
                    "managed",
                    "underlying",
                    "quantity",
                ],
            )
            .collect()
            .rename({"quantity": "strategy_quantity"})
        )
        out = (
            legs.join(stats, on="leg_id", how="left")
            .with_columns(pl.col("quantity").fill_null(0))
            .join(strat, on="strategy_id", how="left")
        )
        if open_only:
            out = out.filter(pl.col("status") != LegStatus.CLOSED.value)
        return out.sort("strategy_id", "leg_index")

    def positions(self) -> pl.DataFrame:
        """Net book quantity and average price per contract (what the broker should show)."""
        stats = position_stats(self.store.read("fills").collect(), "con_id")
        return stats.filter(pl.col("quantity") != 0).select("con_id", "quantity", "avg_price")

    def next_intent_seq(self, strategy_id: str) -> int:
        seqs = self.store.read(
            "order_intents", where=pl.col("strategy_id") == strategy_id, columns=["intent_seq"]
        ).collect()
        return 0 if seqs.is_empty() else int(seqs.get_column("intent_seq").max()) + 1  # type: ignore[arg-type]

    def last_reconciled_at(self) -> datetime | None:
        """`as_of` of the latest reconciliation snapshot: the executions watermark."""
        latest = (
            self.store.read("positions_snapshots", columns=["as_of"])
            .select(pl.col("as_of").max())
            .collect()
        )
        value = latest.item() if latest.height else None
        return value if isinstance(value, datetime) else None

    # -- writes --------------------------------------------------------------------------
    def open_strategy(
        self,
        strategy_type: StrategyType | str,
        underlying: str,
        legs: Sequence[LegSpec],
        *,
        quantity: int,
        nonce: int = 0,
        note: str = "",
    ) -> str:
        """Record a new V6 strategy and its legs (PENDING) before any order goes out.

        Idempotent: the id is deterministic, so deciding the same entry twice writes the
        same rows. Returns the strategy id.
        """
        if quantity <= 0:
            raise ValueError(f"open_strategy: quantity must be a positive integer, got {quantity}")
        con_ids = [leg.contract.con_id for leg in legs]
        if len(set(con_ids)) != len(con_ids):
            raise ValueError(
                f"open_strategy: a strategy holds each contract in one leg; con_ids {con_ids} "
                "repeat: combine the ratios"
            )
        st = StrategyType(strategy_type)
        if st is StrategyType.EXTERNAL:
            raise ValueError("open_strategy: EXTERNAL strategies are adopted by reconciliation")
        now = self._now()
        sid = strategy_id_for(st, underlying, legs, now.date(), nonce)
        existing = self.store.read("strategies", where=pl.col("strategy_id") == sid).collect()
        if existing.height:
            return sid
        strategy = pl.DataFrame(
            {
                "strategy_id": [sid],
                "account": [self.account],
                "underlying": [underlying],
                "strategy_type": [st.value],
                "origin": [Origin.V6.value],
                "managed": [True],
                "status": [StrategyStatus.PENDING.value],
                "quantity": [quantity],
                "created_at": [now],
                "opened_at": [None],
                "closed_at": [None],
                "close_reason": [None],
                "tagged_by": [None],
                "note": [note],
                "updated_at": [now],
            },
            schema=table_schema("strategies"),
        )
        rows = [
            {
                "con_id": leg.contract.con_id,
                "symbol": leg.contract.symbol,
                "sec_type": leg.contract.sec_type.value,
                "expiry": leg.contract.expiry,
                "strike": leg.contract.strike,
                "right": leg.contract.right.value if leg.contract.right else None,
                "multiplier": leg.contract.multiplier,
                "leg_id": leg_id_for(sid, i),
                "strategy_id": sid,
                "leg_index": i,
                "ratio": leg.ratio,
                "exchange": leg.contract.exchange,
                "currency": leg.contract.currency,
                "local_symbol": leg.contract.local_symbol,
                "trading_class": leg.contract.trading_class,
                "status": LegStatus.PENDING.value,
                "opened_at": None,
                "closed_at": None,
                "close_reason": None,
                "updated_at": now,
            }
            for i, leg in enumerate(legs)
        ]
        # legs first: a strategy row never exists without its legs
        self.store.merge("legs", pl.DataFrame(rows, schema=table_schema("legs")))
        self.store.merge("strategies", strategy)
        return sid

    def record_intent(self, order: OrderRequest, purpose: IntentPurpose | str) -> OrderRef:
        """Record what V6 is about to send, BEFORE submitting it (insert-only on the ref)."""
        ref = parse_order_ref(order.order_ref)
        if ref is None:
            raise ValueError(
                f"record_intent: order_ref {order.order_ref!r} is not a V6 ref; build it with "
                "core.domain.order_refs.make_order_ref(strategy_id, intent_seq, leg_index)"
            )
        if order.contract.con_id <= 0 and ref.leg_index is not None:
            raise ValueError(
                "record_intent: a single-leg order needs a qualified contract (con_id)"
            )
        row = pl.DataFrame(
            {
                "order_ref": [order.order_ref],
                "strategy_id": [ref.strategy_id],
                "intent_seq": [ref.intent_seq],
                "leg_index": [ref.leg_index],
                "purpose": [IntentPurpose(purpose).value],
                "action": [order.action.value],
                "quantity": [order.quantity],
                "order_type": [order.order_type.value],
                "limit_price": [order.limit_price],
                "con_id": [order.contract.con_id if ref.leg_index is not None else 0],
                "created_at": [self._now()],
            },
            schema=table_schema("order_intents"),
        )
        self.store.merge("order_intents", row, update=False)
        return ref

    def record_order(self, state: OrderState) -> None:
        """Upsert the broker's view of one of V6's orders."""
        ref = parse_order_ref(state.order_ref)
        if ref is None:
            raise ValueError(f"record_order: {state.order_ref!r} is not a V6 order ref")
        avg = state.avg_fill_price
        row = pl.DataFrame(
            {
                "order_ref": [state.order_ref],
                "strategy_id": [ref.strategy_id],
                "order_id": [state.order_id],
                "perm_id": [state.perm_id],
                "con_id": [state.contract.con_id],
                "action": [state.action.value],
                "quantity": [state.quantity],
                "filled": [state.filled],
                "status": [state.status.value],
                "avg_fill_price": [avg if avg == avg else None],
                "limit_price": [state.limit_price],
                "message": [state.message],
                "updated_at": [self._now()],
            },
            schema=table_schema("orders"),
        )
        self.store.merge("orders", row)

    def record_fills(self, executions: Sequence[Execution]) -> pl.DataFrame:
        """Book executions of V6's own orders exactly once; returns the fills newly recorded.

        Executions of orders V6 did not place are left to reconciliation (which adopts
        them as EXTERNAL and records why).
        """
        if not executions:
            return table_schema_frame("fills")
        frame = executions_frame(executions)
        self.fill_in_commissions(frame)
        result = reconcile(
            self.frames(),
            BrokerFrames(
                positions=BrokerFrames.empty().positions,
                executions=frame,
                open_orders=BrokerFrames.empty().open_orders,
            ),
            as_of=self._now(),
            run_id="record-fills",
            fills_only=True,
        )
        self._write(result, breaks=False, snapshot=False)
        return result.fills

    def fill_in_commissions(self, executions: pl.DataFrame) -> int:
        """Fill in the commission of booked fills that lacked one, from the broker's
        executions (IB may send a commission report seconds after its execution, or only
        after a reconnect). An update of the fill row, never a second fill; realised P&L
        reads it from there. Returns how many fills got their commission."""
        known = executions.filter(pl.col("commission").is_finite()).select(
            "exec_id", _comm=pl.col("commission")
        )
        if known.is_empty():
            return 0
        lacking = self.store.read(
            "fills",
            where=pl.col("commission").is_null()
            & pl.col("exec_id").is_in(known.get_column("exec_id").implode()),
        ).collect()
        if lacking.is_empty():
            return 0
        rows = lacking.join(known.unique("exec_id"), on="exec_id").with_columns(
            commission=pl.col("_comm")
        )
        self.store.merge("fills", rows.drop("_comm"), update=True)
        log.info("filled in %d late commission(s)", rows.height)
        return rows.height

    def set_strategy_status(self, strategy_id: str, status: StrategyStatus, note: str = "") -> None:
        """Mark a strategy CANCELLED (never filled) or similar bookkeeping transitions."""
        rows = self.store.read("strategies", where=pl.col("strategy_id") == strategy_id).collect()
        if rows.is_empty():
            raise KeyError(f"no strategy {strategy_id!r} in the book")
        now = self._now()
        updated = rows.with_columns(
            status=pl.lit(StrategyStatus(status).value),
            note=pl.lit(note) if note else pl.col("note"),
            updated_at=pl.lit(now).cast(UTC_US),
            closed_at=pl.lit(now).cast(UTC_US)
            if status in (StrategyStatus.CLOSED, StrategyStatus.CANCELLED)
            else pl.col("closed_at"),
            close_reason=pl.lit(CloseReason.CANCELLED.value)
            if status is StrategyStatus.CANCELLED
            else pl.col("close_reason"),
        )
        self.store.merge("strategies", updated)

    def tag_external(
        self,
        strategy_id: str,
        *,
        strategy_type: StrategyType | str,
        tagged_by: str,
        quantity: int = 1,
        note: str = "",
    ) -> None:
        """A person takes an EXTERNAL strategy under V6's rules (the only way it gets traded)."""
        if not tagged_by.strip():
            raise ValueError("tag_external: tagged_by must name the person tagging it")
        st = StrategyType(strategy_type)
        if st is StrategyType.EXTERNAL:
            raise ValueError("tag_external: choose the strategy type V6 should manage it as")
        rows = self.store.read("strategies", where=pl.col("strategy_id") == strategy_id).collect()
        if rows.is_empty():
            raise KeyError(f"no strategy {strategy_id!r} in the book")
        if rows.get_column("origin").item() != Origin.EXTERNAL.value:
            raise ValueError(f"tag_external: {strategy_id} is V6's own strategy, not EXTERNAL")
        self.store.merge(
            "strategies",
            rows.with_columns(
                strategy_type=pl.lit(st.value),
                managed=pl.lit(True),
                quantity=pl.lit(quantity, dtype=pl.Int64),
                tagged_by=pl.lit(tagged_by),
                note=pl.lit(note) if note else pl.col("note"),
                updated_at=pl.lit(self._now()).cast(UTC_US),
            ),
        )

    # -- reconciliation ---------------------------------------------------------------------
    def apply(self, result: ReconcileResult) -> dict[str, int]:
        """Write a reconciliation's results, one commit per table, in a crash-safe order.

        Breaks first (a replay re-derives the same break ids, so nothing is lost or doubled),
        then legs and strategies (fills never point at a missing leg), then fills
        (insert-only), orders, and the snapshot last (it is the executions watermark).
        """
        return self._write(result, breaks=True, snapshot=True)

    def _write(self, result: ReconcileResult, *, breaks: bool, snapshot: bool) -> dict[str, int]:
        written: dict[str, int] = {}
        steps: list[tuple[str, pl.DataFrame, bool]] = []
        if breaks:
            steps.append(("reconciliation_breaks", result.breaks, False))
        steps += [
            ("legs", result.legs, True),
            ("strategies", result.strategies, True),
            ("fills", result.fills, False),
            ("orders", result.orders, True),
        ]
        if snapshot:
            steps.append(("positions_snapshots", result.snapshot, True))
        for name, frame, update in steps:
            if frame.height:
                self.store.merge(name, frame, update=update)
            written[name] = frame.height
        return written


def table_schema_frame(name: str) -> pl.DataFrame:
    return pl.DataFrame(schema=table_schema(name))
