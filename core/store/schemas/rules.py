"""Exit-rule tables: the audit trail of every decision, and the per-strategy rule state.

`decisions` is append-only history (one row per strategy per evaluation, with the inputs
that were seen), so any exit can be explained after the fact. `rule_state` holds what the
rules must remember across process restarts: the trailing-stop peak, the entry IV and VIX,
and whether the partial take-profit was already taken.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import pandera.polars as pa
import polars as pl
from pandera.engines.polars_engine import DateTime

from core.domain.strategies import StrategyType
from core.domain.timezones import UTC_US
from core.store.spec import TableSpec

UtcTs = DateTime(time_zone="UTC", time_unit="us")

ACTIONS = ["HOLD", "CLOSE", "REDUCE", "ROLL", "NO_DATA"]
URGENCIES = ["immediate", "high", "normal"]
# "single_leg": what the rules called a single-leg strategy before the book and the rules
# shared one StrategyType (now "single"). Decisions recorded then keep it, so tables
# written by earlier versions stay valid (and compact) as they are.
LEGACY_STRATEGY_TYPES = ["single_leg"]
STRATEGY_TYPES = [t.value for t in StrategyType] + LEGACY_STRATEGY_TYPES


class Decision(pa.DataFrameModel):
    """One strategy's outcome of one rules evaluation, with every input the rules saw."""

    evaluation_id: str = pa.Field(str_length={"min_value": 1})
    evaluated_at: UtcTs  # type: ignore[valid-type]
    strategy_id: str = pa.Field(str_length={"min_value": 1})
    strategy_type: str = pa.Field(isin=STRATEGY_TYPES)
    underlying: str = pa.Field(nullable=True)
    regime: str = pa.Field(nullable=True)
    action: str = pa.Field(isin=ACTIONS)
    urgency: str = pa.Field(isin=URGENCIES, nullable=True, description="null for HOLD/NO_DATA")
    rule: str = pa.Field(nullable=True, description="deciding rule; for NO_DATA the blocked one")
    priority: float = pa.Field(nullable=True)
    reason: str = pa.Field(str_length={"min_value": 1})
    missing_inputs: str = pa.Field(nullable=True, description="inputs enabled rules needed, null")
    suppressed_rules: str = pa.Field(nullable=True, description="disabled rules that would fire")
    disabled_rules: str = pa.Field(nullable=True, description="rules disabled in config")
    profit_pct: float = pa.Field(nullable=True)
    peak_profit_pct: float = pa.Field(nullable=True)
    profit_target_pct: float = pa.Field(gt=0)
    dte: pl.Int64 = pa.Field(nullable=True)
    net_delta: float = pa.Field(nullable=True)
    net_gamma: float = pa.Field(nullable=True)
    iv: float = pa.Field(nullable=True)
    entry_iv: float = pa.Field(nullable=True)
    iv_change_pct: float = pa.Field(nullable=True)
    iv_percentile: float = pa.Field(nullable=True)
    vix: float = pa.Field(nullable=True)
    entry_vix: float = pa.Field(nullable=True)
    vix_change: float = pa.Field(nullable=True)
    underlying_move_1h_pct: float = pa.Field(nullable=True)
    reduced: bool = pa.Field(description="partial take-profit taken (after this decision)")
    date: pl.Date = pa.Field(description="UTC date of evaluated_at; partition column")

    class Config:
        strict = True
        coerce = False


class RuleState(pa.DataFrameModel):
    """What the rules remember per strategy; survives restarts because it lives here."""

    strategy_id: str = pa.Field(str_length={"min_value": 1})
    peak_profit_pct: float = pa.Field(nullable=True, description="highest profit seen, % of credit")
    entry_iv: float = pa.Field(gt=0, nullable=True, description="IV at entry; write-once")
    entry_vix: float = pa.Field(gt=0, nullable=True, description="VIX at entry; write-once")
    reduced: bool = pa.Field(description="partial take-profit already taken")
    first_seen_at: UtcTs  # type: ignore[valid-type]
    updated_at: UtcTs  # type: ignore[valid-type]

    class Config:
        strict = True
        coerce = False


_T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


def _decision_example() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "evaluation_id": ["rules-20260302T150000.000000Z"],
            "evaluated_at": [_T0],
            "strategy_id": ["IC-SPY-20260417-1"],
            "strategy_type": ["iron_condor"],
            "underlying": ["SPY"],
            "regime": ["normal"],
            "action": ["CLOSE"],
            "urgency": ["normal"],
            "rule": ["take_profit"],
            "priority": [2.0],
            "reason": ["profit 81.0% >= normal target 80.0%"],
            "missing_inputs": [None],
            "suppressed_rules": [None],
            "disabled_rules": [None],
            "profit_pct": [81.0],
            "peak_profit_pct": [81.0],
            "profit_target_pct": [80.0],
            "dte": [30],
            "net_delta": [-0.05],
            "net_gamma": [0.01],
            "iv": [0.18],
            "entry_iv": [0.20],
            "iv_change_pct": [-10.0],
            "iv_percentile": [45.0],
            "vix": [17.0],
            "entry_vix": [16.0],
            "vix_change": [1.0],
            "underlying_move_1h_pct": [0.2],
            "reduced": [True],
            "date": [date(2026, 3, 2)],
        },
        schema_overrides={
            "missing_inputs": pl.String,
            "suppressed_rules": pl.String,
            "disabled_rules": pl.String,
        },
    ).with_columns(pl.col("evaluated_at").cast(UTC_US))


def _state_example() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "strategy_id": ["IC-SPY-20260417-1"],
            "peak_profit_pct": [81.0],
            "entry_iv": [0.20],
            "entry_vix": [16.0],
            "reduced": [True],
            "first_seen_at": [_T0],
            "updated_at": [_T0],
        }
    ).with_columns(pl.col("first_seen_at", "updated_at").cast(UTC_US))


TABLES = [
    TableSpec(
        name="decisions",
        model=Decision,
        description="every exit-rule evaluation per strategy: inputs, deciding rule, action",
        keys=("strategy_id", "evaluated_at"),
        partition_by=("date",),
        derived={"date": pl.col("evaluated_at").dt.date()},
        example=_decision_example,
    ),
    TableSpec(
        name="rule_state",
        model=RuleState,
        description="durable per-strategy rule memory: trailing peak, entry IV/VIX, reduced",
        keys=("strategy_id",),
        example=_state_example,
    ),
]
