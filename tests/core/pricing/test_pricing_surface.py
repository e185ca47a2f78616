"""Vol surface: generator realism and no-arbitrage, smile fits, skew measures, IV rank."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from core.pricing import (
    HistoryReason,
    SmileParams,
    VolSurface,
    bs_price,
    fit_smile,
    iv_percentile,
    iv_rank,
    skew_metrics,
)

EXPIRIES = [1 / 365, 7 / 365, 30 / 365, 91 / 365, 1.0, 2.0]


# ------------------------------------------------------------------------- generator


@pytest.mark.parametrize("T", EXPIRIES)
def test_default_equity_surface_has_put_skew(T: float) -> None:
    surf = VolSurface()
    m = skew_metrics(surf.smile(T))
    assert m.atm_iv == pytest.approx(float(surf.atm_vol_at(T)), rel=1e-12)
    # OTM put IV > ATM IV > OTM call IV, at +/-1 sd and at 25 delta
    assert m.iv_put_1sd > m.atm_iv > m.iv_call_1sd
    assert m.iv_25d_put > m.atm_iv > m.iv_25d_call
    assert m.put_call_ratio > 1.2 and m.rr25 < -0.03
    # ...and the strikes behind those numbers really are 25 delta (forward delta)
    smile = surf.smile(T)
    for iv, d in ((m.iv_25d_call, 0.25), (m.iv_25d_put, -0.25)):
        k = _strike_for_forward_delta(smile, iv, d)
        assert float(smile.iv_k(k)) == pytest.approx(iv, rel=1e-10)


def _strike_for_forward_delta(smile: SmileParams, iv: float, delta: float) -> float:
    """k such that N(d1) (call) or N(d1) - 1 (put) equals delta at this IV."""
    from scipy.special import ndtri

    d1 = float(ndtri(delta if delta > 0 else 1.0 + delta))
    sd = iv * math.sqrt(smile.T)
    return 0.5 * sd * sd - d1 * sd


def test_default_surface_is_realistic_at_30_days() -> None:
    m = skew_metrics(VolSurface().smile(30 / 365))
    assert m.atm_iv == pytest.approx(0.20)
    assert -0.09 < m.rr25 < -0.04  # index-like: a few vol points of risk reversal
    assert 1.3 < m.put_call_ratio < 2.0


def test_skew_measures_follow_the_skew_sign() -> None:
    call_skew = skew_metrics(VolSurface(skew=0.5, eta=1.0).smile(0.25))
    assert call_skew.rr25 > 0 and call_skew.put_call_ratio < 1
    flat = skew_metrics(VolSurface(skew=0.0, eta=1.0).smile(0.25))
    assert flat.put_call_ratio == pytest.approx(1.0, abs=1e-12)  # symmetric in k
    assert flat.iv_put_1sd > flat.atm_iv and flat.iv_call_1sd > flat.atm_iv  # a smile
    steeper = skew_metrics(VolSurface(skew=-0.9, eta=1.0).smile(0.25))
    milder = skew_metrics(VolSurface(skew=-0.3, eta=1.0).smile(0.25))
    assert steeper.rr25 < milder.rr25 < 0


def test_term_structure_slope_and_calendar_no_arbitrage() -> None:
    up = VolSurface(term_slope=0.1)
    down = VolSurface(term_slope=-0.3)  # stressed: short-dated vol above long-dated
    T = np.array(EXPIRIES)
    assert np.all(np.diff(up.atm_vol_at(T)) > 0)
    assert np.all(np.diff(down.atm_vol_at(T)) < 0)
    # total variance still grows with T at every moneyness (no calendar arbitrage)
    k = np.linspace(-1.0, 1.0, 41)[:, None]
    for surf in (up, down):
        w = surf.iv_k(k, T[None, :]) ** 2 * T[None, :]
        assert np.all(np.diff(w, axis=1) > 0)


def test_default_surface_has_no_butterfly_arbitrage() -> None:
    """Call prices are convex in strike (a non-negative risk-neutral density)."""
    surf = VolSurface()
    for T in EXPIRIES:
        sd = float(surf.atm_vol_at(T)) * math.sqrt(T)
        K = 100.0 * np.exp(np.linspace(-6 * sd, 4 * sd, 801))
        calls = bs_price(100.0, K, T, 0.0, 0.0, surf.iv(100.0, K, T), True)
        slopes = np.diff(calls) / np.diff(K)
        assert np.all(np.diff(slopes) >= -1e-12), T
        assert np.all(slopes <= 0) and np.all(slopes >= -1)


def test_surface_iv_for_a_chain_and_polars() -> None:
    surf = VolSurface(atm_vol=0.3)
    K = np.array([80.0, 90.0, 100.0, 110.0])
    T = np.array([7, 30, 90]) / 365
    iv = surf.iv(100.0, K[None, :], T[:, None], r=0.04, q=0.01)
    assert iv.shape == (3, 4) and np.isfinite(iv).all()
    F = 100.0 * math.exp(0.03 * T[1])
    assert iv[1, 2] == pytest.approx(float(surf.smile(T[1]).iv(100.0, F)), rel=1e-12)
    s = surf.iv(pl.Series([100.0, 100.0]), pl.Series([95.0, 105.0]), 0.1)
    assert s.shape == (2,) and s[0] > s[1]
    assert np.isnan(surf.iv(100.0, 100.0, 0.0))  # expired: NaN, not a number


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"atm_vol": 0.0}, r"VolSurface.atm_vol=0.0 is invalid"),
        ({"skew": -1.0}, r"VolSurface.skew=-1.0 is invalid: must be in \(-1, 1\)"),
        ({"term_slope": -0.6}, r"term_slope=-0.6 .*ATM total variance must grow"),
        ({"gamma": 0.8}, r"gamma=0.8 is invalid"),
        ({"eta": 1.5, "skew": -0.7}, r"butterfly arbitrage .*lower eta to <= 1.1765"),
    ],
)
def test_surface_rejects_arbitrageable_or_invalid_params(kwargs: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        VolSurface(**kwargs)


# ---------------------------------------------------------------------------- fitting


def _chain(smile: SmileParams, spot: float, r: float, q: float, n: int = 25):
    F = spot * math.exp((r - q) * smile.T)
    sd = smile.atm_vol * math.sqrt(smile.T)
    K = F * np.exp(np.linspace(-2.5 * sd, 2.0 * sd, n))
    return K, smile.iv(K, F)


@pytest.mark.parametrize("T", [7 / 365, 30 / 365, 1.0])
def test_fit_recovers_generating_params_from_ivs(T: float) -> None:
    truth = VolSurface(atm_vol=0.25, skew=-0.6, eta=0.9).smile(T)
    K, iv = _chain(truth, 100.0, 0.03, 0.01)
    fit = fit_smile(K, T, spot=100.0, r=0.03, q=0.01, ivs=iv)
    assert fit.success and fit.n_used == K.size
    assert fit.params.theta == pytest.approx(truth.theta, rel=1e-6)
    assert fit.params.rho == pytest.approx(truth.rho, abs=1e-6)
    assert fit.params.phi == pytest.approx(truth.phi, rel=1e-6)
    assert fit.rmse < 1e-8


def test_fit_recovers_params_from_mid_prices_and_ignores_junk() -> None:
    T, spot, r, q = 45 / 365, 4500.0, 0.045, 0.014
    truth = SmileParams(T=T, theta=0.18**2 * T, rho=-0.75, phi=12.0)
    K, iv = _chain(truth, spot, r, q, n=31)
    F = spot * math.exp((r - q) * T)
    is_call = K >= F  # OTM quotes, as a chain snapshot would use
    mids = bs_price(spot, K, T, r, q, iv, is_call)
    mids[[3, 10]] = np.nan  # missing quotes
    mids[20] = 0.0  # zero bid/ask
    mids[25] = spot * 1.01  # above the no-arbitrage bound for any call
    fit = fit_smile(K, T, spot=spot, r=r, q=q, mid_prices=mids, is_call=is_call)
    assert fit.success and fit.n_used == K.size - 4
    assert fit.params.theta == pytest.approx(truth.theta, rel=1e-6)
    assert fit.params.rho == pytest.approx(truth.rho, abs=1e-6)
    assert fit.params.phi == pytest.approx(truth.phi, rel=1e-6)


def test_fit_is_robust_to_an_outlier_quote() -> None:
    truth = VolSurface().smile(30 / 365)
    K, iv = _chain(truth, 100.0, 0.0, 0.0, n=31)
    iv = iv.copy()
    iv[5] += 0.15  # a 15-vol-point fat finger
    fit = fit_smile(K, truth.T, spot=100.0, ivs=iv)
    assert fit.success
    clean = np.delete(np.arange(K.size), 5)
    assert np.abs(fit.params.iv(K[clean], 100.0) - iv[clean]).max() < 0.003


def test_fit_with_too_few_quotes_fails_softly() -> None:
    fit = fit_smile([90.0, 100.0, 110.0], 0.1, spot=100.0, ivs=[0.25, math.nan, 0.2])
    assert not fit.success and fit.n_used == 2 and "only 2 usable quotes" in fit.message
    assert math.isnan(fit.params.theta) and math.isnan(fit.rmse)
    m = skew_metrics(fit.params)  # NaN flows through instead of raising
    assert math.isnan(m.atm_iv) and math.isnan(m.rr25) and math.isnan(m.put_call_ratio)


def test_fit_argument_errors_raise() -> None:
    with pytest.raises(ValueError, match="exactly one of ivs= or mid_prices="):
        fit_smile([100.0], 0.1, spot=100.0)
    with pytest.raises(ValueError, match="needs is_call="):
        fit_smile([100.0], 0.1, spot=100.0, mid_prices=[1.0])
    with pytest.raises(ValueError, match=r"T=0.0 must be finite and > 0"):
        fit_smile([100.0], 0.0, spot=100.0, ivs=[0.2])
    with pytest.raises(ValueError, match="strikes has 2 rows but quotes have 1"):
        fit_smile([100.0, 110.0], 0.1, spot=100.0, ivs=[0.2])


# ------------------------------------------------------------------ IV rank, percentile


def test_iv_rank_and_percentile_basic() -> None:
    hist = np.arange(10, 31) / 100.0  # 0.10, 0.11, ..., 0.30
    assert iv_rank(hist, 0.25).value == pytest.approx(75.0)
    assert iv_rank(hist, 0.25).reason is HistoryReason.OK
    # strictly below 0.25: 0.10..0.24 -> 15 of 21 days
    assert iv_percentile(hist, 0.25).value == pytest.approx(15 / 21 * 100)
    assert iv_percentile(hist, 0.10).value == 0.0
    assert iv_percentile(hist, 0.31).value == 100.0


def test_iv_rank_is_clipped_beyond_the_range() -> None:
    hist = np.linspace(0.10, 0.30, 30)
    assert iv_rank(hist, 0.50).value == 100.0
    assert iv_rank(hist, 0.05).value == 0.0


def test_iv_rank_percentile_edge_cases() -> None:
    assert iv_rank([], 0.2) == (pytest.approx(math.nan, nan_ok=True), HistoryReason.EMPTY_HISTORY)
    assert iv_rank([math.nan] * 30, 0.2).reason is HistoryReason.EMPTY_HISTORY
    short = iv_percentile([0.2] * 5, 0.2)
    assert math.isnan(short.value) and short.reason is HistoryReason.TOO_SHORT
    assert iv_percentile([0.2] * 5, 0.2, min_history=5).reason is HistoryReason.OK
    flat = iv_rank([0.2] * 30, 0.25)
    assert math.isnan(flat.value) and flat.reason is HistoryReason.FLAT_HISTORY
    assert iv_percentile([0.2] * 30, 0.25).value == 100.0  # percentile is still defined
    for bad in (math.nan, -0.1, 0.0, math.inf):
        r = iv_rank(np.linspace(0.1, 0.3, 30), bad)
        assert math.isnan(r.value) and r.reason is HistoryReason.INVALID_CURRENT


def test_iv_history_nans_dropped_and_polars_accepted() -> None:
    hist = pl.Series([0.1, None, 0.2, math.nan, 0.3] + [0.2] * 20)
    rank = iv_rank(hist, 0.25)
    assert rank.reason is HistoryReason.OK and rank.value == pytest.approx(75.0)
    pct = iv_percentile(hist, 0.25)  # 23 finite values, 22 of them below 0.25
    assert pct.value == pytest.approx(22 / 23 * 100)
