"""Missing data never keeps a position open past the time exit (see `definitions.py`).

An undecided rule holds a position (NO_DATA) only while it has time; when the time exit
applies, or when every outcome the undecided rules could have is CLOSE, the position closes
and the audit row still names what was missing.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from rules_helpers import decide

from core.config import RuleSettings

# Every market input a rule reads, one missing at a time (the greeks first: brokers often
# send none for an option about to expire).
MISSING = ["net_delta", "net_gamma", "iv", "profit_pct", "iv_percentile", "vix",
           "underlying_move_1h_pct"]  # fmt: skip
SPREADS = ["iron_condor", "bull_put_spread", "vertical"]
NO_ROLL = RuleSettings(disabled=["dte_roll"])


def _assert_names_missing(d: dict[str, Any], missing: str) -> None:
    assert missing in d["missing_inputs"].split(", ")
    assert missing in d["reason"]


@pytest.mark.parametrize("strategy_type", SPREADS)
@pytest.mark.parametrize("missing", MISSING)
@pytest.mark.parametrize("dte", [0, 1])
def test_a_missing_input_on_the_last_days_closes(
    strategy_type: str, missing: str, dte: int
) -> None:
    for settings in (None, NO_ROLL):
        d = decide(settings, strategy_type=strategy_type, dte=dte, **{missing: math.nan})
        assert (d["action"], d["rule"], d["urgency"]) == ("CLOSE", "time_exit", "immediate")
        _assert_names_missing(d, missing)
        assert "closed although missing" in d["reason"]


@pytest.mark.parametrize("strategy_type", SPREADS)
@pytest.mark.parametrize("missing", MISSING)
def test_a_missing_input_with_time_left_is_no_data(strategy_type: str, missing: str) -> None:
    # DTE 2: the time exit is a day away. With rolls on, the roll (6) fires and the gamma
    # rule (7) below it cannot matter; every other missing input blocks the roll.
    d = decide(strategy_type=strategy_type, dte=2, **{missing: math.nan})
    want = ("ROLL", "dte_roll") if missing == "net_gamma" else ("NO_DATA", missing_rule(missing))
    assert (d["action"], d["rule"]) == want
    assert missing in d["missing_inputs"].split(", ")  # a roll's reason is the roll's own
    d = decide(NO_ROLL, strategy_type=strategy_type, dte=2, **{missing: math.nan})
    assert (d["action"], d["rule"], d["urgency"]) == ("NO_DATA", missing_rule(missing), None)
    _assert_names_missing(d, missing)


def missing_rule(missing: str) -> str:
    """The highest-priority rule a quiet spread cannot decide without `missing`."""
    return {
        "net_delta": "delta_risk",
        "net_gamma": "gamma_risk",
        "iv": "catastrophe",
        "profit_pct": "trailing_stop",
        "iv_percentile": "iv_percentile",
        "vix": "vix_exit",
        "underlying_move_1h_pct": "catastrophe",
    }[missing]


def test_the_time_exit_follows_its_setting() -> None:
    later = RuleSettings(time_exit_dte=2)
    d = decide(later, dte=2, net_gamma=math.nan)
    assert (d["action"], d["rule"]) == ("CLOSE", "time_exit")
    d = decide(later, dte=3, net_delta=math.nan)
    assert (d["action"], d["rule"]) == ("NO_DATA", "delta_risk")


def test_a_disabled_time_exit_does_not_close_on_missing_data() -> None:
    d = decide(RuleSettings(disabled=["time_exit"]), dte=0, net_gamma=math.nan)
    assert (d["action"], d["rule"]) == ("NO_DATA", "gamma_risk")


def test_a_single_leg_on_its_last_day_closes_without_iv() -> None:
    # the catastrophe rule is undecided; below it the single-leg exit (DTE <= 21) closes,
    # at the catastrophe's urgency, the most urgent outcome it could have had
    d = decide(strategy_type="single", dte=1, iv=None)
    assert (d["action"], d["rule"], d["urgency"]) == ("CLOSE", "single_leg_exit", "immediate")
    _assert_names_missing(d, "iv")


def test_every_outcome_closes_so_a_lower_close_decides_at_the_most_urgent_urgency() -> None:
    # IV unknown (catastrophe: CLOSE immediate or clear), stop loss fires: close either way
    d = decide(iv=None, profit_pct=-250.0)
    assert (d["action"], d["rule"], d["urgency"]) == ("CLOSE", "stop_loss", "immediate")
    assert "rule catastrophe undecided: every outcome it could have closes" in d["reason"]
    # delta unknown (delta risk: CLOSE high or clear), the IV crush fires (CLOSE normal)
    d = decide(net_delta=math.nan, iv=0.15, profit_pct=25.0)
    assert (d["action"], d["rule"], d["urgency"]) == ("CLOSE", "iv_crush", "high")
    _assert_names_missing(d, "net_delta")


@pytest.mark.parametrize(
    ("overrides", "rule"),
    [
        ({"iv": None, "profit_pct": 60.0}, "catastrophe"),  # take profit would REDUCE
        ({"iv": None, "dte": 23}, "catastrophe"),  # the roll would ROLL
        ({"profit_pct": None, "dte": 23}, "trailing_stop"),  # take profit: CLOSE or REDUCE
        ({"net_delta": math.nan, "dte": 23, "net_gamma": 0.2}, "delta_risk"),
    ],
)
def test_an_outcome_other_than_close_keeps_no_data_while_there_is_time(
    overrides: dict[str, Any], rule: str
) -> None:
    d = decide(**overrides)
    assert (d["action"], d["rule"], d["urgency"]) == ("NO_DATA", rule, None)


def test_with_every_input_present_nothing_changes_at_the_last_day() -> None:
    # REDUCE at DTE 1 with full data is take profit's own decision, not a missing-data case
    d = decide(dte=1, profit_pct=60.0)
    assert (d["action"], d["rule"], d["missing_inputs"]) == ("REDUCE", "take_profit", None)
    assert "closed although" not in d["reason"]
