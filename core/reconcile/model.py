"""Reconciliation's inputs and outputs, its internal frame schemas and small helpers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import polars as pl

from core.domain import Execution, OrderState, Position
from core.domain.breaks import BreakKind, Resolution, Severity
from core.domain.frames import (
    CONTRACT_SCHEMA,
    EXECUTIONS_SCHEMA,
    ORDERS_SCHEMA,
    POSITIONS_SCHEMA,
    executions_frame,
    orders_frame,
    positions_frame,
)
from core.domain.strategies import CloseReason, Origin, StrategyStatus, short_hash
from core.domain.timezones import UTC_US
from core.store.registry import REGISTRY

_EXT_PREFIX = "__ext__:"  # placeholder strategy of a not-yet-named EXTERNAL strategy
_NEW_LEG = "__new__:"  # placeholder leg booked this run, named in finalize_targets
_UNLIMITED = 1 << 40
# Every plan here is small or already in memory: polars' default engine ("auto") picks the
# streaming engine, whose start-up costs more than these plans take to run.
_ENGINE: Final = "in-memory"
_CON_SPAN = 1 << 32  # con_ids fit in 32 bits: (code, con_id) packs into one Int64 key
_NULL_STR = pl.lit(None, dtype=pl.String)
# what a break row shows of its contract (and the book's and broker's quantities)
_BREAK_INFO = (
    "con_id", "book0", "broker", "broker_avg", "symbol", "sec_type", "expiry", "strike", "right",
)  # fmt: skip
# Refs the broker (or the simulator) puts on executions that settle an expiring option.
EXPIRY_REF_PREFIXES = ("EXPIRY:",)

BOOK_TABLES = ("strategies", "legs", "order_intents", "orders", "fills")
# The strategy facts a not-yet-named EXTERNAL strategy has (see _build_leg_book).
_EXT_FACTS: dict[str, Any] = {
    "s_origin": Origin.EXTERNAL.value,
    "s_managed": False,
    "s_status": StrategyStatus.OPEN.value,
    "s_quantity": 0,
}


def table_schema(name: str) -> pl.Schema:
    return REGISTRY[name].schema


_SCHEMAS: dict[str, tuple[object, pl.Schema]] = {}


def _schema(name: str) -> pl.Schema:
    """`table_schema`, memoised per registered spec (pandera builds it afresh each time)."""
    spec = REGISTRY[name]
    hit = _SCHEMAS.get(name)
    if hit is None or hit[0] is not spec:
        hit = _SCHEMAS[name] = (spec, spec.schema)
    return hit[1]


@dataclass(frozen=True)
class BookFrames:
    """The book's tables as frames (current state; fills complete)."""

    strategies: pl.DataFrame
    legs: pl.DataFrame
    intents: pl.DataFrame
    orders: pl.DataFrame
    fills: pl.DataFrame

    @classmethod
    def empty(cls) -> BookFrames:
        return cls(*(REGISTRY[t].empty() for t in BOOK_TABLES))


@dataclass(frozen=True)
class BrokerFrames:
    """What the broker says: positions, executions since the watermark, open orders."""

    positions: pl.DataFrame
    executions: pl.DataFrame
    open_orders: pl.DataFrame

    @classmethod
    def from_domain(
        cls,
        positions: Sequence[Position],
        executions: Sequence[Execution],
        open_orders: Sequence[OrderState],
    ) -> BrokerFrames:
        return cls(
            positions_frame(positions), executions_frame(executions), orders_frame(open_orders)
        )

    @classmethod
    def empty(cls) -> BrokerFrames:
        return cls(
            pl.DataFrame(schema=POSITIONS_SCHEMA),
            pl.DataFrame(schema=EXECUTIONS_SCHEMA),
            pl.DataFrame(schema=ORDERS_SCHEMA),
        )


@dataclass(frozen=True)
class Tolerance:
    """How close the book's average price must be to the broker's (per unit) to agree."""

    avg_price_abs: float = 0.01
    avg_price_rel: float = 1e-4


@dataclass(frozen=True)
class ReconcileResult:
    run_id: str
    as_of: datetime
    fills: pl.DataFrame  # new rows for `fills` (insert-only)
    strategies: pl.DataFrame  # upserts for `strategies`
    legs: pl.DataFrame  # upserts for `legs`
    orders: pl.DataFrame  # upserts for `orders`
    breaks: pl.DataFrame  # new rows for `reconciliation_breaks` (insert-only)
    snapshot: pl.DataFrame  # rows for `positions_snapshots`
    duplicate_reports: int = 0

    @property
    def unresolved_breaks(self) -> int:
        return int(self.breaks.filter(~pl.col("resolved")).height)

    @property
    def suspect_reports(self) -> int:
        """Breaks that say the broker's report itself cannot be trusted (an absurd number, a
        position gone without explanation): data-quality failures, the cycle stops."""
        kind, resolution = pl.col("kind"), pl.col("resolution")
        suspect = (kind == BreakKind.ABSURD_REPORT.value) | (
            (kind == BreakKind.MISSING_POSITION.value)
            & (resolution == Resolution.AWAITING_ACK.value)
        )
        return int(self.breaks.filter(suspect).height)

    @property
    def urgent_breaks(self) -> int:
        return int(self.breaks.filter(pl.col("severity") == Severity.URGENT.value).height)

    @property
    def in_agreement(self) -> bool:
        """True when, after the resolutions, every contract's book quantity equals the broker's."""
        return (
            bool(self.snapshot.select(pl.col("agrees").all()).item())
            if self.snapshot.height
            else True
        )

    def summary(self) -> dict[str, Any]:
        by_kind = (
            dict(self.breaks.group_by("kind").len().sort("kind").iter_rows())
            if self.breaks.height
            else {}
        )
        return {
            "run_id": self.run_id,
            "as_of": self.as_of.isoformat(),
            "breaks": self.breaks.height,
            "unresolved_breaks": self.unresolved_breaks,
            "urgent_breaks": self.urgent_breaks,
            "suspect_reports": self.suspect_reports,
            "breaks_by_kind": by_kind,
            "fills_recorded": self.fills.height,
            "duplicate_reports": self.duplicate_reports,
            "strategies_changed": self.strategies.height,
            "legs_changed": self.legs.height,
            "orders_changed": self.orders.height,
            "positions": self.snapshot.height,
            "in_agreement": self.in_agreement,
        }


