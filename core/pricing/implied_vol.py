"""Vectorised Black-Scholes-Merton implied volatility with per-row reason codes.

Method (all numpy, iterating only on unconverged rows):

1. Move to normalised Black space: forward ``F = S exp((r-q)T)``, undiscounted price,
   ``x = ln(F/K)``. An in-the-money option is swapped for its out-of-the-money twin by
   put-call parity, so the solver only ever inverts the OTM price
   ``b(s) = exp(y/2) N(y/s + s/2) - exp(-y/2) N(y/s - s/2)`` with ``y = -|x| <= 0`` and
   ``s = sigma sqrt(T)``, normalised by ``sqrt(F K)``. Solving on the OTM side keeps
   deep ITM options as well conditioned as the input price allows.
2. ``ln b(s)`` is concave in ``s``, so a Newton step never jumps past the root from the
   left, and from the right it lands on the left. The solver iterates on
   ``f(s) = ln b(s) - ln(beta)`` (log space keeps deep OTM prices near 1e-200 as easy
   as ATM ones) with Halley steps, clipped to the region known to hold the root.
3. The start is close: the point ``s_c = sqrt(2|y|)`` (where ``d1 = 0``, so ``b`` needs
   one CDF) splits the problem. Below it (most listed options), a small table of exact
   roots, built once on first use, is interpolated (starts good to ~1e-4), with a
   three-term asymptotic model of ``ln b`` as the fallback outside the table; above
   it, the large-``s`` tail ``b_max - b ~ 2 cosh(y/2) N(-s/2)`` is inverted. Usually one
   or two Halley steps bring s to ~1e-13 relative accuracy.

Prices outside the no-arbitrage band never produce a number: they give NaN and a
:class:`IVReason`. Bounds used (European, with carry): ``max(S e^{-qT} - K e^{-rT}, 0)
< call < S e^{-qT}`` and ``max(K e^{-rT} - S e^{-qT}, 0) < put < K e^{-rT}``. A price
at intrinsic has no time value and so no positive vol: BELOW_INTRINSIC. So does an ITM
price whose time value is below ~16 ulps of the price: that "time value" is rounding
noise (a one-day deep ITM option's true time value can be 1e-200), and every vol in a
wide band would reproduce it.

Flagging vs strict: by default every row gets an IV (NaN when not OK) and a reason code;
``strict=True`` raises :class:`PricingInputError` on the first non-OK row instead.
"""

from __future__ import annotations

import functools
from enum import IntEnum
from typing import Final, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import ndtr, ndtri

from core.pricing.validation import (
    CHUNK,
    FloatArray,
    PricingInputError,
    as_float_array,
    broadcast_flat,
    chunk,
    parse_right,
    validate_inputs,
)

__all__ = ["IVReason", "IVResult", "implied_vol"]

_INV_SQRT_2PI: Final = 0.3989422804014327
# Stop once a Halley step moves s by less than this fraction of s: the relative error
# left after such a step is about d^3/4 ~ 1e-13, so no confirming extra iteration.
_STEP_TOL: Final = 1e-4
_MAX_ITER: Final = 40
_ITM_NOISE: Final = 16.0 * np.finfo(np.float64).eps
# Lower-region start table: |y| = |ln(F/K)| from 1e-6 to 60, 300 x 129 cells (310 KB).
_TAB_Y_MIN: Final = 1e-6
_TAB_Y_MAX: Final = 60.0
_TAB_A0: Final = float(np.log(_TAB_Y_MIN))
_TAB_A1: Final = float(np.log(_TAB_Y_MAX))
_TAB_NA: Final = 300
_TAB_NZ: Final = 129


class IVReason(IntEnum):
    """Why a row's implied vol is (or is not) a number. Precedence is top to bottom."""

    OK = 0
    INVALID_INPUT = 1  # NaN/inf in any input, or spot/strike <= 0
    NON_POSITIVE_TIME = 2  # T <= 0: expired, no vol to imply
    NON_POSITIVE_PRICE = 3  # price <= 0: no quote, not a price
    BELOW_INTRINSIC = 4  # price <= discounted intrinsic (+ rounding noise): no time value
    ABOVE_UPPER_BOUND = 5  # call >= S e^{-qT} or put >= K e^{-rT}
    NO_CONVERGENCE = 6  # solver did not settle within the iteration budget


