"""Implied vol: reason codes, no-arbitrage bounds, hard regions, strict mode."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from core.pricing import IVReason, PricingInputError, bs_price, implied_vol


def _iv(price, S=100.0, K=100.0, T=0.5, r=0.03, q=0.01, is_call=True, **kw):
    return implied_vol(price, S, K, T, r, q, is_call, **kw)


def test_reason_codes_cover_every_failure_and_keep_good_rows() -> None:
    S, K, T, r, q = 100.0, 90.0, 0.5, 0.03, 0.01
    disc_intrinsic = S * math.exp(-q * T) - K * math.exp(-r * T)  # call, ITM
    good = float(bs_price(S, K, T, r, q, 0.3, True))
    price = np.array(
        [
            good,
            math.nan,
            good,
            good,
            0.0,
            -1.0,
            disc_intrinsic * (1 - 1e-6),
            disc_intrinsic,
            S * math.exp(-q * T),
            1.5 * S,
            good,
            good,
        ]
    )
    spot = np.array([S, S, -S, S, S, S, S, S, S, S, math.nan, S])
    tte = np.array([T, T, T, 0.0, T, T, T, T, T, T, T, -1.0])
    res = implied_vol(price, spot, K, tte, r, q, True)
    R = IVReason
    expected = [
        R.OK,
        R.INVALID_INPUT,
        R.INVALID_INPUT,
        R.NON_POSITIVE_TIME,
        R.NON_POSITIVE_PRICE,
        R.NON_POSITIVE_PRICE,
        R.BELOW_INTRINSIC,
        R.BELOW_INTRINSIC,
        R.ABOVE_UPPER_BOUND,
        R.ABOVE_UPPER_BOUND,
        R.INVALID_INPUT,
        R.NON_POSITIVE_TIME,
    ]
    np.testing.assert_array_equal(res.reason, expected)
    assert res.iv[0] == pytest.approx(0.3, abs=1e-12)
    assert np.isnan(res.iv[1:]).all()
    assert res.reason.dtype == np.int8


def test_put_bounds_use_discounted_strike() -> None:
    S, K, T, r, q = 100.0, 120.0, 1.0, 0.05, 0.0
    upper = K * math.exp(-r * T)
    intrinsic = upper - S
    res = _iv(
        np.array([upper, upper * (1 - 1e-9), intrinsic, intrinsic + 0.5]),
        S=S,
        K=K,
        T=T,
        r=r,
        q=q,
        is_call="P",
    )
    np.testing.assert_array_equal(
        res.reason, [IVReason.ABOVE_UPPER_BOUND, IVReason.OK, IVReason.BELOW_INTRINSIC, IVReason.OK]
    )
    assert res.iv[1] > 5.0  # just under the bound means an enormous vol, still solved


@pytest.mark.parametrize(
    ("S", "K", "T", "sigma", "call"),
    [
        (100.0, 100.0, 1 / 365, 0.2, True),  # ATM, one day
        (100.0, 100.0, 1 / (365 * 24), 0.5, False),  # one hour
        (100.0, 300.0, 7 / 365, 0.3, True),  # price ~1e-80
        (100.0, 20.0, 30 / 365, 0.4, False),  # far OTM put
        (100.0, 55.0, 2.0, 0.15, True),  # deep ITM, long
        (100.0, 100.0, 2.0, 4.0, True),  # 400% vol
        (100.0, 100.0 * math.exp(0.02), 1.0, 0.25, True),  # strike exactly at forward
        (100.0, 100.0, 1.0, 1e-3, False),  # tiny vol
    ],
)
def test_hard_regions_converge(S: float, K: float, T: float, sigma: float, call: bool) -> None:
    price = bs_price(S, K, T, 0.03, 0.01, sigma, call)
    res = _iv(price, S=S, K=K, T=T, is_call=call)
    assert res.reason == IVReason.OK
    assert float(res.iv) == pytest.approx(sigma, rel=1e-9)


def test_batch_mixing_every_start_strategy_converges() -> None:
    # Below the forward-moneyness range of the start table (|ln F/K| < 1e-6, tiny vol),
    # beyond it (|ln F/K| = 61), ordinary rows, and one row above s_c: one batch.
    r, q = 0.03, 0.01
    grow = math.exp((r - q) / 365)
    S = np.full(5, 100.0)
    K = np.array(
        [
            100 * grow * (1 + 1e-8),
            100 * grow * (1 - 3e-7),
            100 * math.exp(61 + r - q),
            100 * math.exp(-61 + r - q),
            110.0,
        ]
    )
    T = np.array([1 / 365, 1 / 365, 1.0, 1.0, 0.5])
    sig = np.array([0.002, 0.003, 8.0, 8.0, 0.2])
    call = np.array([True, False, True, False, True])
    res = implied_vol(bs_price(S, K, T, r, q, sig, call), S, K, T, r, q, call)
    assert (res.reason == IVReason.OK).all()
    np.testing.assert_allclose(res.iv, sig, rtol=1e-10)


def test_itm_price_with_only_rounding_noise_is_flagged_not_solved() -> None:
    # 1-day deep ITM call: the true time value (~1e-200) is far below the price's ulp, so
    # the float price equals intrinsic plus rounding. Any vol would "fit": flag it.
    S, K, T, r = 100.0, 50.0, 1 / 365, 0.03
    price = bs_price(S, K, T, r, 0.0, 0.2, True)
    assert float(price) == pytest.approx(S - K * math.exp(-r * T), rel=1e-15)
    assert _iv(price, S=S, K=K, T=T, r=r, q=0.0).reason == IVReason.BELOW_INTRINSIC


def test_no_convergence_is_flagged_when_budget_runs_out() -> None:
    sig = np.array([0.15, 0.2, 0.9])
    price = bs_price(100.0, [80.0, 100.0, 180.0], 0.25, 0.03, 0.01, sig, True)
    res = _iv(price, K=[80.0, 100.0, 180.0], T=0.25, max_iter=1)
    assert (res.reason == IVReason.NO_CONVERGENCE).any()
    assert np.isnan(res.iv[res.reason == IVReason.NO_CONVERGENCE]).all()
    full = _iv(price, K=[80.0, 100.0, 180.0], T=0.25)
    assert (full.reason == IVReason.OK).all()
    np.testing.assert_allclose(full.iv, sig, rtol=1e-10)


def test_shapes_scalars_empty_and_polars() -> None:
    empty = implied_vol(np.array([]), 100.0, 100.0, 0.5, 0.0, 0.0, "C")
    assert empty.iv.shape == (0,) and empty.reason.shape == (0,)
    assert bs_price(np.array([]), 100.0, 0.5, 0.0, 0.0, 0.2, True).shape == (0,)
    one = _iv(bs_price(100.0, 100.0, 0.5, 0.03, 0.01, 0.2, True))
    assert one.iv.shape == () and one.reason.shape == ()
    K = np.array([[90.0, 100.0], [110.0, 120.0]])
    res = _iv(bs_price(100.0, K, 0.5, 0.03, 0.01, 0.3, "C"), K=K, is_call="C")
    assert res.iv.shape == (2, 2)
    np.testing.assert_allclose(res.iv, 0.3, rtol=1e-10)
    df = pl.DataFrame({"K": [90.0, 100.0, None], "right": ["P", "C", "C"]})
    px = pl.Series(bs_price(100.0, [90.0, 100.0, 100.0], 0.5, 0.03, 0.01, 0.25, ["P", "C", "C"]))
    res = _iv(px, K=df["K"], is_call=df["right"])
    np.testing.assert_array_equal(res.reason, [IVReason.OK, IVReason.OK, IVReason.INVALID_INPUT])


def test_strict_mode_raises_on_input_errors_naming_the_field() -> None:
    with pytest.raises(
        PricingInputError,
        match=r"price \(option price\) must be finite and > 0; got \[0\.0\] at index \[1\]",
    ):
        _iv(np.array([5.0, 0.0]), strict=True)
    with pytest.raises(PricingInputError, match=r"T \(time to expiry in years\).*got \[-1\.0\]"):
        _iv(5.0, T=-1.0, strict=True)


def test_strict_mode_raises_on_arbitrage_violations_with_the_fix() -> None:
    with pytest.raises(
        PricingInputError, match=r"BELOW_INTRINSIC at index 1 .*call price=9\.0.*use mid"
    ):
        _iv(np.array([12.0, 9.0]), K=90.0, strict=True)
    with pytest.raises(PricingInputError, match=r"ABOVE_UPPER_BOUND at index 0.*stale or crossed"):
        _iv(150.0, strict=True)
    # All-OK input returns normally in strict mode.
    ok = _iv(bs_price(100.0, 100.0, 0.5, 0.03, 0.01, 0.2, True), strict=True)
    assert ok.reason == IVReason.OK


def test_large_batch_mixed_with_junk_keeps_every_good_row_exact() -> None:
    rng = np.random.default_rng(3)
    n = 70_000  # spans several internal blocks
    S = rng.uniform(20, 500, n)
    T = np.exp(rng.uniform(math.log(1 / 365), math.log(2), n))
    sig = rng.uniform(0.05, 1.5, n)
    K = S * np.exp(rng.normal(0, 1, n) * sig * np.sqrt(T))
    call = rng.random(n) < 0.5
    price = bs_price(S, K, T, 0.02, 0.01, sig, call)
    junk = rng.random(n) < 0.05
    price[junk] = rng.choice([0.0, -1.0, math.nan], junk.sum())
    res = implied_vol(price, S, K, T, 0.02, 0.01, call)
    assert (res.reason[junk] != IVReason.OK).all()
    good = (res.reason == IVReason.OK) & ~junk
    assert good.sum() > 0.9 * n
    assert np.abs(res.iv[good] - sig[good]).max() < 1e-6
