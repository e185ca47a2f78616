"""Precedence (the highest-priority rule that fires wins), NO_DATA, disabled rules."""

from __future__ import annotations

import math
from typing import Any

import polars as pl
import pytest
from rules_helpers import NOW, PIN_TIME, decide, snapshot, state

from core.config import RuleSettings
from core.rules import RULE_NAMES, RULES, evaluate

# (winner, loser, overrides, prior state kwargs): both rules fire; the winner must decide,
# and with the winner disabled the loser must.
PAIRS: list[tuple[str, str, dict[str, Any], dict[str, Any] | None]] = [
    ("delivered_stock", "catastrophe", {"stock_shares": 100, "underlying_move_1h_pct": -5.0},
     None),
    ("delivered_stock", "time_exit", {"stock_shares": -100, "dte": 0}, None),
    ("delivered_stock", "pin_risk", {"stock_shares": 100, "pin_distance_pct": 0.2}, None),
    ("pin_risk", "early_assignment",
     {"pin_distance_pct": 0.2, "dte": 0, "put_extrinsic": 0.01}, None),
    ("early_assignment", "catastrophe",
     {"dividend_cushion": -0.1, "dividend_days": 1.0, "underlying_move_1h_pct": -5.0}, None),
    # a take profit that reduces half would leave the exposed leg in place
    ("early_assignment", "take_profit",
     {"put_extrinsic": 0.01, "dte": 3, "profit_pct": 60.0}, None),
    ("pin_risk", "take_profit", {"pin_distance_pct": 0.0, "dte": 0, "profit_pct": 60.0}, None),
    ("pin_risk", "time_exit", {"pin_distance_pct": 1.0, "dte": 0}, None),
    ("catastrophe", "single_leg_exit",
     {"strategy_type": "single", "underlying_move_1h_pct": -5.0, "profit_pct": 85.0}, None),
    ("single_leg_exit", "trailing_stop",
     {"strategy_type": "single", "regime": "low_vol", "dte": 20, "profit_pct": 10.0},
     {"peak": 60.0}),
    ("trailing_stop", "vix_exit", {"profit_pct": 10.0, "vix": 40.0}, {"peak": 60.0}),
    ("vix_exit", "take_profit", {"profit_pct": 85.0, "vix": 40.0}, None),
    ("take_profit", "delta_risk", {"profit_pct": 85.0, "net_delta": 0.5}, None),
    ("stop_loss", "delta_risk", {"profit_pct": -210.0, "net_delta": 0.5}, None),
    ("stop_loss", "time_exit", {"profit_pct": -210.0, "dte": 0}, None),
    ("delta_risk", "iv_crush", {"net_delta": 0.5, "iv": 0.15, "profit_pct": 25.0}, None),
    ("iv_crush", "iv_percentile", {"iv": 0.15, "iv_percentile": 10.0, "profit_pct": 25.0}, None),
    ("iv_percentile", "dte_roll", {"iv_percentile": 10.0, "profit_pct": 25.0, "dte": 23}, None),
    ("dte_roll", "gamma_risk", {"dte": 10, "net_gamma": 0.2}, None),
    ("gamma_risk", "time_exit", {"dte": 1, "net_gamma": 0.2, "profit_pct": 10.0},
     None),
]  # fmt: skip


@pytest.mark.parametrize(("winner", "loser", "overrides", "prior"), PAIRS,
                         ids=[f"{w}>{lo}" for w, lo, _, _ in PAIRS])  # fmt: skip
def test_higher_priority_rule_wins(
    winner: str, loser: str, overrides: dict[str, Any], prior: dict[str, Any] | None
) -> None:
    memory = state(**prior) if prior else None
    first = decide(None, memory, now=PIN_TIME, **overrides)
    assert first["rule"] == winner, first["reason"]
    second = decide(RuleSettings(disabled=[winner]), memory, now=PIN_TIME, **overrides)
    assert second["rule"] == loser, second["reason"]
    assert winner in (second["suppressed_rules"] or "")


def test_catastrophe_outranks_everything_at_once() -> None:
    d = decide(
        None,
        state(peak=90.0),
        underlying_move_1h_pct=-5.0,
        profit_pct=-250.0,
        dte=0,
        vix=50.0,
        net_delta=0.9,
        net_gamma=0.5,
    )
    assert (d["rule"], d["action"], d["urgency"]) == ("catastrophe", "CLOSE", "immediate")


