"""The words the rules engine speaks: actions and urgencies, and which strategy types and
regimes (`core.domain`'s) it acts on.

They are StrEnums so a frame column holds plain strings (Delta cannot store polars Enums)
while code still gets a closed vocabulary.
"""

from __future__ import annotations

from enum import StrEnum

from core.domain.regimes import Regime
from core.domain.strategies import StrategyType


class ExitAction(StrEnum):
    HOLD = "HOLD"
    CLOSE = "CLOSE"
    REDUCE = "REDUCE"  # close half the position (partial take-profit)
    ROLL = "ROLL"  # close and reopen further out (~roll_target_dte)
    NO_DATA = "NO_DATA"  # an input a rule needed was missing: not a HOLD, a flag


class Urgency(StrEnum):
    IMMEDIATE = "immediate"  # cross the spread now
    HIGH = "high"
    NORMAL = "normal"


VERTICALS = frozenset(
    {
        StrategyType.BULL_PUT_SPREAD.value,
        StrategyType.BEAR_CALL_SPREAD.value,
        StrategyType.VERTICAL.value,
    }
)
MULTI_LEG = frozenset({StrategyType.IRON_CONDOR.value, *VERTICALS})
MANAGED = frozenset({*MULTI_LEG, StrategyType.SINGLE.value})  # every type rules may act on
# the regimes the detector names (UNKNOWN aside): the ones a take-profit target can be set for
KNOWN_REGIMES = frozenset(
    r.value
    for r in (
        Regime.CRASH,
        Regime.HIGH_VOL,
        Regime.NORMAL,
        Regime.LOW_VOL,
        Regime.TRENDING,
        Regime.RANGE_BOUND,
    )
)
