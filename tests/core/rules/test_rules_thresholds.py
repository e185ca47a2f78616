"""Every rule at, just below and just above each of its thresholds (default settings).

Each case starts from a quiet iron condor (nothing fires) and moves one input. "Fires"
means the rule decided the strategy; "not" means it did not (a lower rule may still act,
and the outcome is never NO_DATA since every input is present).
"""

from __future__ import annotations

from typing import Any

import pytest
from rules_helpers import decide, state

from core.config import RuleSettings

URGENCY = {
    "catastrophe": "immediate",
    "single_leg_exit": "normal",
    "trailing_stop": "normal",
    "vix_exit": "high",
    "take_profit": "normal",
    "stop_loss": "immediate",
    "delta_risk": "high",
    "iv_crush": "normal",
    "iv_percentile": "normal",
    "gamma_risk": "high",
    "time_exit": "immediate",
}
SINGLE = {"strategy_type": "single", "regime": "low_vol"}  # low_vol: target 90%
NO_ROLL = RuleSettings(disabled=["dte_roll"])

# (rule, overrides, fires, prior state kwargs or None, settings or None)
CASES: list[tuple[str, dict[str, Any], bool, dict[str, Any] | None, RuleSettings | None]] = [
    # 1 catastrophe: underlying falls > 3% in an hour
    ("catastrophe", {"underlying_move_1h_pct": -3.0}, False, None, None),
    ("catastrophe", {"underlying_move_1h_pct": -2.99}, False, None, None),
    ("catastrophe", {"underlying_move_1h_pct": -3.01}, True, None, None),
    # 1 catastrophe: IV jumps > 50% since entry (0.375 / 0.25 = +50% exactly)
    ("catastrophe", {"entry_iv": 0.25, "iv": 0.375}, False, None, None),
    ("catastrophe", {"entry_iv": 0.25, "iv": 0.3749}, False, None, None),
    ("catastrophe", {"entry_iv": 0.25, "iv": 0.3751}, True, None, None),
    # 1.3 single leg: profit >= 80
    ("single_leg_exit", {**SINGLE, "profit_pct": 80.0}, True, None, None),
    ("single_leg_exit", {**SINGLE, "profit_pct": 79.99}, False, None, None),
    ("single_leg_exit", {**SINGLE, "profit_pct": 80.01}, True, None, None),
    # 1.3 single leg: loss >= 50
    ("single_leg_exit", {**SINGLE, "profit_pct": -50.0}, True, None, None),
    ("single_leg_exit", {**SINGLE, "profit_pct": -49.99}, False, None, None),
    ("single_leg_exit", {**SINGLE, "profit_pct": -50.01}, True, None, None),
    # 1.3 single leg: DTE <= 21
    ("single_leg_exit", {**SINGLE, "dte": 21}, True, None, None),
    ("single_leg_exit", {**SINGLE, "dte": 22}, False, None, None),
    ("single_leg_exit", {**SINGLE, "dte": 20}, True, None, None),
    # 1.4 trailing: armed once the peak reaches 40 (floor = 0.4 x peak)
    ("trailing_stop", {"profit_pct": 15.99}, True, {"peak": 40.0}, None),
    ("trailing_stop", {"profit_pct": 16.0}, True, {"peak": 40.0}, None),  # at peak and floor
    ("trailing_stop", {"profit_pct": 15.0}, False, {"peak": 39.99}, None),
    ("trailing_stop", {"profit_pct": 16.0}, True, {"peak": 40.01}, None),
    # 1.4 trailing: profit <= 40% of the peak (peak 50 -> floor 20): equality closes
    ("trailing_stop", {"profit_pct": 20.0}, True, {"peak": 50.0}, None),
    ("trailing_stop", {"profit_pct": 19.99}, True, {"peak": 50.0}, None),
    ("trailing_stop", {"profit_pct": 20.01}, False, {"peak": 50.0}, None),
    # 1.4 trailing: the floor of a peak that is not round (62.5 -> 25.0, 0.4 x 45.5 -> 18.2)
    ("trailing_stop", {"profit_pct": 25.0}, True, {"peak": 62.5}, None),
    ("trailing_stop", {"profit_pct": 25.01}, False, {"peak": 62.5}, None),
    ("trailing_stop", {"profit_pct": 18.2}, True, {"peak": 45.5}, None),
    ("trailing_stop", {"profit_pct": 18.21}, False, {"peak": 45.5}, None),
    # 1.5 VIX > 35
    ("vix_exit", {"vix": 35.0, "entry_vix": 34.0}, False, None, None),
    ("vix_exit", {"vix": 34.99, "entry_vix": 34.0}, False, None, None),
    ("vix_exit", {"vix": 35.01, "entry_vix": 34.0}, True, None, None),
    # 1.5 VIX up > 5 points since entry
    ("vix_exit", {"vix": 23.0, "entry_vix": 18.0}, False, None, None),
    ("vix_exit", {"vix": 22.99, "entry_vix": 18.0}, False, None, None),
    ("vix_exit", {"vix": 23.01, "entry_vix": 18.0}, True, None, None),
    # 2 take profit at the regime target (normal: 80); partial already taken
    ("take_profit", {"profit_pct": 80.0}, True, {"reduced": True}, None),
    ("take_profit", {"profit_pct": 79.99}, False, {"reduced": True}, None),
    ("take_profit", {"profit_pct": 80.01}, True, {"reduced": True}, None),
    # 2 partial take profit at 50 (not yet reduced)
    ("take_profit", {"profit_pct": 50.0}, True, None, None),
    ("take_profit", {"profit_pct": 49.99}, False, None, None),
    ("take_profit", {"profit_pct": 50.01}, True, None, None),
    # 3 stop loss: loss >= 200% of credit
    ("stop_loss", {"profit_pct": -200.0}, True, None, None),
    ("stop_loss", {"profit_pct": -199.99}, False, None, None),
    ("stop_loss", {"profit_pct": -200.01}, True, None, None),
    # 3 stop loss near expiry: DTE < 7 and loss >= 50
    ("stop_loss", {"dte": 6, "profit_pct": -50.0}, True, None, None),
    ("stop_loss", {"dte": 6, "profit_pct": -49.99}, False, None, None),
    ("stop_loss", {"dte": 6, "profit_pct": -50.01}, True, None, None),
    ("stop_loss", {"dte": 7, "profit_pct": -60.0}, False, None, None),
    ("stop_loss", {"dte": 5, "profit_pct": -60.0}, True, None, None),
    # 4 delta risk: iron condor 0.30
    ("delta_risk", {"net_delta": 0.30}, False, None, None),
    ("delta_risk", {"net_delta": 0.2999}, False, None, None),
    ("delta_risk", {"net_delta": 0.3001}, True, None, None),
    ("delta_risk", {"net_delta": -0.3001}, True, None, None),
    # 4 delta risk: verticals 0.40
    ("delta_risk", {"strategy_type": "bull_put_spread", "net_delta": 0.40}, False, None, None),
    ("delta_risk", {"strategy_type": "bull_put_spread", "net_delta": 0.3999}, False, None, None),
    ("delta_risk", {"strategy_type": "bear_call_spread", "net_delta": -0.4001}, True, None, None),
    # 5 IV crush: IV down > 30% with profit > 20 (0.175 / 0.25 = -30% exactly)
    ("iv_crush", {"profit_pct": 25.0, "iv": 0.175}, False, None, None),
    ("iv_crush", {"profit_pct": 25.0, "iv": 0.1751}, False, None, None),
    ("iv_crush", {"profit_pct": 25.0, "iv": 0.1749}, True, None, None),
    ("iv_crush", {"profit_pct": 20.0, "iv": 0.15}, False, None, None),
    ("iv_crush", {"profit_pct": 19.99, "iv": 0.15}, False, None, None),
    ("iv_crush", {"profit_pct": 20.01, "iv": 0.15}, True, None, None),
    # 5.5 IV percentile below 30 with profit > 20
    ("iv_percentile", {"profit_pct": 25.0, "iv_percentile": 30.0}, False, None, None),
    ("iv_percentile", {"profit_pct": 25.0, "iv_percentile": 30.01}, False, None, None),
    ("iv_percentile", {"profit_pct": 25.0, "iv_percentile": 29.99}, True, None, None),
    ("iv_percentile", {"profit_pct": 20.0, "iv_percentile": 10.0}, False, None, None),
    ("iv_percentile", {"profit_pct": 19.99, "iv_percentile": 10.0}, False, None, None),
    ("iv_percentile", {"profit_pct": 20.01, "iv_percentile": 10.0}, True, None, None),
    # 7 gamma risk (rolls disabled: rule 6 would act first): abs(gamma) > 0.10 and DTE < 14
    ("gamma_risk", {"net_gamma": 0.10, "dte": 10}, False, None, NO_ROLL),
    ("gamma_risk", {"net_gamma": 0.0999, "dte": 10}, False, None, NO_ROLL),
    ("gamma_risk", {"net_gamma": 0.1001, "dte": 10}, True, None, NO_ROLL),
    ("gamma_risk", {"net_gamma": -0.1001, "dte": 10}, True, None, NO_ROLL),
    ("gamma_risk", {"net_gamma": 0.2, "dte": 14}, False, None, NO_ROLL),
    ("gamma_risk", {"net_gamma": 0.2, "dte": 15}, False, None, NO_ROLL),
    ("gamma_risk", {"net_gamma": 0.2, "dte": 13}, True, None, NO_ROLL),
    # 8 time exit: DTE <= 1
    ("time_exit", {"dte": 1}, True, None, None),
    ("time_exit", {"dte": 0}, True, None, None),
    ("time_exit", {"dte": 2}, False, None, None),
    ("time_exit", {"dte": 2}, False, None, NO_ROLL),
]


