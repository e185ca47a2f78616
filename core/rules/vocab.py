"""The words the rules engine speaks: actions, urgencies, strategy types, regimes.

They are StrEnums so a frame column holds plain strings (Delta cannot store polars Enums)
while code still gets a closed vocabulary.
"""

from __future__ import annotations

from enum import StrEnum


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


class StrategyType(StrEnum):
    IRON_CONDOR = "iron_condor"
    BULL_PUT_SPREAD = "bull_put_spread"
    BEAR_CALL_SPREAD = "bear_call_spread"
    SINGLE_LEG = "single_leg"
    EXTERNAL = "external"  # found at the broker, not opened by V6: never actioned by rules


class Regime(StrEnum):
    CRASH = "crash"
    HIGH_VOL = "high_vol"
    NORMAL = "normal"
    LOW_VOL = "low_vol"
    TRENDING = "trending"
    RANGE_BOUND = "range_bound"
    UNKNOWN = "unknown"  # not enough fresh data: the take-profit target falls back


VERTICALS = frozenset({StrategyType.BULL_PUT_SPREAD.value, StrategyType.BEAR_CALL_SPREAD.value})
MULTI_LEG = frozenset({StrategyType.IRON_CONDOR.value, *VERTICALS})
MANAGED = frozenset({*MULTI_LEG, StrategyType.SINGLE_LEG.value})  # every type rules may act on
KNOWN_REGIMES = frozenset(r.value for r in Regime if r is not Regime.UNKNOWN)
