"""The Delta book: strategies, legs, order intents, orders, fills, position snapshots and
reconciliation breaks.

Breaks a person acknowledged (`v6 breaks ack`) are recorded in `break_acks`.

Positions are never stored as truth: a leg's quantity is the sum of its fills, and fills are
keyed on `exec_id` and written insert-only, so a fill is recorded exactly once however often
it is reported. Synthetic fills (reconciliation, expiry, assignment) carry the `break_id`
that explains them.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import pandera.polars as pa
import polars as pl
from pandera.engines.polars_engine import DateTime

from core.domain import OrderStatus
from core.domain.breaks import BreakKind, Resolution, Severity
from core.domain.strategies import (
    CloseReason,
    FillSource,
    IntentPurpose,
    LegStatus,
    Origin,
    StrategyStatus,
    StrategyType,
)
from core.domain.timezones import UTC_US
from core.store.spec import TableSpec

UtcTs = DateTime(time_zone="UTC", time_unit="us")
_NONEMPTY = {"min_value": 1}


def _values(enum: type) -> list[str]:
    return [e.value for e in enum]  # type: ignore[attr-defined]


class _Strict(pa.DataFrameModel):
    class Config:
        strict = True
        coerce = False


class Strategy(_Strict):
    strategy_id: str = pa.Field(str_length=_NONEMPTY)
    account: str
    underlying: str = pa.Field(str_length=_NONEMPTY)
    strategy_type: str = pa.Field(isin=_values(StrategyType))
    origin: str = pa.Field(isin=_values(Origin))
    managed: bool = pa.Field(description="rules may trade it; False for EXTERNAL until tagged")
    status: str = pa.Field(isin=_values(StrategyStatus))
    quantity: pl.Int64 = pa.Field(ge=0, description="strategy units (e.g. condors); 0 if external")
    created_at: UtcTs  # type: ignore[valid-type]
    opened_at: UtcTs = pa.Field(nullable=True)  # type: ignore[valid-type]
    closed_at: UtcTs = pa.Field(nullable=True)  # type: ignore[valid-type]
    close_reason: str = pa.Field(nullable=True, isin=_values(CloseReason))
    tagged_by: str = pa.Field(nullable=True, description="person who tagged an EXTERNAL strategy")
    note: str
    updated_at: UtcTs  # type: ignore[valid-type]


class _ContractCols(_Strict):
    con_id: pl.Int64 = pa.Field(ge=0)
    symbol: str = pa.Field(str_length=_NONEMPTY)
    sec_type: str = pa.Field(isin=["STK", "OPT", "FUT", "IND", "BAG"])
    expiry: pl.Date = pa.Field(nullable=True)
    strike: float = pa.Field(nullable=True, gt=0)
    right: str = pa.Field(nullable=True, isin=["C", "P"])
    multiplier: pl.Int64 = pa.Field(gt=0)


class Leg(_ContractCols):
    leg_id: str = pa.Field(str_length=_NONEMPTY)
    strategy_id: str = pa.Field(str_length=_NONEMPTY)
    leg_index: pl.Int64 = pa.Field(ge=0)
    ratio: pl.Int64 = pa.Field(description="signed contracts per strategy unit")
    exchange: str
    currency: str
    local_symbol: str
    trading_class: str
    status: str = pa.Field(isin=_values(LegStatus))
    opened_at: UtcTs = pa.Field(nullable=True)  # type: ignore[valid-type]
    closed_at: UtcTs = pa.Field(nullable=True)  # type: ignore[valid-type]
    close_reason: str = pa.Field(nullable=True, isin=_values(CloseReason))
    updated_at: UtcTs  # type: ignore[valid-type]

    @pa.dataframe_check(error="ratio must be non-zero")
    @classmethod
    def ratio_nonzero(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("ratio") != 0)


class OrderIntent(_Strict):
    """Written BEFORE the order is submitted: what V6 meant to do, keyed by its orderRef."""

    order_ref: str = pa.Field(str_length=_NONEMPTY)
    strategy_id: str = pa.Field(str_length=_NONEMPTY)
    intent_seq: pl.Int64 = pa.Field(ge=0)
    leg_index: pl.Int64 = pa.Field(nullable=True, ge=0, description="null for a combo order")
    purpose: str = pa.Field(isin=_values(IntentPurpose))
    action: str = pa.Field(isin=["BUY", "SELL"])
    quantity: pl.Int64 = pa.Field(gt=0)
    order_type: str = pa.Field(isin=["LMT", "MKT"])
    limit_price: float = pa.Field(nullable=True)
    con_id: pl.Int64 = pa.Field(ge=0, description="the leg's conId; 0 for a combo")
    created_at: UtcTs  # type: ignore[valid-type]


class Order(_Strict):
    order_ref: str = pa.Field(str_length=_NONEMPTY)
    strategy_id: str = pa.Field(str_length=_NONEMPTY)
    order_id: pl.Int64
    perm_id: pl.Int64
    con_id: pl.Int64 = pa.Field(ge=0)
    action: str = pa.Field(isin=["BUY", "SELL"])
    quantity: pl.Int64 = pa.Field(gt=0)
    filled: pl.Int64 = pa.Field(ge=0)
    status: str = pa.Field(isin=_values(OrderStatus))
    avg_fill_price: float = pa.Field(nullable=True)
    limit_price: float = pa.Field(nullable=True)
    message: str
    updated_at: UtcTs  # type: ignore[valid-type]


class Fill(_Strict):
    exec_id: str = pa.Field(str_length=_NONEMPTY)
    order_ref: str
    order_id: pl.Int64
    perm_id: pl.Int64
    strategy_id: str = pa.Field(str_length=_NONEMPTY)
    leg_id: str = pa.Field(str_length=_NONEMPTY)
    con_id: pl.Int64 = pa.Field(gt=0)
    symbol: str = pa.Field(str_length=_NONEMPTY)
    side: str = pa.Field(isin=["BUY", "SELL"])
    quantity: pl.Int64 = pa.Field(description="signed: + bought, - sold")
    price: float = pa.Field(ge=0, description="per unit of the underlying (IB's price)")
    commission: float = pa.Field(nullable=True)
    time: UtcTs  # type: ignore[valid-type]
    account: str
    source: str = pa.Field(isin=_values(FillSource))
    break_id: str = pa.Field(nullable=True, description="the break a synthetic fill resolves")
    recorded_at: UtcTs  # type: ignore[valid-type]

    @pa.dataframe_check(error="quantity must be non-zero and its sign must match side")
    @classmethod
    def side_matches_sign(cls, data: pa.PolarsData) -> pl.LazyFrame:
        q, s = pl.col("quantity"), pl.col("side")
        return data.lazyframe.select(((s == "BUY") & (q > 0)) | ((s == "SELL") & (q < 0)))


class PositionSnapshot(_ContractCols):
    run_id: str = pa.Field(str_length=_NONEMPTY)
    as_of: UtcTs  # type: ignore[valid-type]
    broker_quantity: pl.Int64
    book_quantity: pl.Int64 = pa.Field(description="after this run's resolutions")
    book_quantity_before: pl.Int64 = pa.Field(description="before this run's resolutions")
    broker_avg_price: float = pa.Field(nullable=True, description="avgCost / multiplier")
    book_avg_price: float = pa.Field(nullable=True)
    agrees: bool
    date: pl.Date = pa.Field(description="UTC date of as_of; partition column")


class ReconciliationBreak(_Strict):
    break_id: str = pa.Field(str_length=_NONEMPTY)
    run_id: str = pa.Field(str_length=_NONEMPTY)
    detected_at: UtcTs  # type: ignore[valid-type]
    kind: str = pa.Field(isin=_values(BreakKind))
    resolution: str = pa.Field(isin=_values(Resolution))
    resolved: bool = pa.Field(description="False = unexplained: a circuit-breaker input")
    severity: str = pa.Field(isin=_values(Severity))
    con_id: pl.Int64 = pa.Field(nullable=True)
    symbol: str = pa.Field(nullable=True)
    contract: str = pa.Field(nullable=True, description="human label, e.g. 'SPY 2026-04-17 500P'")
    strategy_id: str = pa.Field(nullable=True)
    leg_id: str = pa.Field(nullable=True)
    exec_id: str = pa.Field(nullable=True, description="the broker's, or the synthetic fill's")
    order_ref: str = pa.Field(nullable=True)
    book_quantity: pl.Int64 = pa.Field(nullable=True)
    broker_quantity: pl.Int64 = pa.Field(nullable=True)
    quantity_delta: pl.Int64 = pa.Field(nullable=True, description="what the resolution booked")
    book_avg_price: float = pa.Field(nullable=True)
    broker_avg_price: float = pa.Field(nullable=True)
    detail: str


class BreakAck(_Strict):
    """A person's acknowledgement of a break awaiting one: the next reconciliation that
    derives the same break id books it (see core.reconcile.screen)."""

    break_id: str = pa.Field(str_length=_NONEMPTY)
    acknowledged_at: UtcTs  # type: ignore[valid-type]
    acknowledged_by: str = pa.Field(str_length=_NONEMPTY, description="the OS user who ran it")
    reason: str = pa.Field(str_length=_NONEMPTY)
    kind: str = pa.Field(isin=_values(BreakKind))
    con_id: pl.Int64 = pa.Field(nullable=True)
    contract: str = pa.Field(nullable=True)
    broker_quantity: pl.Int64 = pa.Field(nullable=True)


# -- example rows (documentation and a live check of each schema) ------------------------

_T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
_SID = "ic-SPY-20260302-0123456789"


def _ts(frame: pl.DataFrame, *cols: str) -> pl.DataFrame:
    return frame.with_columns(pl.col(list(cols)).cast(UTC_US))


def _strategy_example() -> pl.DataFrame:
    return _ts(
        pl.DataFrame(
            {
                "strategy_id": [_SID],
                "account": ["DU1234567"],
                "underlying": ["SPY"],
                "strategy_type": ["iron_condor"],
                "origin": ["v6"],
                "managed": [True],
                "status": ["OPEN"],
                "quantity": [1],
                "created_at": [_T0],
                "opened_at": [_T0],
                "closed_at": [None],
                "close_reason": [None],
                "tagged_by": [None],
                "note": [""],
                "updated_at": [_T0],
            },
            schema_overrides={
                "closed_at": UTC_US,
                "close_reason": pl.String,
                "tagged_by": pl.String,
            },
        ),
        "created_at",
        "opened_at",
        "closed_at",
        "updated_at",
    )


def _leg_example() -> pl.DataFrame:
    return _ts(
        pl.DataFrame(
            {
                "con_id": [700001],
                "symbol": ["SPY"],
                "sec_type": ["OPT"],
                "expiry": [date(2026, 4, 17)],
                "strike": [480.0],
                "right": ["P"],
                "multiplier": [100],
                "leg_id": [f"{_SID}:L1"],
                "strategy_id": [_SID],
                "leg_index": [1],
                "ratio": [-1],
                "exchange": ["SMART"],
                "currency": ["USD"],
                "local_symbol": ["SPY   260417P00480000"],
                "trading_class": ["SPY"],
                "status": ["OPEN"],
                "opened_at": [_T0],
                "closed_at": [None],
                "close_reason": [None],
                "updated_at": [_T0],
            },
            schema_overrides={"closed_at": UTC_US, "close_reason": pl.String},
        ),
        "opened_at",
        "closed_at",
        "updated_at",
    )


def _intent_example() -> pl.DataFrame:
    return _ts(
        pl.DataFrame(
            {
                "order_ref": [f"v6:{_SID}:0:combo"],
                "strategy_id": [_SID],
                "intent_seq": [0],
                "leg_index": [None],
                "purpose": ["open"],
                "action": ["SELL"],
                "quantity": [1],
                "order_type": ["LMT"],
                "limit_price": [1.25],
                "con_id": [0],
                "created_at": [_T0],
            },
            schema_overrides={"leg_index": pl.Int64},
        ),
        "created_at",
    )


def _order_example() -> pl.DataFrame:
    return _ts(
        pl.DataFrame(
            {
                "order_ref": [f"v6:{_SID}:0:combo"],
                "strategy_id": [_SID],
                "order_id": [12],
                "perm_id": [900012],
                "con_id": [0],
                "action": ["SELL"],
                "quantity": [1],
                "filled": [1],
                "status": ["FILLED"],
                "avg_fill_price": [1.25],
                "limit_price": [1.25],
                "message": [""],
                "updated_at": [_T0],
            }
        ),
        "updated_at",
    )


def _fill_example() -> pl.DataFrame:
    return _ts(
        pl.DataFrame(
            {
                "exec_id": ["0000e0d5.65f1a2b3.01.01"],
                "order_ref": [f"v6:{_SID}:0:combo"],
                "order_id": [12],
                "perm_id": [900012],
                "strategy_id": [_SID],
                "leg_id": [f"{_SID}:L1"],
                "con_id": [700001],
                "symbol": ["SPY"],
                "side": ["SELL"],
                "quantity": [-1],
                "price": [2.10],
                "commission": [0.65],
                "time": [_T0],
                "account": ["DU1234567"],
                "source": ["broker"],
                "break_id": [None],
                "recorded_at": [_T0],
            },
            schema_overrides={"break_id": pl.String},
        ),
        "time",
        "recorded_at",
    )


def _snapshot_example() -> pl.DataFrame:
    return _ts(
        pl.DataFrame(
            {
                "con_id": [700001],
                "symbol": ["SPY"],
                "sec_type": ["OPT"],
                "expiry": [date(2026, 4, 17)],
                "strike": [480.0],
                "right": ["P"],
                "multiplier": [100],
                "run_id": ["recon-20260302T150000"],
                "as_of": [_T0],
                "broker_quantity": [-1],
                "book_quantity": [-1],
                "book_quantity_before": [-1],
                "broker_avg_price": [2.0935],
                "book_avg_price": [2.10],
                "agrees": [True],
                "date": [date(2026, 3, 2)],
            }
        ),
        "as_of",
    )


def _ack_example() -> pl.DataFrame:
    return _ts(
        pl.DataFrame(
            {
                "break_id": ["ak-3f9c2a7b1e0d4c58"],
                "acknowledged_at": [_T0],
                "acknowledged_by": ["ana"],
                "reason": ["closed in TWS yesterday, checked the statement"],
                "kind": ["missing_position"],
                "con_id": [700001],
                "contract": ["SPY 2026-04-17 480P"],
                "broker_quantity": [0],
            }
        ),
        "acknowledged_at",
    )


def _break_example() -> pl.DataFrame:
    return _ts(
        pl.DataFrame(
            {
                "break_id": ["mf-0000e0d5.65f1a2b3.01.01"],
                "run_id": ["recon-20260302T150000"],
                "detected_at": [_T0],
                "kind": ["missing_fill"],
                "resolution": ["recorded_fill"],
                "resolved": [True],
                "severity": ["warning"],
                "con_id": [700001],
                "symbol": ["SPY"],
                "contract": ["SPY 2026-04-17 480P"],
                "strategy_id": [_SID],
                "leg_id": [f"{_SID}:L1"],
                "exec_id": ["0000e0d5.65f1a2b3.01.01"],
                "order_ref": [f"v6:{_SID}:0:combo"],
                "book_quantity": [0],
                "broker_quantity": [-1],
                "quantity_delta": [-1],
                "book_avg_price": [None],
                "broker_avg_price": [None],
                "detail": ["fill made while disconnected"],
            },
            schema_overrides={"book_avg_price": pl.Float64, "broker_avg_price": pl.Float64},
        ),
        "detected_at",
    )


TABLES = [
    TableSpec(
        name="strategies",
        model=Strategy,
        description="multi-leg strategies (V6's own and adopted EXTERNAL ones)",
        keys=("strategy_id",),
        example=_strategy_example,
    ),
    TableSpec(
        name="legs",
        model=Leg,
        description="legs of strategies, one broker contract each; quantities derive from fills",
        keys=("leg_id",),
        example=_leg_example,
    ),
    TableSpec(
        name="order_intents",
        model=OrderIntent,
        description="what V6 meant to send, written before submit, keyed by the orderRef",
        keys=("order_ref",),
        example=_intent_example,
    ),
    TableSpec(
        name="orders",
        model=Order,
        description="V6's orders as last seen at the broker",
        keys=("order_ref",),
        example=_order_example,
    ),
    TableSpec(
        name="fills",
        model=Fill,
        description="executions (and synthetic reconciliation fills), exactly once per exec_id",
        keys=("exec_id",),
        example=_fill_example,
    ),
    TableSpec(
        name="positions_snapshots",
        model=PositionSnapshot,
        description="broker vs book position per contract, one set per reconciliation run",
        keys=("run_id", "con_id"),
        partition_by=("date",),
        derived={"date": pl.col("as_of").dt.date()},
        example=_snapshot_example,
    ),
    TableSpec(
        name="reconciliation_breaks",
        model=ReconciliationBreak,
        description="every disagreement between book and broker, with how it was resolved",
        keys=("break_id",),
        example=_break_example,
    ),
    TableSpec(
        name="break_acks",
        model=BreakAck,
        description="who acknowledged which awaiting break, when and why (`v6 breaks ack`)",
        keys=("break_id",),
        example=_ack_example,
    ),
]