class IVResult(NamedTuple):
    """Implied vols (decimal, per sqrt(year)) and an ``IVReason`` code per row."""

    iv: FloatArray
    reason: NDArray[np.int8]


def _lower_guess(y: FloatArray, lnb: FloatArray, sc: FloatArray, bc: FloatArray) -> FloatArray:
    """Start for roots below s_c: invert ln b ~ A - y^2/(2 s^2) + B ln(s/s_c).

    The y^2/(2 s^2) term is the exact small-s leading order; A and B match ln b and its
    slope at s_c, so the model is right at both ends of the region.
    """
    y2h = 0.5 * y * y
    lbc = np.log(bc)
    vc = _INV_SQRT_2PI * np.exp(0.5 * y)  # vega of b at s_c
    slope_b = sc * vc / bc + 0.5 * y  # B = s_c b'/b - y^2/s_c^2, and y^2/s_c^2 = -y/2
    inv_sc2 = 1.0 / (sc * sc)
    s = np.sqrt(y2h / (lbc - lnb + y2h * inv_sc2))
    for _ in range(3):
        m = lbc - lnb - y2h * (1.0 / (s * s) - inv_sc2) + slope_b * np.log(s / sc)
        dm = 2.0 * y2h / (s * s * s) + slope_b / s
        s = np.clip(s - m / dm, 1e-3 * s, sc)
    return s


def _upper_guess(y: FloatArray, beta: FloatArray, sc: FloatArray) -> FloatArray:
    """Start for roots above s_c: b_max - b ~ 2 cosh(y/2) N(-s/2), inverted."""
    bmax = np.exp(0.5 * y)
    gap = (bmax - beta) / (bmax + 1.0 / bmax)
    s = -2.0 * ndtri(np.clip(gap, 1e-300, 0.5))
    return np.maximum(s, sc)


@functools.cache
def _lower_table() -> tuple[float, float, int, FloatArray]:
    """Tabulated exact lower-region roots, built once on first use (~30 ms).

    Coordinates: ``a = ln|y|`` and ``zeta = 1/sqrt(1 + ln(b_c/beta))`` in (0, 1]; zeta
    spreads both regimes evenly (deep OTM, where s ~ zeta, and the near-ATM
    Bachelier-like regime, where s/s_c ~ beta/b_c). The stored value is
    ``s / (s_c zeta)``, which is smooth and bounded, so bilinear interpolation gives
    starts good to ~1e-4 and usually one Halley step finishes. Entries are solved by
    this module's own solver started from the analytic model guess.
    """
    a = np.linspace(_TAB_A0, _TAB_A1, _TAB_NA)
    zeta = np.maximum(np.linspace(0.0, 1.0, _TAB_NZ), 1e-3)
    y = -np.exp(np.repeat(a, _TAB_NZ))
    z = np.tile(zeta, _TAB_NA)
    sc = np.sqrt(-2.0 * y)
    with np.errstate(all="ignore"):
        lbc = np.log(0.5 * np.exp(0.5 * y) - np.exp(-0.5 * y) * ndtr(-sc))
        lnb = lbc - (1.0 / (z * z) - 1.0)
        ok = lnb > -700.0  # beta representable as a normal float
        sol, conv = _solve(y[ok], np.exp(lnb[ok]), _MAX_ITER, table=False)
    ratio = np.full(z.size, np.nan)
    ratio[ok] = np.where(conv, sol / (sc[ok] * z[ok]), np.nan)
    grid = ratio.reshape(_TAB_NA, _TAB_NZ)
    cols = np.arange(_TAB_NZ)
    for row in grid:  # far-tail cells whose beta underflows: nearest solved value
        fine = np.isfinite(row)
        if not fine.all():
            row[~fine] = np.interp(cols[~fine], cols[fine], row[fine])
    return float(a[0]), float(a[1] - a[0]), _TAB_NZ, grid.ravel()


