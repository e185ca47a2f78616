"""Skew-aware strike selection: rich put skew moves the short put closer to the money by the
documented amount (lean x skew_max_delta_shift), capped; rich call skew the short call."""

from __future__ import annotations

import polars as pl
import pytest
from strategy_chains import NOW, synthetic_chain

from core.config import StrategySettings
from core.pricing import VolSurface
from core.strategy.chain import prepare_chain
from core.strategy.skew import lean, measure_skew
from core.strategy.strikes import delta_targets, select_strikes

BASE = StrategySettings(skew_neutral=0.30, skew_full_lean=0.20)
RICH_PUTS = VolSurface(skew=-0.95, eta=0.7)  # skew_norm ~0.44
RICH_CALLS = VolSurface(skew=0.5, eta=0.7)  # skew_norm ~-0.24


def _choose(chain: pl.DataFrame, settings: StrategySettings) -> tuple[pl.DataFrame, pl.DataFrame]:
    prepared = prepare_chain(chain, NOW)
    targets = delta_targets(lean(measure_skew(prepared), settings), settings)
    sides, missing = select_strikes(prepared, targets, settings)
    assert missing.is_empty(), missing
    return sides, targets


def _side(sides: pl.DataFrame, right: str) -> dict[str, object]:
    return sides.filter(pl.col("right") == right).row(0, named=True)


def _nearest_listed(chain: pl.DataFrame, right: str, target: float) -> float:
    """Brute force: the listed strike (with a bid) whose |delta| is nearest `target`."""
    rows = chain.filter((pl.col("right") == right) & (pl.col("bid") > 0)).with_columns(
        d=(pl.col("delta").abs() - target).abs()
    )
    return float(rows.sort("d", pl.col("delta").abs()).row(0, named=True)["strike"])


def test_delta_targets_follow_the_documented_formula() -> None:
    s = StrategySettings(short_delta_min=0.16, short_delta_max=0.20, skew_max_delta_shift=0.04)
    skew = pl.DataFrame({"underlying": ["X"] * 3, "lean": [0.0, 0.5, -1.0]})
    t = delta_targets(skew, s)
    assert t["put_target"].to_list() == pytest.approx([0.18, 0.20, 0.18])
    assert t["call_target"].to_list() == pytest.approx([0.18, 0.18, 0.22])
    assert t["put_hi"].to_list() == pytest.approx([0.20, 0.22, 0.20])
    assert t["call_hi"].to_list() == pytest.approx([0.20, 0.20, 0.24])


def test_rich_put_skew_moves_the_short_put_closer_to_the_money() -> None:
    chain = synthetic_chain(surface=RICH_PUTS)
    sides, targets = _choose(chain, BASE)
    no_lean, _ = _choose(chain, BASE.model_copy(update={"skew_max_delta_shift": 0.0}))
    t = targets.row(0, named=True)
    expected_lean = min(max((t["skew_norm"] - 0.30) / 0.20, -1.0), 1.0)
    assert t["lean"] == pytest.approx(expected_lean) and 0.5 < expected_lean < 1.0
    assert t["put_target"] == pytest.approx(0.18 + expected_lean * 0.04)
    assert t["call_target"] == pytest.approx(0.18)
    put, put0 = _side(sides, "P"), _side(no_lean, "P")
    # the chosen strike is the listed one nearest the documented target
    assert put["short_strike"] == _nearest_listed(chain, "P", t["put_target"])
    assert put0["short_strike"] == _nearest_listed(chain, "P", 0.18)
    assert put["short_strike"] > put0["short_strike"]  # closer to the money (spot 500)
    shift = abs(put["short_delta_used"]) - abs(put0["short_delta_used"])
    assert shift == pytest.approx(expected_lean * 0.04, abs=0.006)  # one $1 strike ~ 0.005 delta
    assert _side(sides, "C")["short_strike"] == _side(no_lean, "C")["short_strike"]


def test_full_lean_is_capped_at_max_plus_shift() -> None:
    settings = BASE.model_copy(update={"skew_full_lean": 0.05})  # the rich chain saturates
    chain = synthetic_chain(surface=RICH_PUTS)
    sides, targets = _choose(chain, settings)
    t = targets.row(0, named=True)
    assert t["lean"] == 1.0
    assert t["put_target"] == pytest.approx(0.22) and t["put_hi"] == pytest.approx(0.24)
    put = _side(sides, "P")
    assert 0.16 <= abs(put["short_delta_used"]) <= 0.24
    assert abs(put["short_delta_used"]) == pytest.approx(0.22, abs=0.005)


def test_rich_call_skew_moves_the_short_call_instead() -> None:
    chain = synthetic_chain(surface=RICH_CALLS)
    sides, targets = _choose(chain, BASE)
    no_lean, _ = _choose(chain, BASE.model_copy(update={"skew_max_delta_shift": 0.0}))
    t = targets.row(0, named=True)
    assert t["lean"] == -1.0  # skew_norm ~-0.24 is far below neutral 0.30
    assert t["call_target"] == pytest.approx(0.22) and t["put_target"] == pytest.approx(0.18)
    assert _side(sides, "C")["short_strike"] < _side(no_lean, "C")["short_strike"]
    assert _side(sides, "P")["short_strike"] == _side(no_lean, "P")["short_strike"]


def test_long_strike_sits_one_wing_width_beyond_the_short() -> None:
    settings = BASE.model_copy(update={"wing_width": {"SPY": 5.0}})
    sides, _ = _choose(synthetic_chain(), settings)
    put, call = _side(sides, "P"), _side(sides, "C")
    assert put["short_strike"] - put["long_strike"] == 5.0 == put["width"]
    assert call["long_strike"] - call["short_strike"] == 5.0 == call["width"]


def test_a_side_without_an_acceptable_strike_is_reported() -> None:
    settings = BASE.model_copy(update={"skew_max_delta_shift": 0.0})
    chain = synthetic_chain(band=0.02)  # only strikes within 2% of spot: all deltas > 0.2
    prepared = prepare_chain(chain, NOW)
    targets = delta_targets(lean(measure_skew(prepared), settings), settings)
    sides, missing = select_strikes(prepared, targets, settings)
    assert sides.is_empty()
    assert sorted(missing["right"].to_list()) == ["C", "P"]
    assert "no put strike with a bid and |delta| in [0.16, 0.2]" in missing["reason"].to_list()
