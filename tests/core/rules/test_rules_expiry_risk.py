"""Pin risk and early assignment at, just below and just above each threshold, and with
their inputs missing (default settings: pin within 1% from 15:00 New York; a short call
whose extrinsic is below the dividend within 5 days of the ex-date; a short put with
extrinsic below $0.05 at DTE <= 5)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, time
from typing import Any

import pytest
from rules_helpers import PIN_TIME, decide

from core.config import RuleSettings

BEFORE = datetime(2026, 3, 2, 19, 59, 59, tzinfo=UTC)  # 14:59:59 New York
LATE = datetime(2026, 3, 2, 20, 45, tzinfo=UTC)  # 15:45 New York


@pytest.mark.parametrize(
    ("distance", "now", "fires"),
    [
        (1.0, PIN_TIME, True),  # at the distance, at the time: both thresholds inclusive
        (0.99, PIN_TIME, True),
        (1.01, PIN_TIME, False),
        (0.0, PIN_TIME, True),  # exactly at the strike
        (0.5, BEFORE, False),  # one second early
        (0.5, LATE, True),
        (math.inf, LATE, False),  # nothing expires today
    ],
)
def test_pin_risk_thresholds(distance: float, now: datetime, fires: bool) -> None:
    d = decide(now=now, pin_distance_pct=distance, dte=0, net_gamma=0.0)
    if fires:
        assert (d["rule"], d["action"], d["urgency"]) == ("pin_risk", "CLOSE", "immediate")
        assert "15:00 New York" in d["reason"]
    else:
        assert d["rule"] != "pin_risk"
        assert d["action"] == "CLOSE" and d["rule"] == "time_exit"  # DTE 0 still closes


def test_pin_risk_time_and_distance_follow_the_settings() -> None:
    s = RuleSettings(pin_risk_from=time(14, 0), pin_risk_distance_pct=2.5, time_exit_dte=0)
    at_two = datetime(2026, 3, 2, 19, 0, tzinfo=UTC)  # 14:00 New York
    assert decide(s, now=at_two, pin_distance_pct=2.5, dte=0)["rule"] == "pin_risk"
    assert decide(s, now=at_two, pin_distance_pct=2.51, dte=0)["rule"] == "time_exit"
    # summer time: 14:00 New York is 18:00 UTC
    june = datetime(2026, 6, 19, 18, 0, tzinfo=UTC)
    assert decide(s, now=june, pin_distance_pct=1.0, dte=0)["rule"] == "pin_risk"
    one_pm = june.replace(hour=17)  # 13:00 New York: the time exit closes, not pin risk
    assert decide(s, now=one_pm, pin_distance_pct=1.0, dte=0)["rule"] == "time_exit"


def test_pin_risk_closes_with_the_distance_unknown_on_expiry_day() -> None:
    """A short strike whose distance is unknown (no spot) on its expiry day: every outcome
    of the pin rule is CLOSE, and the time exit closes it."""
    d = decide(now=LATE, pin_distance_pct=math.nan, dte=0)
    assert (d["action"], d["rule"]) == ("CLOSE", "time_exit")
    assert "pin_distance_pct" in d["missing_inputs"]
    # With time left, unknown is NO_DATA, never HOLD.
    d = decide(now=LATE, pin_distance_pct=None, dte=30)
    assert (d["action"], d["rule"]) == ("NO_DATA", "pin_risk")


CALL: list[tuple[dict[str, Any], bool]] = [
    # extrinsic less the dividend < 0 ("below the dividend"): strict
    ({"dividend_cushion": 0.0, "dividend_days": 3.0}, False),
    ({"dividend_cushion": -0.0001, "dividend_days": 3.0}, True),
    ({"dividend_cushion": 0.0001, "dividend_days": 3.0}, False),
    # within the 5-day window of the ex-date: inclusive
    ({"dividend_cushion": -0.5, "dividend_days": 5.0}, True),
    ({"dividend_cushion": -0.5, "dividend_days": 6.0}, False),
    ({"dividend_cushion": -0.5, "dividend_days": 1.0}, True),
    ({"dividend_cushion": math.inf, "dividend_days": math.inf}, False),  # nothing exposed
]
PUT: list[tuple[dict[str, Any], bool]] = [
    # extrinsic < $0.05 at DTE <= 5
    ({"put_extrinsic": 0.05, "dte": 5}, False),
    ({"put_extrinsic": 0.0499, "dte": 5}, True),
    ({"put_extrinsic": 0.0501, "dte": 5}, False),
    ({"put_extrinsic": 0.0, "dte": 6}, False),
    ({"put_extrinsic": 0.0, "dte": 4}, True),
    ({"put_extrinsic": -0.02, "dte": 40}, False),  # below parity, but time to go
]


@pytest.mark.parametrize(("overrides", "fires"), CALL + PUT)
def test_early_assignment_thresholds(overrides: dict[str, Any], fires: bool) -> None:
    # DTE 5 and 4 sit in the roll window: the roll would decide if assignment did not
    d = decide(**{"net_gamma": 0.0, **overrides})
    if fires:
        assert (d["rule"], d["action"], d["urgency"]) == ("early_assignment", "CLOSE", "high")
        word = "call" if "dividend_cushion" in overrides else "put"
        assert f"short ITM {word}" in d["reason"]
    else:
        assert d["rule"] != "early_assignment"
        assert d["action"] != "NO_DATA"


def test_early_assignment_settings_move_the_thresholds() -> None:
    s = RuleSettings(dividend_window_days=0, put_extrinsic_floor=0.25, put_assignment_dte=10)
    assert decide(s, dividend_cushion=-1.0, dividend_days=1.0)["rule"] != "early_assignment"
    assert decide(s, put_extrinsic=0.2499, dte=10)["rule"] == "early_assignment"
    assert decide(s, put_extrinsic=0.25, dte=10)["rule"] != "early_assignment"


@pytest.mark.parametrize("missing", ["dividend_cushion", "dividend_days", "put_extrinsic"])
@pytest.mark.parametrize("dte", [0, 1, 2])
def test_unknown_exposure_never_keeps_a_position_past_the_time_exit(missing: str, dte: int) -> None:
    d = decide(**{missing: None, "dte": dte})
    if dte <= RuleSettings().time_exit_dte:
        assert (d["action"], d["rule"]) == ("CLOSE", "time_exit")
    else:
        assert (d["action"], d["rule"]) == ("NO_DATA", "early_assignment")
    assert missing in d["missing_inputs"]


def test_a_proven_exposure_decides_even_with_the_other_unknown() -> None:
    """The put is proven at risk; the call side's unknown dividend cannot clear it."""
    d = decide(put_extrinsic=0.0, dte=3, dividend_cushion=None, dividend_days=None)
    assert (d["action"], d["rule"]) == ("CLOSE", "early_assignment")