def _table_guess(y: FloatArray, lnb: FloatArray, sc: FloatArray, lbc: FloatArray) -> FloatArray:
    """Bilinear lookup in :func:`_lower_table`; rows must have |y| inside its range."""
    a0, da, nz, flat = _lower_table()
    fa = (np.log(-y) - a0) / da
    ia = np.minimum(fa.astype(np.intp), _TAB_NA - 2)
    wa = fa - ia
    zeta = 1.0 / np.sqrt(1.0 + (lbc - lnb))
    fz = zeta * (nz - 1)
    iz = np.minimum(fz.astype(np.intp), nz - 2)
    wz = fz - iz
    i00 = ia * nz + iz
    r00, r01 = flat[i00], flat[i00 + 1]
    r10, r11 = flat[i00 + nz], flat[i00 + nz + 1]
    r = (r00 + (r01 - r00) * wz) * (1.0 - wa) + (r10 + (r11 - r10) * wz) * wa
    return np.minimum(r * sc * zeta, sc)


def _lower_start(
    y: FloatArray, lnb: FloatArray, sc: FloatArray, bc: FloatArray, table: bool
) -> FloatArray:
    """Table start where |y| is inside the table's range, analytic model elsewhere."""
    if not table:
        return _lower_guess(y, lnb, sc, bc)
    inside = (y < -_TAB_Y_MIN) & (y > -_TAB_Y_MAX)
    if inside.all():
        return _table_guess(y, lnb, sc, np.log(bc))
    out = _lower_guess(y, lnb, sc, bc)
    ti = np.flatnonzero(inside)
    if ti.size:
        out[ti] = _table_guess(y[ti], lnb[ti], sc[ti], np.log(bc[ti]))
    return out


def _solve(
    y: FloatArray, beta: FloatArray, max_iter: int, *, table: bool = True
) -> tuple[FloatArray, NDArray[np.bool_]]:
    """Solve b(y, s) = beta for s > 0; all rows must satisfy 0 < beta < exp(y/2)."""
    n = y.size
    lnb = np.log(beta)
    sc = np.sqrt(-2.0 * y)
    # At s_c, d1 = 0 so N(d1) = 1/2: one CDF instead of two.
    bc = 0.5 * np.exp(0.5 * y) - np.exp(-0.5 * y) * ndtr(-sc)
    lower = beta <= bc
    s = np.empty(n)
    lo = np.empty(n)
    hi = np.empty(n)
    li = np.flatnonzero(lower)
    ui = np.flatnonzero(~lower)
    if li.size:
        s[li] = _lower_start(y[li], lnb[li], sc[li], bc[li], table)
        lo[li] = 0.0
        hi[li] = sc[li]
    if ui.size:
        s[ui] = _upper_guess(y[ui], beta[ui], sc[ui])
        lo[ui] = sc[ui]
        hi[ui] = np.inf
    converged = np.zeros(n, dtype=np.bool_)
    # Per-row state, compacted as rows converge so later iterations only touch the rest.
    idx = np.arange(n)
    ya, sa, la, loa, hia = y, s.copy(), lnb, lo, hi
    eh = np.exp(0.5 * y)
    emh = 1.0 / eh
    for _ in range(max_iter):
        u = ya / sa
        h = 0.5 * sa
        b = eh * ndtr(u + h) - emh * ndtr(u - h)
        uu = u * u
        r1 = _INV_SQRT_2PI * np.exp(-0.5 * (uu + h * h)) / b  # f' = b'/b
        newton = (la - np.log(b)) / r1
        # Halley: with b'' = b' (y^2/s^3 - s/4), f''/f' simplifies to (u^2/s - s/4) - f'.
        den = 1.0 + 0.5 * newton * (uu / sa - 0.5 * h - r1)
        step = np.where((den > 0.5) & (den < 2.0), newton / den, newton)
        new = sa + step
        if not np.isfinite(new).all():
            # b underflowed to 0 at a far-too-small s: double s instead.
            new = np.where(np.isfinite(new), new, 2.0 * sa)
            step = np.where(np.isfinite(step), step, np.inf)
        # Keep iterates inside the region known to hold the root.
        new = np.minimum(np.maximum(new, np.maximum(loa, 0.25 * sa)), hia)
        # Far from the root Halley falls back to Newton, but then steps are large; once a
        # step is this small it was a Halley step and the error left is ~ step^3 / 4.
        done = np.abs(step) <= _STEP_TOL * sa
        sa = new
        if done.any():
            fin = idx[done]
            s[fin] = sa[done]
            converged[fin] = True
            keep = ~done
            if not keep.any():
                break
            idx, ya, sa, la, loa, hia, eh, emh = (
                idx[keep],
                ya[keep],
                sa[keep],
                la[keep],
                loa[keep],
                hia[keep],
                eh[keep],
                emh[keep],
            )
    return s, converged