def test_single_leg_is_closed_not_rolled() -> None:
    d = decide(strategy_type="single", dte=21)
    assert (d["action"], d["rule"]) == ("CLOSE", "single_leg_exit")
    d = decide(strategy_type="single", dte=23)
    assert d["action"] == "HOLD"  # rolls are for the multi-leg spreads


def test_rules_are_in_priority_order() -> None:
    priorities = [r.priority for r in RULES]
    assert priorities == sorted(priorities)
    assert priorities == [0.5, 0.7, 0.8, 1.0, 1.3, 1.4, 1.5, 2.0, 3.0, 4.0, 5.0, 5.5, 6.0, 7.0, 8.0]


# -- NO_DATA ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "blocked", "missing"),
    [
        ({"profit_pct": None}, "trailing_stop", "profit_pct"),
        ({"profit_pct": math.nan}, "trailing_stop", "profit_pct"),
        ({"net_delta": math.nan}, "delta_risk", "net_delta"),
        ({"net_delta": math.inf}, "delta_risk", "net_delta"),
        ({"iv": None}, "catastrophe", "iv"),
        ({"iv": 0.0}, "catastrophe", "iv"),  # a zero IV is not a quote
        ({"entry_iv": None}, "catastrophe", "entry_iv"),
        ({"underlying_move_1h_pct": None}, "catastrophe", "underlying_move_1h_pct"),
        ({"vix": None}, "vix_exit", "vix"),
        ({"entry_vix": None}, "vix_exit", "entry_vix"),
        ({"iv_percentile": math.nan}, "iv_percentile", "iv_percentile"),
        ({"dte": None}, "early_assignment", "dte"),  # the first rule that reads DTE
        ({"pin_distance_pct": math.nan}, "pin_risk", "pin_distance_pct"),
        ({"pin_distance_pct": -math.inf}, "pin_risk", "pin_distance_pct"),
        ({"dividend_cushion": None}, "early_assignment", "dividend_cushion"),
        ({"dividend_days": math.nan}, "early_assignment", "dividend_days"),
        ({"put_extrinsic": None}, "early_assignment", "put_extrinsic"),
        # gamma cannot matter at 40 DTE, but a NaN greek still never means HOLD
        ({"net_gamma": math.nan}, "gamma_risk", "net_gamma"),
    ],
)
def test_missing_input_is_no_data_naming_it(
    overrides: dict[str, Any], blocked: str, missing: str
) -> None:
    d = decide(**overrides)
    assert d["action"] == "NO_DATA"
    assert d["rule"] == blocked
    assert d["urgency"] is None
    assert missing in d["missing_inputs"].split(", ")
    assert missing in d["reason"] and blocked in d["reason"]


def test_a_rule_that_fired_on_the_inputs_it_has_still_decides() -> None:
    # IV unknown, but the underlying fell 5%: the catastrophe is proven without IV.
    d = decide(iv=None, underlying_move_1h_pct=-5.0)
    assert (d["action"], d["rule"]) == ("CLOSE", "catastrophe")
    assert d["missing_inputs"] == "iv"
    # VIX 40 fires the VIX exit without knowing entry VIX.
    d = decide(entry_vix=None, vix=40.0)
    assert (d["action"], d["rule"]) == ("CLOSE", "vix_exit")


def test_a_higher_rule_that_fired_outranks_a_lower_missing_input() -> None:
    d = decide(vix=40.0, net_delta=math.nan)
    assert (d["action"], d["rule"], d["missing_inputs"]) == ("CLOSE", "vix_exit", "net_delta")


def test_missing_input_blocks_lower_rules_that_would_fire() -> None:
    # profit unknown in the roll window: take profit might REDUCE or CLOSE, so the roll that
    # fires below may not act alone (the position has time: NO_DATA, not a guess).
    d = decide(profit_pct=None, dte=23)
    assert (d["action"], d["rule"]) == ("NO_DATA", "trailing_stop")


def test_inputs_of_rules_that_do_not_apply_are_not_required() -> None:
    d = decide(strategy_type="single", net_delta=math.nan)  # delta rule: spreads only
    assert (d["action"], d["missing_inputs"]) == ("HOLD", None)


def test_inputs_of_disabled_rules_are_not_required() -> None:
    d = decide(RuleSettings(disabled=["delta_risk"]), net_delta=math.nan)
    assert (d["action"], d["missing_inputs"]) == ("HOLD", None)