def _id(case: tuple[str, dict[str, Any], bool, Any, Any]) -> str:
    rule, over, fires, prior, _ = case
    shown = ",".join(f"{k}={v}" for k, v in over.items() if k not in SINGLE)
    extra = f",state={prior}" if prior else ""
    return f"{rule}[{shown}{extra}]->{'fires' if fires else 'not'}"


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_rule_threshold(case: tuple[str, dict[str, Any], bool, Any, Any]) -> None:
    rule, overrides, fires, prior, settings = case
    d = decide(settings, state(**prior) if prior else None, **overrides)
    assert d["action"] != "NO_DATA", d["reason"]
    if fires:
        assert d["rule"] == rule, d["reason"]
        assert d["urgency"] == URGENCY[rule]
        assert d["reason"]
    else:
        assert d["rule"] != rule, d["reason"]


def test_the_quiet_strategy_holds() -> None:
    d = decide()
    assert (d["action"], d["rule"], d["urgency"], d["missing_inputs"]) == (
        "HOLD",
        None,
        None,
        None,
    )
    assert d["reason"] == "no rule fired"


@pytest.mark.parametrize(
    ("profit", "reduced", "action"),
    [
        (80.0, False, "CLOSE"),
        (79.99, False, "REDUCE"),
        (50.0, False, "REDUCE"),
        (60.0, True, "HOLD"),
    ],
)
def test_take_profit_closes_at_target_and_reduces_half_once(
    profit: float, reduced: bool, action: str
) -> None:
    d = decide(None, state(reduced=reduced), profit_pct=profit)
    assert d["action"] == action
    assert d["reduced"] is (reduced or action == "REDUCE")