def _iv_block(
    p: FloatArray,
    s: FloatArray,
    k: FloatArray,
    t: FloatArray,
    r: FloatArray,
    q: FloatArray,
    call: NDArray[np.bool_],
    m: int,
    max_iter: int,
) -> tuple[FloatArray, NDArray[np.int8]]:
    """Reasons and IVs for one block of m rows (inputs flat or 0-d broadcast)."""
    fwd = s * np.exp((r - q) * t)
    undisc = p * np.exp(r * t)
    diff = fwd - k
    intrinsic = np.maximum(np.where(call, diff, -diff), 0.0)
    upper = np.where(call, fwd, k)
    y = -np.abs(np.log(fwd / k))
    tv = undisc - intrinsic
    beta = tv / np.sqrt(fwd * k)
    # In the money the time value is a difference of two rounded numbers: below a few
    # ulps of the price it is noise, and any vol would "fit" it.
    floor = np.where(intrinsic > 0.0, _ITM_NOISE * (undisc + k), 0.0)
    # One pass decides the common case; NaN anywhere fails a comparison, so bad rows
    # (rare) drop out here and are classified separately below.
    good = (t > 0.0) & (p > 0.0) & (s > 0.0) & (k > 0.0) & (tv > floor)
    good = np.broadcast_to(good & (undisc < upper) & (beta < np.exp(0.5 * y)), (m,))
    y = np.broadcast_to(y, (m,))
    beta = np.broadcast_to(beta, (m,))
    sqrt_t = np.broadcast_to(np.sqrt(t), (m,))
    if good.all():
        reason = np.zeros(m, dtype=np.int8)
        sol, conv = _solve(y, beta, max_iter)
        iv = sol / sqrt_t
        failed = np.flatnonzero(~conv)
    else:
        reason = _classify(p, s, k, t, r, q, undisc, upper, tv, floor, beta, y, m)
        iv = np.full(m, np.nan)
        gi = np.flatnonzero(reason == IVReason.OK)
        if not gi.size:
            return iv, reason
        sol, conv = _solve(y[gi], beta[gi], max_iter)
        iv[gi] = sol / sqrt_t[gi]
        failed = gi[~conv]
    if failed.size:
        reason[failed] = IVReason.NO_CONVERGENCE
        iv[failed] = np.nan
    return iv, reason


def _classify(
    p: FloatArray,
    s: FloatArray,
    k: FloatArray,
    t: FloatArray,
    r: FloatArray,
    q: FloatArray,
    undisc: FloatArray,
    upper: FloatArray,
    tv: FloatArray,
    floor: FloatArray,
    beta: FloatArray,
    y: FloatArray,
    m: int,
) -> NDArray[np.int8]:
    """Reason code per row, applying the IVReason precedence (only for blocks with junk)."""
    finite = np.isfinite(p) & np.isfinite(t) & np.isfinite(r) & np.isfinite(q)
    invalid = ~(finite & (s > 0.0) & (s < np.inf) & (k > 0.0) & (k < np.inf))
    no_time = ~invalid & (t <= 0.0)
    no_price = ~invalid & ~no_time & (p <= 0.0)
    pending = ~(invalid | no_time | no_price)
    below = pending & ~(tv > floor)
    above = pending & ~below & ((undisc >= upper) | ~(beta < np.exp(0.5 * y)))
    reason = np.zeros(m, dtype=np.int8)
    for mask, code in (
        (invalid, IVReason.INVALID_INPUT),
        (no_time, IVReason.NON_POSITIVE_TIME),
        (no_price, IVReason.NON_POSITIVE_PRICE),
        (below, IVReason.BELOW_INTRINSIC),
        (above, IVReason.ABOVE_UPPER_BOUND),
    ):
        reason[np.broadcast_to(mask, (m,))] = code
    return reason