def test_remembered_entry_values_fill_a_snapshot_without_them() -> None:
    d = decide(None, state(entry_iv=0.25, entry_vix=18.0), entry_iv=None, entry_vix=None)
    assert d["action"] == "HOLD"
    assert (d["entry_iv"], d["entry_vix"]) == (0.25, 18.0)


def test_remembered_entry_values_win_over_the_snapshot() -> None:
    # Entry is a fact: a snapshot re-deriving it later must not move it.
    d = decide(None, state(entry_iv=0.20), entry_iv=0.40, iv=0.35)
    assert d["entry_iv"] == 0.20
    assert d["iv_change_pct"] == pytest.approx(75.0)
    assert d["rule"] == "catastrophe"


def test_external_strategies_are_never_actioned() -> None:
    row = {k: None for k in ("profit_pct", "dte", "net_delta", "iv", "vix")}
    d = decide(strategy_type="external", **row)
    assert (d["action"], d["rule"], d["urgency"]) == ("HOLD", None, None)
    assert d["reason"] == "external, untagged"
    d = decide(strategy_type="external", underlying_move_1h_pct=-9.0, dte=0)
    assert d["action"] == "HOLD"


def test_no_data_is_counted_per_strategy_in_one_pass() -> None:
    snap = snapshot(
        {"strategy_id": "A"},
        {"strategy_id": "B", "net_delta": math.nan},
        {"strategy_id": "C", "profit_pct": 85.0},
        {"strategy_id": "D", "iv": None},
    )
    out = evaluate(snap, RuleSettings(), None, NOW)
    assert out["strategy_id"].to_list() == ["A", "B", "C", "D"]
    assert out["action"].to_list() == ["HOLD", "NO_DATA", "CLOSE", "NO_DATA"]


# -- disabled rules ---------------------------------------------------------------------------


def test_disabled_rule_is_skipped_and_the_output_says_so() -> None:
    settings = RuleSettings(disabled=["take_profit", "gamma_risk"])
    d = decide(settings, profit_pct=85.0)
    assert d["action"] == "HOLD"
    assert d["disabled_rules"] == "take_profit, gamma_risk"
    assert d["suppressed_rules"] == "take_profit"
    assert "disabled rule(s) would have fired: take_profit" in d["reason"]
    quiet = decide(settings)
    assert (quiet["disabled_rules"], quiet["suppressed_rules"]) == ("take_profit, gamma_risk", None)


def test_no_disabled_rules_means_null_columns() -> None:
    d = decide()
    assert (d["disabled_rules"], d["suppressed_rules"]) == (None, None)


def test_unknown_disabled_rule_name_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"rules\.disabled.*'take_proft'.*known rules"):
        evaluate(snapshot({}), RuleSettings(disabled=["take_proft"]), None, NOW)


def test_every_rule_can_be_disabled() -> None:
    d = decide(RuleSettings(disabled=list(RULE_NAMES)), profit_pct=-500.0, dte=0)
    assert d["action"] == "HOLD"
    assert set(d["suppressed_rules"].split(", ")) >= {"stop_loss", "time_exit"}


def test_output_schema_is_the_decisions_table() -> None:
    from core.store import REGISTRY

    out = evaluate(snapshot({}), RuleSettings(), None, NOW)
    assert out.schema == REGISTRY["decisions"].schema
    empty = evaluate(snapshot({}).clear(), RuleSettings(), None, NOW)
    assert empty.height == 0 and empty.schema == REGISTRY["decisions"].schema
    assert isinstance(empty, pl.DataFrame)


def test_evaluate_rejects_unknown_strategy_types_and_regimes() -> None:
    with pytest.raises(ValueError, match=r"strategy_type values \['strangle'\]"):
        evaluate(snapshot({"strategy_type": "strangle"}), RuleSettings(), None, NOW)
    with pytest.raises(ValueError, match=r"regime values \['calm'\]"):
        evaluate(snapshot({"regime": "calm"}), RuleSettings(), None, NOW)


def test_delivered_stock_closes_even_with_every_greek_missing() -> None:
    """A half-assigned spread is stock plus an option whose quotes may be gone: the stock
    alone decides, so missing option data never keeps delivered stock in the account."""
    d = decide(stock_shares=100, profit_pct=None, net_delta=None, net_gamma=None, iv=None)
    assert (d["rule"], d["action"], d["urgency"]) == ("delivered_stock", "CLOSE", "immediate")
    assert "100 shares" in d["reason"]
    assert decide(stock_shares=0)["action"] == "HOLD"
