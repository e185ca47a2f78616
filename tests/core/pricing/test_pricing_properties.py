"""Property tests: parity, greeks vs finite differences, IV round trips, bound flags."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from core.pricing import IVReason, bs_greeks, bs_price, implied_vol

EPS = float(np.finfo(np.float64).eps)
# Derandomized: the suite is shared, so the same examples run every time (thousands of
# random examples ran while developing; the tolerances below account for what they found).
PROFILE = settings(max_examples=150, deadline=None, derandomize=True)

spots = st.floats(1.0, 2000.0)
expiries = st.floats(1.0 / 365.0, 3.0)
vols = st.floats(0.03, 3.0)
rates = st.floats(-0.01, 0.10)
yields = st.floats(0.0, 0.08)
rights = st.booleans()
# Strike as standard deviations from the forward: covers deep ITM to deep OTM at any
# vol and expiry, instead of mostly-hopeless strikes a raw range would give.
sds = st.floats(-8.0, 8.0)


def _strike(S: float, T: float, r: float, q: float, sigma: float, z: float) -> float:
    return S * math.exp((r - q) * T + z * sigma * math.sqrt(T))


@PROFILE
@given(spots, expiries, vols, rates, yields, sds)
def test_put_call_parity_for_price_and_greeks(S, T, sigma, r, q, z) -> None:
    K = _strike(S, T, r, q, sigma, z)
    g = bs_greeks(S, K, T, r, q, sigma, np.array([True, False]))
    dq, dr = math.exp(-q * T), math.exp(-r * T)
    scale = S + K
    assert abs((g.price[0] - g.price[1]) - (S * dq - K * dr)) <= 1e-12 * scale
    assert abs((g.delta[0] - g.delta[1]) - dq) <= 1e-13
    assert math.isclose(g.gamma[0], g.gamma[1], rel_tol=1e-12, abs_tol=1e-300)
    assert math.isclose(g.vega[0], g.vega[1], rel_tol=1e-12, abs_tol=1e-300)
    assert abs((g.rho[0] - g.rho[1]) - K * T * dr) <= 1e-12 * K * T
    theta_gap = q * S * dq - r * K * dr
    assert abs((g.theta[0] - g.theta[1]) - theta_gap) <= 1e-12 * scale


def _central(f, x: float, h: float) -> float:
    return (f(x + h) - f(x - h)) / (2.0 * h)


@PROFILE
@given(
    spots,
    st.floats(7.0 / 365.0, 3.0),
    st.floats(0.05, 2.0),
    rates,
    yields,
    st.floats(-3.0, 3.0),
    rights,
)
def test_greeks_equal_finite_differences(S, T, sigma, r, q, z, call) -> None:
    K = _strike(S, T, r, q, sigma, z)
    g = bs_greeks(S, K, T, r, q, sigma, call)

    def price(**kw: float) -> float:
        args = {"S": S, "K": K, "T": T, "r": r, "q": q, "sigma": sigma, "is_call": call}
        return float(bs_price(**{**args, **kw}))

    def delta_at(s: float) -> float:
        return float(bs_greeks(s, K, T, r, q, sigma, call).delta)

    hs = 1e-4 * S * sigma * math.sqrt(T)  # small against the distribution's width
    fd = {
        "delta": _central(lambda x: price(S=x), S, hs),
        "gamma": _central(delta_at, S, hs),
        "vega": _central(lambda x: price(sigma=x), sigma, 1e-5),
        "theta": -_central(lambda x: price(T=x), T, 1e-6),
        "rho": _central(lambda x: price(r=x), r, 1e-6),
    }
    # Absolute floors: FD rounding is ~eps * price / h in each greek's own units.
    scale = S + K
    floor = {
        "delta": 1e-9 * scale / S,
        "gamma": 1e-9 * scale / S**2,
        "vega": 1e-9 * scale,
        "theta": 1e-8 * scale,
        "rho": 1e-8 * scale,
    }
    for name, approx in fd.items():
        exact = float(getattr(g, name))
        assert abs(exact - approx) <= 1e-6 * abs(exact) + floor[name], (name, exact, approx)


@PROFILE
@given(
    spots, st.floats(1.0 / (365.0 * 24.0), 3.0), st.floats(0.01, 4.0), rates, yields, sds, rights
)
def test_iv_round_trips_price_to_iv_to_price(S, T, sigma, r, q, z, call) -> None:
    K = _strike(S, T, r, q, sigma, z)
    g = bs_greeks(S, K, T, r, q, sigma, call)
    price, vega = float(g.price), float(g.vega)
    assume(price > 1e-290)  # below that the price itself is a denormal
    res = implied_vol(price, S, K, T, r, q, call)
    reason = IVReason(int(res.reason))
    # Does the price pin sigma to 1e-9? In the money, the time value is the price minus
    # a forward-minus-strike that is itself rounded at the scale of S and K.
    itm = (K < S) if call else (K > S)
    pinned = vega * 1e-9 > 64.0 * EPS * (price + (S + K) * itm)
    if pinned:
        assert reason is IVReason.OK
        assert abs(float(res.iv) - sigma) <= 1e-8 * max(1.0, sigma)
    else:
        # The price cannot tell vols in a band apart: either we say so, or we return a
        # vol that reproduces the price; never a vol that reprices elsewhere.
        assert reason in (IVReason.OK, IVReason.BELOW_INTRINSIC)
    if reason is IVReason.OK:
        back = float(bs_price(S, K, T, r, q, float(res.iv), call))
        # For wings with tiny sigma*sqrt(T), S N(d1) - K N(d2) cancels and the price is
        # itself a noisy function of sigma (~1e-10 relative at s = 1e-4): far below a
        # tick, but it bounds how exactly any vol can reprice.
        rel = 1e-9 if sigma * math.sqrt(T) >= 1e-3 else 1e-8
        assert abs(back - price) <= rel * price + 64.0 * EPS * (S + K) * (not pinned)


@PROFILE
@given(
    spots,
    expiries,
    vols,
    rates,
    yields,
    st.floats(-4.0, 4.0),
    rights,
    st.floats(1e-9, 1.0),
    st.sampled_from(["below", "above", "zero", "expired"]),
)
def test_prices_outside_bounds_give_nan_and_the_right_reason(
    S, T, sigma, r, q, z, call, u, case
) -> None:
    K = _strike(S, T, r, q, sigma, z)
    fwd_s, fwd_k = S * math.exp(-q * T), K * math.exp(-r * T)
    intrinsic = max(fwd_s - fwd_k, 0.0) if call else max(fwd_k - fwd_s, 0.0)
    upper = fwd_s if call else fwd_k
    t = T
    if case == "below":
        assume(intrinsic > 1e-6 * upper)
        price, want = intrinsic * (1.0 - u), IVReason.BELOW_INTRINSIC
        if price <= 0.0:
            want = IVReason.NON_POSITIVE_PRICE
    elif case == "above":
        price, want = upper * (1.0 + u), IVReason.ABOVE_UPPER_BOUND
    elif case == "zero":
        price, want = -u * S, IVReason.NON_POSITIVE_PRICE
    else:
        price, want, t = upper * 0.5, IVReason.NON_POSITIVE_TIME, -u
    res = implied_vol(price, S, K, t, r, q, call)
    assert IVReason(int(res.reason)) is want
    assert math.isnan(float(res.iv))