def implied_vol(
    price: ArrayLike,
    S: ArrayLike,
    K: ArrayLike,
    T: ArrayLike,
    r: ArrayLike,
    q: ArrayLike,
    is_call: ArrayLike,
    *,
    strict: bool = False,
    max_iter: int = _MAX_ITER,
) -> IVResult:
    """Implied vol for every row, with an :class:`IVReason` code per row.

    ``price`` is the option premium in the units of ``S``/``K``; the other inputs are as
    in :func:`core.pricing.bs_price`. Rows whose reason is not OK get NaN. With
    ``strict=True`` the first non-OK row raises :class:`PricingInputError` naming it.
    """
    arrays = [
        as_float_array(price, "price"),
        as_float_array(S, "S"),
        as_float_array(K, "K"),
        as_float_array(T, "T"),
        as_float_array(r, "r"),
        as_float_array(q, "q"),
    ]
    call = parse_right(is_call)
    if strict:
        validate_inputs(
            price=arrays[0], S=arrays[1], K=arrays[2], T=arrays[3], r=arrays[4], q=arrays[5]
        )
    try:
        flat, shape, n = broadcast_flat(*arrays, call)
    except ValueError as exc:
        shapes = [a.shape for a in arrays] + [call.shape]
        raise ValueError(
            f"price, S, K, T, r, q, is_call do not broadcast together (shapes {shapes}); "
            "pass equal-length arrays or scalars"
        ) from exc
    iv = np.empty(n)
    reason = np.empty(n, dtype=np.int8)
    with np.errstate(all="ignore"):
        for a in range(0, n, CHUNK):
            b = min(a + CHUNK, n)
            pb, sb, kb, tb, rb, qb, cb = (chunk(x, a, b) for x in flat)
            iv[a:b], reason[a:b] = _iv_block(pb, sb, kb, tb, rb, qb, cb, b - a, max_iter)
    if strict:
        _raise_first_problem(reason, *(np.broadcast_to(x, (n,)) for x in flat))
    return IVResult(iv=iv.reshape(shape), reason=reason.reshape(shape))


_REASON_FIX: Final[dict[int, str]] = {
    IVReason.BELOW_INTRINSIC: (
        "price is at or below discounted intrinsic value, so no positive vol fits; check "
        "the quote side (use mid, not bid), the dividend yield q and the rate r"
    ),
    IVReason.ABOVE_UPPER_BOUND: (
        "price is at or above the no-arbitrage maximum (S e^{-qT} for a call, K e^{-rT} "
        "for a put); the quote is stale or crossed"
    ),
    IVReason.NO_CONVERGENCE: (
        "the solver did not converge; the time value is too small relative to the price "
        "to pin down a vol - treat this row as unquotable"
    ),
}


def _raise_first_problem(
    reason: NDArray[np.int8],
    price: FloatArray,
    s: FloatArray,
    k: FloatArray,
    t: FloatArray,
    r: FloatArray,
    q: FloatArray,
    call: NDArray[np.bool_],
) -> None:
    """Strict mode: turn the first non-OK row into a PricingInputError with its fix."""
    bad = np.flatnonzero(reason != IVReason.OK)
    if not bad.size:
        return
    i = int(bad[0])
    code = IVReason(int(reason[i]))
    fix = _REASON_FIX.get(code, "check the inputs")
    right = "call" if bool(call[i]) else "put"
    raise PricingInputError(
        f"price: {code.name} at index {i} ({bad.size} of {reason.size} rows not OK): "
        f"{right} price={float(price[i])!r}, S={float(s[i])!r}, K={float(k[i])!r}, "
        f"T={float(t[i])!r}, r={float(r[i])!r}, q={float(q[i])!r}. Fix: {fix}."
    )