_NF_SCHEMA = pl.Schema(
    {
        "exec_id": pl.String(),
        "order_ref": pl.String(),
        "order_id": pl.Int64(),
        "perm_id": pl.Int64(),
        "strategy_id": pl.String(),
        **CONTRACT_SCHEMA,
        "quantity": pl.Int64(),
        "price": pl.Float64(),
        "commission": pl.Float64(),
        "time": UTC_US,
        "account": pl.String(),
        "source": pl.String(),
        "break_id": pl.String(),
        "close_reason": pl.String(),  # the reason this fill gives if it flattens its leg
        "leg_id": pl.String(),  # known target leg, else resolved from (strategy_id, con_id)
        "_ref_sid": pl.String(),  # the strategy a V6 order_ref names (null for other refs)
    }
)


_NB_SCHEMA = pl.Schema(
    {
        "break_id": pl.String(),
        "kind": pl.String(),
        "resolution": pl.String(),
        "resolved": pl.Boolean(),
        "severity": pl.String(),
        "con_id": pl.Int64(),
        "strategy_id": pl.String(),
        "leg_id": pl.String(),
        "exec_id": pl.String(),
        "order_ref": pl.String(),
        "quantity_delta": pl.Int64(),
        "book_avg_price": pl.Float64(),
        "broker_avg_price": pl.Float64(),
        "detail": pl.String(),
    }
)


_CONFORM: dict[tuple[tuple[Any, ...], ...], list[pl.Expr]] = {}


def _conform(frame: pl.DataFrame, schema: pl.Schema) -> pl.DataFrame:
    """Select/cast/fill to `schema` so frames from different passes concatenate.

    The expressions are memoised per (input schema, target schema): the passes conform
    frames of a handful of shapes, and building ~25 expressions each time adds up."""
    names, dtypes = frame.columns, frame.dtypes
    key = (tuple(schema.items()), tuple(names), tuple(dtypes))
    exprs = _CONFORM.get(key)
    if exprs is None:
        have = dict(zip(names, dtypes, strict=True))
        exprs = _CONFORM[key] = [
            (pl.col(n) if have[n] == t else pl.col(n).cast(t))
            if n in have
            else pl.lit(None, dtype=t).alias(n)
            for n, t in schema.items()
        ]
    return frame.select(exprs)


def _ids(frame: pl.DataFrame, prefix: str, cols: Sequence[str]) -> pl.Series:
    """Stable per-row ids from `cols` (blake2b; only ever over the few rows that broke)."""
    return pl.Series(
        [f"{prefix}-{short_hash(prefix, *row, n=16)}" for row in frame.select(cols).iter_rows()],
        dtype=pl.String,
    )


def _sign(e: pl.Expr) -> pl.Expr:
    return e.sign().cast(pl.Int64)


_REASON_RANK = {
    CloseReason.ASSIGNED.value: 0,
    CloseReason.EXERCISED.value: 1,
    CloseReason.CLOSED_EXTERNALLY.value: 2,
    CloseReason.EXPIRED.value: 3,
    CloseReason.CLOSED.value: 4,
    CloseReason.CANCELLED.value: 5,
}


def _describe_expr() -> pl.Expr:
    """'SPY 2026-04-17 480P' for options, 'SPY STK' otherwise (Contract.describe, vectorised)."""
    strike = pl.col("strike").cast(pl.String).str.strip_suffix(".0")
    return (
        pl.when(pl.col("sec_type") == "OPT")
        .then(pl.format("{} {} {}{}", "symbol", pl.col("expiry").cast(pl.String), strike, "right"))
        .when(pl.col("symbol").is_not_null())
        .then(pl.format("{} {}", "symbol", "sec_type"))
        .otherwise(None)
    )


def executions_since(last_as_of: datetime | None, overlap: timedelta) -> datetime | None:
    """Where to start asking the broker for executions: the last reconciliation minus an
    overlap (exec_ids de-duplicate, so overlap is free and guards against clock skew)."""
    return None if last_as_of is None else last_as_of - overlap
