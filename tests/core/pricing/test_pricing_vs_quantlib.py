"""V6 prices, greeks and implied vols against QuantLib's AnalyticEuropeanEngine.

Grid: strikes from 0.3x to 3x spot (deep ITM to deep OTM for both rights), expiries
from 1 day to 2 years, vols from 5% to 150%, three rate/dividend pairs (one negative).

Tolerance on prices and greeks: relative 1e-8, or absolute 1e-12 for values below 1e-4
(S = 100). Why the absolute floor: QuantLib's normal CDF computes 0.5*(1 + erf(z)) for
tails above 1e-8, which carries ~1e-16 *absolute* error, so its small prices are only
good to ~1e-14 absolute (relative errors up to 1e-2 at 1e-12 prices).
``test_small_prices_match_high_precision_reference`` shows V6 keeps 1e-9 *relative*
accuracy there (typically 1e-13) against a 60-digit reference, so the floor hides
QuantLib's error, not V6's.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, localcontext

import numpy as np
import pytest

from core.pricing import IVReason, bs_greeks, bs_price, implied_vol, theta_per_day

ql = pytest.importorskip("QuantLib")

SPOT = 100.0
DAYS = [1, 7, 30, 91, 365, 730]
MONEYNESS = [0.3, 0.5, 0.7, 0.9, 0.97, 1.0, 1.03, 1.1, 1.3, 1.6, 2.0, 3.0]
VOLS = [0.05, 0.2, 0.5, 1.0, 1.5]
RATES = [(0.03, 0.01), (-0.005, 0.0), (0.08, 0.05)]
EPS = float(np.finfo(np.float64).eps)


@dataclass(frozen=True)
class Grid:
    S: np.ndarray
    K: np.ndarray
    T: np.ndarray
    r: np.ndarray
    q: np.ndarray
    sigma: np.ndarray
    is_call: np.ndarray
    ql: dict[str, np.ndarray]


@pytest.fixture(scope="module")
def grid() -> Grid:
    today = ql.Date(16, 6, 2025)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()  # T = days / 365 exactly, as V6 is given
    spot, rate, div, vol = (ql.SimpleQuote(v) for v in (SPOT, 0.0, 0.0, 0.2))
    process = ql.BlackScholesMertonProcess(
        ql.QuoteHandle(spot),
        ql.YieldTermStructureHandle(ql.FlatForward(today, ql.QuoteHandle(div), dc)),
        ql.YieldTermStructureHandle(ql.FlatForward(today, ql.QuoteHandle(rate), dc)),
        ql.BlackVolTermStructureHandle(
            ql.BlackConstantVol(today, ql.NullCalendar(), ql.QuoteHandle(vol), dc)
        ),
    )
    engine = ql.AnalyticEuropeanEngine(process)
    rows: list[tuple[float, ...]] = []
    for days in DAYS:
        for m in MONEYNESS:
            for call in (True, False):
                option = ql.EuropeanOption(
                    ql.PlainVanillaPayoff(ql.Option.Call if call else ql.Option.Put, SPOT * m),
                    ql.EuropeanExercise(today + days),
                )
                option.setPricingEngine(engine)
                for sigma in VOLS:
                    for r, q in RATES:
                        vol.setValue(sigma)
                        rate.setValue(r)
                        div.setValue(q)
                        npv = option.NPV()
                        try:
                            ql_iv = option.impliedVolatility(npv, process, 1e-13, 1000, 1e-4, 5.0)
                        except RuntimeError:
                            ql_iv = np.nan
                        rows.append(
                            (
                                SPOT,
                                SPOT * m,
                                days / 365.0,
                                r,
                                q,
                                sigma,
                                float(call),
                                npv,
                                option.delta(),
                                option.gamma(),
                                option.vega(),
                                option.theta(),
                                option.thetaPerDay(),
                                option.rho(),
                                ql_iv,
                            )
                        )
    a = np.array(rows)
    names = ["price", "delta", "gamma", "vega", "theta", "theta_day", "rho", "iv"]
    return Grid(
        S=a[:, 0],
        K=a[:, 1],
        T=a[:, 2],
        r=a[:, 3],
        q=a[:, 4],
        sigma=a[:, 5],
        is_call=a[:, 6].astype(bool),
        ql={name: a[:, 7 + i] for i, name in enumerate(names)},
    )


def _assert_close(name: str, ours: np.ndarray, ref: np.ndarray, g: Grid) -> None:
    tol = np.maximum(1e-8 * np.abs(ref), 1e-12)
    bad = np.flatnonzero(~(np.abs(ours - ref) <= tol))
    if bad.size:
        i = int(bad[0])
        pytest.fail(
            f"{name}: {bad.size} mismatches; first K={g.K[i]} T={g.T[i]:.5f} r={g.r[i]} "
            f"q={g.q[i]} sigma={g.sigma[i]} call={g.is_call[i]}: v6={ours[i]!r} ql={ref[i]!r}"
        )


def test_grid_covers_the_brief(grid: Grid) -> None:
    assert grid.S.size == len(DAYS) * len(MONEYNESS) * 2 * len(VOLS) * len(RATES)
    assert grid.ql["price"].min() < 1e-100  # deep OTM really is deep
    assert (grid.ql["price"] > 0.5 * SPOT).any()  # deep ITM too


def test_prices_match_quantlib(grid: Grid) -> None:
    ours = bs_price(grid.S, grid.K, grid.T, grid.r, grid.q, grid.sigma, grid.is_call)
    _assert_close("price", ours, grid.ql["price"], grid)


@pytest.mark.parametrize("greek", ["price", "delta", "gamma", "vega", "theta", "rho"])
def test_greeks_match_quantlib(grid: Grid, greek: str) -> None:
    g = bs_greeks(grid.S, grid.K, grid.T, grid.r, grid.q, grid.sigma, grid.is_call)
    assert g.valid.all()
    _assert_close(greek, getattr(g, greek), grid.ql[greek], grid)


def test_theta_per_day_matches_quantlib(grid: Grid) -> None:
    g = bs_greeks(grid.S, grid.K, grid.T, grid.r, grid.q, grid.sigma, grid.is_call)
    _assert_close("theta_per_day", theta_per_day(g.theta), grid.ql["theta_day"], grid)


# ------------------------------------------------------------- high-precision reference

_PI = Decimal("3.14159265358979323846264338327950288419716939937510582097494")


def _hp_cdf(x: Decimal) -> Decimal:
    """Normal CDF to ~55 digits: Taylor series of erf near 0, Mills-ratio fraction beyond."""
    if abs(x) <= 3:
        z = x / Decimal(2).sqrt()
        total, term, n = Decimal(0), z, 0
        while True:
            t = term / (2 * n + 1)
            total += t
            if abs(t) < Decimal(10) ** -58:
                break
            n += 1
            term = -term * z * z / n
        return (1 + 2 / _PI.sqrt() * total) / 2
    a = abs(x)
    frac = a
    for k in range(600, 0, -1):
        frac = a + k / frac
    tail = (-a * a / 2).exp() / (2 * _PI).sqrt() / frac
    return tail if x < 0 else 1 - tail


def _hp_price(S: float, K: float, T: float, r: float, q: float, v: float, call: bool) -> float:
    with localcontext() as ctx:  # 60 digits, without touching the global context
        ctx.prec = 60
        s, k, t, rr, qq, vv = (Decimal(float(x)) for x in (S, K, T, r, q, v))  # exact
        d1 = ((s / k).ln() + (rr - qq + vv * vv / 2) * t) / (vv * t.sqrt())
        d2 = d1 - vv * t.sqrt()
        if call:
            value = s * (-qq * t).exp() * _hp_cdf(d1) - k * (-rr * t).exp() * _hp_cdf(d2)
        else:
            value = k * (-rr * t).exp() * _hp_cdf(-d2) - s * (-qq * t).exp() * _hp_cdf(-d1)
        return float(value)


def test_small_prices_match_high_precision_reference(grid: Grid) -> None:
    """Where QuantLib only agrees absolutely, V6 is still right to 1e-9 relative."""
    small = np.flatnonzero((grid.ql["price"] < 1e-4) & (grid.ql["price"] > 1e-250))
    pick = small[:: max(1, small.size // 60)]
    ours = bs_price(
        grid.S[pick],
        grid.K[pick],
        grid.T[pick],
        grid.r[pick],
        grid.q[pick],
        grid.sigma[pick],
        grid.is_call[pick],
    )
    ref = np.array(
        [
            _hp_price(
                grid.S[i],
                grid.K[i],
                grid.T[i],
                grid.r[i],
                grid.q[i],
                grid.sigma[i],
                bool(grid.is_call[i]),
            )
            for i in pick
        ]
    )
    rel = np.abs(ours - ref) / ref
    assert pick.size >= 30
    assert rel.max() < 1e-9
    # ...while QuantLib's relative error on the same prices is far larger:
    assert (np.abs(grid.ql["price"][pick] - ref) / ref).max() > 1e-8


# ------------------------------------------------------------------------- implied vol


def _pinned(price: np.ndarray, vega: np.ndarray, dsigma: float) -> np.ndarray:
    """Rows where a vol change of dsigma moves the price by > 64 ulps of the price.

    Elsewhere (deep ITM, hours to expiry) every vol in a band reproduces the same float
    price, so no solver can be held to a single answer.
    """
    return vega * dsigma > 64.0 * EPS * price


def test_iv_matches_quantlib(grid: Grid) -> None:
    price = grid.ql["price"]
    res = implied_vol(price, grid.S, grid.K, grid.T, grid.r, grid.q, grid.is_call)
    # Compare where QuantLib's own price is accurate (see module doc) and pins the vol.
    cmp = (price >= 1e-4) & _pinned(price, grid.ql["vega"], 1e-9) & np.isfinite(grid.ql["iv"])
    assert cmp.sum() > 0.6 * price.size  # 1431 of 2160; the rest are the extreme tails
    assert (res.reason[cmp] == IVReason.OK).all()
    err = np.abs(res.iv[cmp] - grid.ql["iv"][cmp])
    assert err.max() < 1e-6, f"max |v6 - ql| IV = {err.max():.3e}"
    assert np.abs(res.iv[cmp] - grid.sigma[cmp]).max() < 1e-9


def test_iv_recovers_sigma_across_the_grid_including_deep_otm(grid: Grid) -> None:
    """From V6's own (accurate) prices, every pinned grid point round-trips to 1e-8."""
    g = bs_greeks(grid.S, grid.K, grid.T, grid.r, grid.q, grid.sigma, grid.is_call)
    res = implied_vol(g.price, grid.S, grid.K, grid.T, grid.r, grid.q, grid.is_call)
    pinned = _pinned(g.price, g.vega, 1e-9) & (g.price > 1e-290)
    assert (g.price[pinned] < 1e-100).any()  # deep OTM included
    assert (res.reason[pinned] == IVReason.OK).all()
    err = np.abs(res.iv[pinned] - grid.sigma[pinned])
    assert err.max() < 1e-8, f"max IV error {err.max():.3e}"
    # Unpinned rows never yield a silent wrong number: either flagged, or a vol that
    # reproduces the price to rounding.
    loose = ~pinned & (res.reason == IVReason.OK)
    back = bs_price(grid.S, grid.K, grid.T, grid.r, grid.q, res.iv, grid.is_call)
    assert np.all(np.abs(back[loose] - g.price[loose]) <= 1e-12 * np.maximum(g.price[loose], 1))
