"""Risk tables: the circuit breaker's transition log, per-cycle health, and limit rejections.

The breaker's state lives only here (never in Prefect deployment state, which a `serve`
restart undoes): `risk_state` is an append-only log whose last row is the current state,
so every transition is kept with its time, reason, numbers and actor.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pandera.polars as pa
import polars as pl
from pandera.engines.polars_engine import DateTime

from core.domain.timezones import UTC_US
from core.store.spec import TableSpec

UtcTs = DateTime(time_zone="UTC", time_unit="us")

BREAKER_STATES = ("CLOSED", "OPEN", "HALF_OPEN", "HALTED")
GATE_MODES = ("NORMAL", "OPEN_BLOCKED", "EXITS_ONLY", "HALF_OPEN_PROBE")


class RiskTransition(pa.DataFrameModel):
    """One breaker transition; `seq` orders them and makes concurrent writers collide."""

    seq: pl.Int64 = pa.Field(ge=0, description="0, 1, 2, ... ; the highest is the current state")
    ts: UtcTs = pa.Field(description="when the transition happened, UTC")  # type: ignore[valid-type]
    from_state: str = pa.Field(isin=list(BREAKER_STATES))
    to_state: str = pa.Field(isin=list(BREAKER_STATES))
    reason: str = pa.Field(str_length={"min_value": 1}, description="human-readable why")
    trigger: str = pa.Field(
        str_length={"min_value": 1},
        description="machine-readable cause: condition names, manual_trip, manual_reset, ...",
    )
    metrics: str = pa.Field(description="JSON object with the numbers behind the decision")
    actor: str = pa.Field(str_length={"min_value": 1}, description="'system' or the user's name")
    run_id: str = pa.Field(nullable=True, description="flow run that caused it, if any")

    class Config:
        strict = True
        coerce = False

    @pa.check("metrics", error="metrics must be a JSON object string")
    @classmethod
    def metrics_is_json_object(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(
            pl.col(data.key).str.starts_with("{") & pl.col(data.key).str.ends_with("}")
        )


class CycleHealth(pa.DataFrameModel):
    """What one trading cycle observed; the breaker's trip conditions are computed from these."""

    run_id: str = pa.Field(str_length={"min_value": 1})
    ts: UtcTs  # type: ignore[valid-type]
    mode: str = pa.Field(isin=list(GATE_MODES), description="gate mode the cycle ran under")
    ok: bool
    failure: str = pa.Field(nullable=True, description="why the cycle failed (null when ok)")
    daily_pnl: float = pa.Field(nullable=True, description="today's P&L, USD; null = unknown")
    net_liq: float = pa.Field(gt=0, nullable=True, description="net liquidation, USD")
    rejections: pl.Int64 = pa.Field(ge=0, description="orders rejected by the broker this cycle")
    disconnected_s: float = pa.Field(ge=0, description="seconds the broker has been disconnected")
    unresolved_breaks: pl.Int64 = pa.Field(ge=0, description="open reconciliation breaks")
    data_quality_failures: pl.Int64 = pa.Field(ge=0)
    data_points: pl.Int64 = pa.Field(ge=0, description="data items checked this cycle")

    class Config:
        strict = True
        coerce = False

    @pa.dataframe_check(error="data_quality_failures exceeds data_points")
    @classmethod
    def failures_within_points(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("data_quality_failures") <= pl.col("data_points"))


class LimitRejection(pa.DataFrameModel):
    """A portfolio limit or hard cap that refused an entry candidate, with its numbers."""

    ts: UtcTs  # type: ignore[valid-type]
    run_id: str = pa.Field(str_length={"min_value": 1})
    strategy_id: str = pa.Field(str_length={"min_value": 1}, description="the candidate")
    underlying: str = pa.Field(str_length={"min_value": 1})
    limit: str = pa.Field(str_length={"min_value": 1})
    scope: str = pa.Field(
        str_length={"min_value": 1}, description="portfolio | symbol | order | day"
    )
    current: float = pa.Field(nullable=True, description="value before the candidate")
    with_candidate: float = pa.Field(nullable=True, description="value with the candidate")
    cap: float
    unit: str
    hard: bool = pa.Field(description="a hard cap no configuration can change")
    detail: str

    class Config:
        strict = True
        coerce = False


_T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


def _transition_example() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "seq": [0],
            "ts": [_T0],
            "from_state": ["CLOSED"],
            "to_state": ["OPEN"],
            "reason": ["consecutive_failures: 3 failed cycles in a row (limit 3)"],
            "trigger": ["consecutive_failures"],
            "metrics": [json.dumps({"consecutive_failures": 3})],
            "actor": ["system"],
            "run_id": ["run-example"],
        },
        schema_overrides={"ts": UTC_US},
    )


def _health_example() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "run_id": ["run-example"],
            "ts": [_T0],
            "mode": ["NORMAL"],
            "ok": [True],
            "failure": [None],
            "daily_pnl": [-120.0],
            "net_liq": [100_000.0],
            "rejections": [0],
            "disconnected_s": [0.0],
            "unresolved_breaks": [0],
            "data_quality_failures": [1],
            "data_points": [40],
        },
        schema_overrides={"ts": UTC_US, "failure": pl.String},
    )


def _rejection_example() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "ts": [_T0],
            "run_id": ["run-example"],
            "strategy_id": ["SPY-IC-20260417-1"],
            "underlying": ["SPY"],
            "limit": ["concentration"],
            "scope": ["SPY"],
            "current": [35.0],
            "with_candidate": [41.0],
            "cap": [40.0],
            "unit": ["% of net liquidation"],
            "hard": [False],
            "detail": ["max loss on SPY 41,000.00 of net liquidation 100,000.00"],
        },
        schema_overrides={"ts": UTC_US},
    )


TABLES = [
    TableSpec(
        name="risk_state",
        model=RiskTransition,
        description="circuit-breaker transitions (append-only); the last row is the current state",
        keys=("seq",),
        example=_transition_example,
    ),
    TableSpec(
        name="cycle_health",
        model=CycleHealth,
        description="one row per trading cycle: outcome and the numbers the breaker trips on",
        keys=("run_id",),
        example=_health_example,
    ),
    TableSpec(
        name="limit_rejections",
        model=LimitRejection,
        description="entry candidates refused by a portfolio limit or hard cap, with the numbers",
        keys=("run_id", "strategy_id", "limit", "scope"),
        example=_rejection_example,
    ),
]
