"""Market regimes, one vocabulary for the detector (which picks the exit rules' take-profit
target and the entries' fit) and the simulator (which scripts a session's market).

Each names the subset it uses: the detector never says `calm`, the simulator plays only
calm, trending, high_vol and crash days.
"""

from __future__ import annotations

from enum import StrEnum


class Regime(StrEnum):
    CRASH = "crash"
    HIGH_VOL = "high_vol"
    NORMAL = "normal"
    LOW_VOL = "low_vol"
    TRENDING = "trending"
    RANGE_BOUND = "range_bound"
    CALM = "calm"  # a quiet simulated session
    UNKNOWN = "unknown"  # not enough fresh data: the take-profit target falls back
