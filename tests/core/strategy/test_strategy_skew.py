"""Skew per expiry: recovered from a chain on a known surface, and the neutral fallback."""

from __future__ import annotations

import math

import polars as pl
import pytest
from strategy_chains import NOW, expiry_for, synthetic_chain, years_to

from core.config import StrategySettings
from core.pricing import VolSurface, skew_metrics
from core.strategy.chain import prepare_chain
from core.strategy.skew import lean, measure_skew

T45 = years_to(expiry_for(NOW, 45), NOW)


def _skew(chain: pl.DataFrame) -> dict[str, object]:
    out = measure_skew(prepare_chain(chain, NOW))
    assert out.height == 1
    return out.row(0, named=True)


@pytest.mark.parametrize("rho", [-0.95, -0.7, 0.0, 0.5])
def test_skew_measures_match_the_generating_smile(rho: float) -> None:
    surface = VolSurface(skew=rho, eta=min(0.7, 1.99 / (1 + abs(rho))))
    truth = skew_metrics(surface.smile(T45))
    row = _skew(synthetic_chain(surface=surface))
    assert row["skew_source"] == "fit" and row["skew_reason"] == ""
    assert row["forward"] == pytest.approx(500.0, abs=0.02)  # put-call parity
    assert row["atm_iv"] == pytest.approx(truth.atm_iv, rel=1e-4)
    assert row["rr25"] == pytest.approx(truth.rr25, abs=1e-4)
    assert row["put_call_ratio"] == pytest.approx(truth.put_call_ratio, rel=1e-4)
    assert row["skew_norm"] == pytest.approx(-truth.rr25 / truth.atm_iv, abs=1e-4)
    assert (row["skew_norm"] > 0) == (rho < 0)  # put skew reads positive


def test_normalised_skew_compares_vol_levels_and_expiries() -> None:
    """The same smile shape at twice the vol, or another expiry, reads about the same."""
    calm = _skew(synthetic_chain(surface=VolSurface(atm_vol=0.15)))["skew_norm"]
    stressed = _skew(synthetic_chain(surface=VolSurface(atm_vol=0.30)))["skew_norm"]
    later = _skew(synthetic_chain(surface=VolSurface(atm_vol=0.15), dte=60))["skew_norm"]
    raw_calm = _skew(synthetic_chain(surface=VolSurface(atm_vol=0.15)))["rr25"]
    raw_stressed = _skew(synthetic_chain(surface=VolSurface(atm_vol=0.30)))["rr25"]
    assert isinstance(calm, float) and isinstance(stressed, float) and isinstance(later, float)
    assert abs(stressed - calm) < 0.25 * calm
    assert abs(later - calm) < 0.25 * calm
    assert isinstance(raw_calm, float) and isinstance(raw_stressed, float)
    assert abs(raw_stressed) > 1.5 * abs(raw_calm)  # the raw risk reversal does not compare


def test_missing_ivs_and_prices_fall_back_to_neutral_and_say_so() -> None:
    chain = synthetic_chain().with_columns(
        iv=pl.lit(math.nan), delta=pl.lit(math.nan), bid=pl.lit(math.nan), ask=pl.lit(math.nan)
    )
    row = _skew(chain)
    assert row["skew_source"] == "neutral"
    assert "usable OTM IVs" in str(row["skew_reason"]) and "lean 0" in str(row["skew_reason"])
    assert row["skew_norm"] is None and row["rr25"] is None and row["put_call_ratio"] is None
    leaned = lean(measure_skew(prepare_chain(chain, NOW)), StrategySettings())
    assert leaned["lean"].to_list() == [0.0]


def test_one_sided_ivs_are_neutral() -> None:
    chain = synthetic_chain().with_columns(
        iv=pl.when(pl.col("right") == "C").then(math.nan).otherwise(pl.col("iv")),
        bid=pl.when(pl.col("right") == "C").then(math.nan).otherwise(pl.col("bid")),
    )
    row = _skew(chain)
    assert row["skew_source"] == "neutral"
    assert "one-sided" in str(row["skew_reason"])


def test_ivs_missing_from_quotes_are_implied_from_prices() -> None:
    """Broker IVs absent but prices present: IVs come from the mids and skew still fits."""
    surface = VolSurface(skew=-0.9, eta=0.7)
    truth = skew_metrics(surface.smile(T45))
    prepared = prepare_chain(
        synthetic_chain(surface=surface, quote_iv=False, quote_delta=False), NOW
    )
    assert set(prepared["iv_source"].unique()) <= {"model", "none"}
    assert (prepared["delta_source"] == "model").any()
    row = measure_skew(prepared).row(0, named=True)
    assert row["skew_source"] == "fit"
    # mids are rounded to cents, so the recovered skew is close, not exact
    assert row["skew_norm"] == pytest.approx(-truth.rr25 / truth.atm_iv, abs=0.03)


def test_lean_is_clipped_and_signed() -> None:
    settings = StrategySettings(skew_neutral=0.30, skew_full_lean=0.20)
    frame = pl.DataFrame(
        {
            "skew_norm": [0.30, 0.40, 0.90, 0.10, -0.5, None],
            "skew_source": ["fit", "fit", "fit", "fit", "fit", "neutral"],
        }
    )
    assert lean(frame, settings)["lean"].to_list() == pytest.approx(
        [0.0, 0.5, 1.0, -1.0, -1.0, 0.0]
    )
