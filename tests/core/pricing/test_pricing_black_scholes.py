"""Black-Scholes-Merton: textbook values, units, input handling, flagging vs strict."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from core.pricing import (
    PricingInputError,
    bs_greeks,
    bs_price,
    parse_right,
    theta_per_day,
    validate_inputs,
)


def test_textbook_values() -> None:
    # Hull, Options Futures and Other Derivatives: S=42, K=40, r=10%, sigma=20%, T=0.5
    # gives call 4.76 and put 0.81; Haug's BSM example (S=100, K=95, q=5%, r=10%,
    # sigma=20%, T=0.5) gives put 2.4648.
    call, put = bs_price(42.0, 40.0, 0.5, 0.10, 0.0, 0.20, [True, False])
    assert call == pytest.approx(4.7594, abs=1e-4)
    assert put == pytest.approx(0.8086, abs=1e-4)
    assert float(bs_price(100.0, 95.0, 0.5, 0.10, 0.05, 0.20, "P")) == pytest.approx(
        2.4648, abs=1e-4
    )


def test_greek_units_are_per_unit_vol_rate_and_year() -> None:
    s, k, t, r, q, sig = 100.0, 105.0, 0.25, 0.04, 0.01, 0.3
    g = bs_greeks(s, k, t, r, q, sig, True)

    def p(**kw: float) -> float:
        args = {"S": s, "K": k, "T": t, "r": r, "q": q, "sigma": sig, "is_call": True}
        return float(bs_price(**{**args, **kw}))

    h = 1e-5
    assert float(g.vega) == pytest.approx((p(sigma=sig + h) - p(sigma=sig - h)) / (2 * h), rel=1e-7)
    assert float(g.rho) == pytest.approx((p(r=r + h) - p(r=r - h)) / (2 * h), rel=1e-7)
    # theta is dV/d(calendar time) per year: minus the derivative in T
    assert float(g.theta) == pytest.approx(-(p(T=t + h) - p(T=t - h)) / (2 * h), rel=1e-6)
    assert float(theta_per_day(g.theta)) == pytest.approx(float(g.theta) / 365.0)
    assert float(theta_per_day(g.theta, days_per_year=252)) == pytest.approx(float(g.theta) / 252)


def test_bs_price_equals_greeks_price_and_scalars_give_0d_arrays() -> None:
    g = bs_greeks(100.0, 90.0, 0.5, 0.02, 0.0, 0.25, False)
    p = bs_price(100.0, 90.0, 0.5, 0.02, 0.0, 0.25, False)
    assert isinstance(p, np.ndarray) and p.shape == ()
    assert g.price.shape == () and float(g.price) == float(p)
    assert bool(g.valid)


def test_broadcasting_a_chain_strikes_by_expiries() -> None:
    strikes = np.array([80.0, 90.0, 100.0, 110.0, 120.0])[None, :]
    expiries = np.array([7, 30, 90])[:, None] / 365.0
    g = bs_greeks(100.0, strikes, expiries, 0.03, 0.01, 0.2, True)
    assert g.price.shape == (3, 5) and g.valid.shape == (3, 5)
    # calls fall with strike and rise with expiry (r > q here)
    assert np.all(np.diff(g.price, axis=1) < 0)
    assert np.all(np.diff(g.price, axis=0) > 0)
    one = bs_price(100.0, 110.0, 30 / 365.0, 0.03, 0.01, 0.2, True)
    assert g.price[1, 3] == pytest.approx(float(one), rel=1e-15)


def test_polars_series_and_right_codes() -> None:
    df = pl.DataFrame(
        {
            "S": [100.0, 100.0, 100.0, 100.0],
            "K": [95.0, 95.0, 105.0, 105.0],
            "right": ["C", "P", "call", "PUT"],
        }
    )
    p = bs_price(df["S"], df["K"], 0.5, 0.03, 0.0, 0.25, df["right"])
    ref = bs_price(
        df["S"].to_numpy(),
        df["K"].to_numpy(),
        0.5,
        0.03,
        0.0,
        0.25,
        np.array([True, False, True, False]),
    )
    np.testing.assert_array_equal(p, ref)
    np.testing.assert_array_equal(parse_right(df["right"]), [True, False, True, False])
    np.testing.assert_array_equal(parse_right(pl.Series([True, False])), [True, False])


def test_unknown_right_always_raises_naming_it() -> None:
    with pytest.raises(
        PricingInputError, match=r"is_call: unknown option right\(s\) \['X'\] at index \[1\]"
    ):
        bs_price(100.0, 100.0, 1.0, 0.0, 0.0, 0.2, ["C", "X"])
    with pytest.raises(PricingInputError, match="dtype int64"):
        bs_price(100.0, 100.0, 1.0, 0.0, 0.0, 0.2, np.array([1, 0]))


BAD_ROWS = {
    "S": [100.0, 0.0, 100.0, 100.0, 100.0, 100.0, 100.0],
    "K": [100.0, 100.0, -5.0, 100.0, 100.0, 100.0, 100.0],
    "T": [0.5, 0.5, 0.5, 0.0, 0.5, 0.5, 0.5],
    "sigma": [0.2, 0.2, 0.2, 0.2, math.nan, -0.1, 0.2],
    "r": [0.01, 0.01, 0.01, 0.01, 0.01, 0.01, math.inf],
}


def test_flagging_mode_gives_nan_rows_and_keeps_good_rows() -> None:
    g = bs_greeks(
        BAD_ROWS["S"], BAD_ROWS["K"], BAD_ROWS["T"], BAD_ROWS["r"], 0.0, BAD_ROWS["sigma"], True
    )
    np.testing.assert_array_equal(g.valid, [True] + [False] * 6)
    for name in ("price", "delta", "gamma", "vega", "theta", "rho"):
        arr = getattr(g, name)
        assert np.isfinite(arr[0]), name
        assert np.isnan(arr[1:]).all(), name
    p = bs_price(
        BAD_ROWS["S"], BAD_ROWS["K"], BAD_ROWS["T"], BAD_ROWS["r"], 0.0, BAD_ROWS["sigma"], True
    )
    assert p[0] == g.price[0] and np.isnan(p[1:]).all()


@pytest.mark.parametrize(
    ("field", "value", "pattern"),
    [
        (
            "S",
            0.0,
            r"S \(spot \(underlying price\)\) must be finite and > 0; got \[0\.0\] at index \[2\]",
        ),
        ("K", -5.0, r"K \(strike\) must be finite and > 0; got \[-5\.0\] at index \[2\]"),
        ("T", 0.0, r"T \(time to expiry in years\) must be finite and > 0.*drop expired"),
        ("T", -0.1, r"T \(time to expiry in years\).*got \[-0\.1\] at index \[2\]"),
        ("sigma", math.nan, r"sigma \(volatility.*got \[nan\] at index \[2\].*0\.20 for 20%"),
        ("sigma", -0.2, r"sigma .*got \[-0\.2\] at index \[2\], 1 of 3 rows bad"),
        ("r", math.inf, r"r \(risk-free rate.*must be finite; got \[inf\]"),
        ("q", math.nan, r"q \(dividend yield.*0\.0 if none"),
    ],
)
def test_strict_mode_raises_naming_field_value_index_and_fix(
    field: str, value: float, pattern: str
) -> None:
    args = {"S": 100.0, "K": 100.0, "T": 0.5, "r": 0.01, "q": 0.0, "sigma": 0.2}
    args[field] = np.array([args[field], args[field], value])
    with pytest.raises(PricingInputError, match=pattern):
        bs_greeks(**args, is_call=True, strict=True)
    with pytest.raises(ValueError, match=pattern):  # it is a ValueError for callers
        bs_price(**args, is_call=True, strict=True)
    # ...and the flagging default just marks the row
    g = bs_greeks(**args, is_call=True)
    np.testing.assert_array_equal(g.valid, [True, True, False])


def test_validate_inputs_reports_count_and_first_indices() -> None:
    T = np.full(10, 0.5)
    T[[3, 4, 5, 6, 7, 8, 9]] = 0.0
    with pytest.raises(PricingInputError) as err:
        validate_inputs(S=100.0, T=T)
    msg = str(err.value)
    assert "at index [3, 4, 5, 6, 7] (first 5 shown), 7 of 10 rows bad" in msg
    validate_inputs(S=[1.0, 2.0], K=3.0, T=0.1, r=-0.01, q=0.0, sigma=[0.1, 5.0])  # fine


def test_strict_mode_rejects_mismatched_shapes_clearly() -> None:
    with pytest.raises(ValueError, match="do not broadcast"):
        bs_price([100.0, 101.0], [90.0, 95.0, 100.0], 0.5, 0.0, 0.0, 0.2, True)
    with pytest.raises(PricingInputError, match="do not broadcast"):
        validate_inputs(S=[100.0, 101.0], K=[90.0, 95.0, 100.0])


def test_non_numeric_input_names_the_field() -> None:
    with pytest.raises(PricingInputError, match="sigma: cannot convert"):
        bs_price(100.0, 100.0, 0.5, 0.0, 0.0, ["high"], True)


def test_extreme_but_valid_inputs_stay_finite() -> None:
    # Hours to expiry, 500% vol, strikes 100x apart: no NaN/inf leaks out.
    S = np.array([100.0, 100.0, 100.0, 100.0, 1e-3, 1e6])
    K = np.array([1.0, 1e4, 100.0, 100.0, 1e-3, 1e6])
    T = np.array([1 / 365 / 24, 1 / 365 / 24, 1e-6, 30.0, 1.0, 1.0])
    sig = np.array([0.2, 0.2, 5.0, 0.01, 0.3, 0.3])
    for call in (True, False):
        g = bs_greeks(S, K, T, 0.05, 0.02, sig, call)
        for name in ("price", "delta", "gamma", "vega", "theta", "rho"):
            assert np.isfinite(getattr(g, name)).all(), (name, call)
        assert (g.price >= 0).all() and (g.gamma >= 0).all() and (g.vega >= 0).all()
