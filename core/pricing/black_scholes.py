"""Vectorised Black-Scholes-Merton prices and greeks (European, continuous yield q).

Units, chosen to match what QuantLib's ``AnalyticEuropeanEngine`` reports so the two
can be compared number for number:

* ``price``: same currency units as ``S`` and ``K``, per unit of underlying (multiply
  by the contract multiplier yourself).
* ``delta``: dPrice/dS (spot delta, includes ``exp(-q T)``).
* ``gamma``: d2Price/dS2.
* ``vega``: dPrice/dsigma per 1.00 of vol (divide by 100 for "per vol point").
* ``theta``: dPrice/dt per year of calendar time (negative of dPrice/dT); use
  :func:`theta_per_day` for per calendar day (/365, as QuantLib's ``thetaPerDay``).
* ``rho``: dPrice/dr per 1.00 of rate (divide by 100 for "per 1%").

Inputs: ``S`` spot, ``K`` strike, ``T`` years to expiry, ``r`` continuously compounded
risk-free rate, ``q`` continuous dividend yield, ``sigma`` volatility (decimals), and
``is_call`` as booleans or right codes ('C'/'P'). Everything broadcasts like numpy; polars
Series work. Scalar inputs give 0-d arrays (``float(x)`` unwraps them).

Flagging vs strict (see :mod:`core.pricing.validation`): by default rows with
non-finite inputs, ``S, K, T, sigma <= 0`` come back as NaN in every output and
``valid`` is False there. ``T <= 0`` is NaN rather than intrinsic on purpose: an expired
contract is a bookkeeping event, and a silent intrinsic value would hide a stale chain.
With ``strict=True`` the same rows raise :class:`PricingInputError` instead.

Accuracy (tests/core/pricing): against a 60-digit reference, ~1e-13 relative for
ordinary strikes and within 1e-9 relative down to 1e-200 prices in the far wings, where
``S N(d1) - K N(d2)`` cancels. QuantLib agrees to 1e-8 relative wherever its own price
is above ~1e-6 of spot (below that its CDF loses relative precision, not ours).
Work runs in cache-sized blocks, and d1, d2, the CDFs and the density are shared by all
outputs, so price + five greeks cost about two normal-CDF evaluations per option.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import ndtr

from core.pricing.validation import (
    CHUNK,
    BoolArray,
    FloatArray,
    as_float_array,
    broadcast_flat,
    chunk,
    parse_right,
    validate_inputs,
)

__all__ = ["DAYS_PER_YEAR", "Greeks", "bs_greeks", "bs_price", "theta_per_day"]

DAYS_PER_YEAR: Final = 365.0
_INV_SQRT_2PI: Final = 0.3989422804014327


@dataclass(frozen=True, slots=True)
class Greeks:
    """Price and first-order greeks (plus gamma) of the same options, one array each.

    ``valid`` is False where inputs were rejected (those rows are NaN everywhere).
    """

    price: FloatArray
    delta: FloatArray
    gamma: FloatArray
    vega: FloatArray
    theta: FloatArray
    rho: FloatArray
    valid: BoolArray


def theta_per_day(theta: ArrayLike, days_per_year: float = DAYS_PER_YEAR) -> FloatArray:
    """Convert per-year theta to per-calendar-day theta (QuantLib ``thetaPerDay``)."""
    return as_float_array(theta, "theta") / days_per_year


class _Prepared(NamedTuple):
    """Flat (or 0-d broadcast) float inputs, the +1/-1 right sign, and the output shape."""

    s: FloatArray
    k: FloatArray
    t: FloatArray
    r: FloatArray
    q: FloatArray
    sigma: FloatArray
    w: FloatArray
    shape: tuple[int, ...]
    n: int


def _prepare(
    S: ArrayLike,
    K: ArrayLike,
    T: ArrayLike,
    r: ArrayLike,
    q: ArrayLike,
    sigma: ArrayLike,
    is_call: ArrayLike,
    strict: bool,
) -> _Prepared:
    """Coerce, optionally strict-check, and flatten the inputs for the chunked kernels."""
    arrays = [
        as_float_array(S, "S"),
        as_float_array(K, "K"),
        as_float_array(T, "T"),
        as_float_array(r, "r"),
        as_float_array(q, "q"),
        as_float_array(sigma, "sigma"),
    ]
    call = parse_right(is_call)
    if strict:
        validate_inputs(
            S=arrays[0], K=arrays[1], T=arrays[2], r=arrays[3], q=arrays[4], sigma=arrays[5]
        )
    w = call.astype(np.float64)
    w *= 2.0
    w -= 1.0
    try:
        flat, shape, n = broadcast_flat(*arrays, w)
    except ValueError as exc:
        shapes = [a.shape for a in arrays] + [call.shape]
        raise ValueError(
            f"S, K, T, r, q, sigma, is_call do not broadcast together (shapes {shapes}); "
            "pass equal-length arrays or scalars"
        ) from exc
    s_, k_, t_, r_, q_, sig_, w_ = flat
    return _Prepared(s_, k_, t_, r_, q_, sig_, w_, shape=shape, n=n)


def _ok(
    s: FloatArray, k: FloatArray, t: FloatArray, r: FloatArray, q: FloatArray, sig: FloatArray
) -> BoolArray:
    """Rows the formulas accept: positive finite S, K, T, sigma and finite r, q."""
    with np.errstate(invalid="ignore"):
        ok = (s > 0.0) & (s < np.inf) & (k > 0.0) & (k < np.inf) & (t > 0.0) & (t < np.inf)
        return ok & (sig > 0.0) & (sig < np.inf) & np.isfinite(r) & np.isfinite(q)


def bs_price(
    S: ArrayLike,
    K: ArrayLike,
    T: ArrayLike,
    r: ArrayLike,
    q: ArrayLike,
    sigma: ArrayLike,
    is_call: ArrayLike,
    *,
    strict: bool = False,
) -> FloatArray:
    """Black-Scholes-Merton price; NaN on rejected rows unless ``strict`` (then raise).

    Cheaper than :func:`bs_greeks` when only the price is needed (no density term).
    """
    p = _prepare(S, K, T, r, q, sigma, is_call, strict)
    out = np.empty(p.n)
    with np.errstate(all="ignore"):
        for a in range(0, max(p.n, 1), CHUNK):
            b = min(a + CHUNK, p.n)
            s, k, t = chunk(p.s, a, b), chunk(p.k, a, b), chunk(p.t, a, b)
            r_, q_, sig, w = (
                chunk(p.r, a, b),
                chunk(p.q, a, b),
                chunk(p.sigma, a, b),
                chunk(p.w, a, b),
            )
            sst = sig * np.sqrt(t)
            d1 = (np.log(s / k) + (r_ - q_ + 0.5 * sig * sig) * t) / sst
            d2 = d1 - sst
            price = w * (s * np.exp(-q_ * t) * ndtr(w * d1) - k * np.exp(-r_ * t) * ndtr(w * d2))
            out[a:b] = np.where(_ok(s, k, t, r_, q_, sig), price, np.nan)
    return out.reshape(p.shape)


def bs_greeks(
    S: ArrayLike,
    K: ArrayLike,
    T: ArrayLike,
    r: ArrayLike,
    q: ArrayLike,
    sigma: ArrayLike,
    is_call: ArrayLike,
    *,
    strict: bool = False,
) -> Greeks:
    """Price, delta, gamma, vega, theta and rho in one pass (units in the module doc).

    d1, d2, the two CDFs and the density are computed once and shared, which is most of
    the cost; computing each greek separately would repeat them six times.
    """
    p = _prepare(S, K, T, r, q, sigma, is_call, strict)
    n = p.n
    o_price, o_delta, o_gamma = np.empty(n), np.empty(n), np.empty(n)
    o_vega, o_theta, o_rho = np.empty(n), np.empty(n), np.empty(n)
    o_valid = np.empty(n, dtype=np.bool_)
    with np.errstate(all="ignore"):
        for a in range(0, max(n, 1), CHUNK):
            b = min(a + CHUNK, n)
            s, k, t = chunk(p.s, a, b), chunk(p.k, a, b), chunk(p.t, a, b)
            r_, q_, sig, w = (
                chunk(p.r, a, b),
                chunk(p.q, a, b),
                chunk(p.sigma, a, b),
                chunk(p.w, a, b),
            )
            sqrt_t = np.sqrt(t)
            sst = sig * sqrt_t
            d1 = (np.log(s / k) + (r_ - q_ + 0.5 * sig * sig) * t) / sst
            d2 = d1 - sst
            disc_q = np.exp(-q_ * t)
            s_disc = s * disc_q
            cdf1 = ndtr(w * d1)
            cdf2 = ndtr(w * d2)
            s_pdf = s_disc * np.exp(-0.5 * d1 * d1)
            s_pdf *= _INV_SQRT_2PI
            a_term = s_disc * cdf1
            b_term = k * np.exp(-r_ * t) * cdf2
            ok = _ok(s, k, t, r_, q_, sig)
            o_valid[a:b] = ok
            o_price[a:b] = w * (a_term - b_term)
            o_delta[a:b] = w * disc_q * cdf1
            o_gamma[a:b] = s_pdf / (s * s * sst)
            o_vega[a:b] = s_pdf * sqrt_t
            o_theta[a:b] = w * (q_ * a_term - r_ * b_term) - 0.5 * s_pdf * sig / sqrt_t
            o_rho[a:b] = w * t * b_term
    outs = [o_price, o_delta, o_gamma, o_vega, o_theta, o_rho]
    if not o_valid.all():
        bad = ~o_valid
        for o in outs:
            o[bad] = np.nan
    shp = p.shape
    return Greeks(
        price=o_price.reshape(shp),
        delta=o_delta.reshape(shp),
        gamma=o_gamma.reshape(shp),
        vega=o_vega.reshape(shp),
        theta=o_theta.reshape(shp),
        rho=o_rho.reshape(shp),
        valid=o_valid.reshape(shp),
    )