@pytest.mark.parametrize(
    ("regime", "target"),
    [
        ("crash", 40.0),
        ("high_vol", 50.0),
        ("normal", 80.0),
        ("low_vol", 90.0),
        ("trending", 85.0),
        ("range_bound", 80.0),
        ("unknown", 50.0),
        (None, 50.0),
    ],
)
def test_take_profit_target_follows_the_regime(regime: str | None, target: float) -> None:
    at = decide(None, state(reduced=True), profit_pct=target, regime=regime)
    below = decide(None, state(reduced=True), profit_pct=target - 0.01, regime=regime)
    assert (at["action"], at["rule"], at["profit_target_pct"]) == ("CLOSE", "take_profit", target)
    assert below["rule"] != "take_profit"
    assert f"{target}%" in at["reason"]


@pytest.mark.parametrize(
    ("dte", "action", "urgency"),
    [
        (26, "HOLD", None),
        (25, "ROLL", "normal"),
        (24, "ROLL", "normal"),
        (22, "ROLL", "normal"),
        (21, "ROLL", "high"),
        (20, "ROLL", "high"),
        (2, "ROLL", "high"),
        (1, "CLOSE", "immediate"),  # the time exit, not a roll, on the last day
    ],
)
def test_roll_window_and_must_roll(dte: int, action: str, urgency: str | None) -> None:
    d = decide(dte=dte)
    assert (d["action"], d["urgency"]) == (action, urgency)
    if action == "ROLL":
        assert d["rule"] == "dte_roll"
        assert "~45 DTE" in d["reason"]


def test_reason_text_carries_the_numbers_that_fired() -> None:
    d = decide(None, state(peak=62.5), profit_pct=12.0)
    assert d["rule"] == "trailing_stop"
    assert "12.0%" in d["reason"] and "62.5%" in d["reason"] and "25.0%" in d["reason"]
    d = decide(underlying_move_1h_pct=-4.25)
    assert "-4.25%" in d["reason"] and "-3.0%" in d["reason"]
    d = decide(net_delta=-0.4567)
    assert "0.457" in d["reason"] and "0.3" in d["reason"]


def test_thresholds_come_from_settings() -> None:
    tight = RuleSettings(delta_limit_iron_condor=0.10, time_exit_dte=3, roll_window_max_dte=2)
    assert decide(tight, net_delta=0.11)["rule"] == "delta_risk"
    assert decide(tight, dte=3)["rule"] == "time_exit"
    assert decide(net_delta=0.11)["action"] == "HOLD"
