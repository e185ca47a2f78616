"""Volatility surface: SSVI smiles, a surface generator, smile fits and skew measures.

Parametrisation: each expiry's smile is an SSVI slice (Gatheral-Jacquier) in forward
log-moneyness ``k = ln(K/F)``::

    w(k) = theta/2 * (1 + rho*phi*k + sqrt((phi*k + rho)^2 + 1 - rho^2)),  IV = sqrt(w/T)

with ``theta`` the ATM total variance (``IV_atm^2 T``), ``rho`` the skew (negative = put
skew, as in equity indices) and ``phi`` the curvature. Why SSVI and not five-parameter
raw SVI or a quadratic: three parameters per expiry with meanings a trader recognises,
wings that grow linearly in ``k`` (a quadratic explodes, and breaks Lee's moment bound),
and a least-squares fit that is well conditioned enough to recover its own parameters.

:class:`VolSurface` ties the slices together for a market simulator:
``IV_atm(T) = atm_vol * (T/ref_T)^term_slope`` and the power-law curvature
``phi(theta) = eta / (theta^gamma * (1+theta)^(1-gamma))``, which makes ATM skew decay
like ``T^-1/2`` (steep short-dated skew, flatter long-dated, as observed). The surface
is free of static arbitrage when ``term_slope > -1/2`` (ATM total variance grows with T),
``0 < gamma <= 1/2`` and ``eta * (1 + |rho|) <= 2``; the constructor enforces these.

Skew measures (:func:`skew_metrics`) use forward (undiscounted) delta ``N(d1)``, the
convention of vol-surface quoting, so they depend on the smile only, not on r or q.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from enum import IntEnum
from typing import Final, NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import least_squares
from scipy.special import ndtri

from core.pricing.implied_vol import IVReason, implied_vol
from core.pricing.validation import FloatArray, as_float_array

__all__ = [
    "HistoryReason",
    "IVStat",
    "SkewMetrics",
    "SmileFit",
    "SmileParams",
    "VolSurface",
    "fit_smile",
    "iv_percentile",
    "iv_rank",
    "skew_metrics",
    "ssvi_total_variance",
]

logger = logging.getLogger(f"v6.{__name__}")

_RHO_MAX: Final = 0.999
_DEFAULT_MIN_HISTORY: Final = 20


def ssvi_total_variance(
    k: ArrayLike, theta: ArrayLike, rho: ArrayLike, phi: ArrayLike
) -> FloatArray:
    """SSVI total implied variance w(k) (all arguments broadcast)."""
    kk = as_float_array(k, "k")
    th = as_float_array(theta, "theta")
    rh = as_float_array(rho, "rho")
    ph = as_float_array(phi, "phi")
    pk = ph * kk
    return 0.5 * th * (1.0 + rh * pk + np.sqrt((pk + rh) ** 2 + (1.0 - rh * rh)))


@dataclass(frozen=True, slots=True)
class SmileParams:
    """One expiry's SSVI smile: ``T`` in years, ``theta`` ATM total variance, ``rho``, ``phi``."""

    T: float
    theta: float
    rho: float
    phi: float

    @property
    def atm_vol(self) -> float:
        """ATM (k = 0, strike = forward) implied vol."""
        return math.sqrt(self.theta / self.T)

    def total_variance(self, k: ArrayLike) -> FloatArray:
        """Total implied variance at forward log-moneyness k."""
        return ssvi_total_variance(k, self.theta, self.rho, self.phi)

    def iv_k(self, k: ArrayLike) -> FloatArray:
        """Implied vol at forward log-moneyness k = ln(K/F)."""
        return np.sqrt(self.total_variance(k) / self.T)

    def iv(self, strikes: ArrayLike, forward: float) -> FloatArray:
        """Implied vol at the given strikes for a forward F = S exp((r-q)T)."""
        return self.iv_k(np.log(as_float_array(strikes, "strikes") / forward))


@dataclass(frozen=True, slots=True)
class VolSurface:
    """A whole surface from five numbers, for simulators and as a fit prior.

    ``atm_vol``: ATM IV at ``ref_T`` years (default 30 days). ``term_slope``: elasticity
    of ATM IV to expiry (d ln IV_atm / d ln T; > 0 upward-sloping, as in calm equity
    markets). ``skew``: SSVI rho (< 0 puts richer than calls). ``eta`` and ``gamma``:
    power-law curvature ``phi(theta)``. Defaults resemble an equity index in a calm
    regime: 20% ATM at 30 days with a 25-delta risk reversal of about -6.5 vol points
    and an IV ratio of about 1.6 between the -1 sd put and +1 sd call strikes.
    """

    atm_vol: float = 0.20
    term_slope: float = 0.08
    skew: float = -0.7
    eta: float = 0.7
    gamma: float = 0.5
    ref_T: float = 30.0 / 365.0

    def __post_init__(self) -> None:
        checks = [
            ("atm_vol", self.atm_vol > 0.0 and math.isfinite(self.atm_vol), "a decimal > 0"),
            ("ref_T", self.ref_T > 0.0 and math.isfinite(self.ref_T), "years > 0"),
            ("term_slope", self.term_slope > -0.5, "> -0.5 (ATM total variance must grow)"),
            ("skew", -1.0 < self.skew < 1.0, "in (-1, 1), negative for put skew"),
            ("gamma", 0.0 < self.gamma <= 0.5, "in (0, 0.5]"),
            ("eta", self.eta > 0.0, "> 0"),
        ]
        for name, ok, need in checks:
            if not ok:
                raise ValueError(
                    f"VolSurface.{name}={getattr(self, name)!r} is invalid: must be {need}"
                )
        if self.eta * (1.0 + abs(self.skew)) > 2.0:
            raise ValueError(
                f"VolSurface.eta={self.eta!r} with skew={self.skew!r} allows butterfly "
                f"arbitrage (needs eta * (1 + |skew|) <= 2); lower eta to <= "
                f"{2.0 / (1.0 + abs(self.skew)):.4f} or flatten the skew"
            )

    def atm_vol_at(self, T: ArrayLike) -> FloatArray:
        """ATM implied vol term structure."""
        t = as_float_array(T, "T")
        return self.atm_vol * (t / self.ref_T) ** self.term_slope

    def theta_at(self, T: ArrayLike) -> FloatArray:
        """ATM total variance theta(T)."""
        t = as_float_array(T, "T")
        return self.atm_vol_at(t) ** 2 * t

    def phi_at(self, theta: ArrayLike) -> FloatArray:
        """Power-law curvature phi(theta)."""
        th = as_float_array(theta, "theta")
        return self.eta / (th**self.gamma * (1.0 + th) ** (1.0 - self.gamma))

    def smile(self, T: float) -> SmileParams:
        """The SSVI slice at expiry T (years)."""
        if not (T > 0.0 and math.isfinite(T)):
            raise ValueError(f"VolSurface.smile: T={T!r} must be finite and > 0 (years)")
        theta = float(self.theta_at(T))
        return SmileParams(T=float(T), theta=theta, rho=self.skew, phi=float(self.phi_at(theta)))

    def iv_k(self, k: ArrayLike, T: ArrayLike) -> FloatArray:
        """Implied vol at forward log-moneyness k and expiry T (broadcast)."""
        t = as_float_array(T, "T")
        theta = self.theta_at(t)
        w = ssvi_total_variance(k, theta, self.skew, self.phi_at(theta))
        return np.sqrt(w / t)

    def iv(
        self,
        spot: ArrayLike,
        strikes: ArrayLike,
        T: ArrayLike,
        r: ArrayLike = 0.0,
        q: ArrayLike = 0.0,
    ) -> FloatArray:
        """Implied vols for any (strike, expiry) pairs given spot, rate and yield.

        All arguments broadcast, so a whole chain (strikes x expiries) is one call;
        expiries <= 0 give NaN.
        """
        s = as_float_array(spot, "spot")
        k = as_float_array(strikes, "strikes")
        t = as_float_array(T, "T")
        rr = as_float_array(r, "r")
        qq = as_float_array(q, "q")
        with np.errstate(all="ignore"):
            log_m = np.log(k / s) - (rr - qq) * t
            out = self.iv_k(log_m, np.where(t > 0.0, t, np.nan))
        return np.asarray(out, dtype=np.float64)


# --------------------------------------------------------------------------- fitting


@dataclass(frozen=True, slots=True)
class SmileFit:
    """Result of :func:`fit_smile`; on failure ``params`` holds NaNs and ``success`` is False.

    ``rmse`` is in IV units (decimal vol) over the ``n_used`` quotes that survived
    cleaning (finite, positive, and for prices an OK implied vol).
    """

    params: SmileParams
    rmse: float
    n_used: int
    success: bool
    message: str


def _initial_guess(k: FloatArray, w: FloatArray) -> tuple[float, float, float]:
    """theta, rho, phi from a quadratic in k of total variance.

    w ~ c0 + c1 k + c2 k^2 near ATM, and SSVI has w(0) = theta, w'(0) = theta rho phi,
    w''(0) = theta phi^2 (1 - rho^2) / 2, which inverts in closed form.
    """
    theta0 = float(np.interp(0.0, k, w)) if k[0] <= 0.0 <= k[-1] else float(np.median(w))
    rho0, phi0 = -0.3, 1.0 / math.sqrt(max(theta0, 1e-8))
    if k.size >= 3 and np.ptp(k) > 0:
        c2, c1, c0 = np.polyfit(k, w, 2)
        if c0 > 0:
            theta0 = float(c0)
        a = c1 / theta0  # rho * phi
        phi2 = a * a + 4.0 * c2 / theta0
        if phi2 > 0 and math.isfinite(phi2):
            phi0 = math.sqrt(phi2)
            rho0 = float(np.clip(a / phi0, -0.95, 0.95))
    return max(theta0, 1e-10), rho0, phi0


def fit_smile(
    strikes: ArrayLike,
    T: float,
    *,
    spot: float,
    r: float = 0.0,
    q: float = 0.0,
    ivs: ArrayLike | None = None,
    mid_prices: ArrayLike | None = None,
    is_call: ArrayLike | None = None,
    min_points: int = 3,
    f_scale: float = 0.01,
) -> SmileFit:
    """Fit one expiry's SSVI smile to a chain's quotes by robust least squares.

    Give either ``ivs`` or ``mid_prices`` (+ ``is_call``): prices are first turned into
    implied vols and rows whose :class:`IVReason` is not OK are dropped, as are NaN,
    non-positive or non-finite quotes. Residuals are IV differences with a soft-L1 loss
    (``f_scale`` in vol units), so one bad quote bends the fit far less than in plain
    least squares. Argument errors (both or neither quote kind, T <= 0) raise
    ``ValueError``; too few usable quotes is a data condition and returns
    ``success=False`` with NaN params.
    """
    if (ivs is None) == (mid_prices is None):
        raise ValueError("fit_smile: pass exactly one of ivs= or mid_prices=")
    if not (T > 0.0 and math.isfinite(T)):
        raise ValueError(f"fit_smile: T={T!r} must be finite and > 0 (years to expiry)")
    if not (spot > 0.0 and math.isfinite(spot)):
        raise ValueError(f"fit_smile: spot={spot!r} must be finite and > 0")
    k_arr = as_float_array(strikes, "strikes").ravel()
    if mid_prices is not None:
        if is_call is None:
            raise ValueError("fit_smile: mid_prices= needs is_call= (booleans or 'C'/'P')")
        px = as_float_array(mid_prices, "mid_prices").ravel()
        res = implied_vol(px, spot, k_arr, T, r, q, is_call)
        vol = np.where(res.reason.ravel() == IVReason.OK, res.iv.ravel(), np.nan)
    else:
        assert ivs is not None
        vol = as_float_array(ivs, "ivs").ravel()
    if vol.shape != k_arr.shape:
        raise ValueError(
            f"fit_smile: strikes has {k_arr.size} rows but quotes have {vol.size}; pass one "
            "quote per strike"
        )
    forward = spot * math.exp((r - q) * T)
    with np.errstate(all="ignore"):
        k = np.log(k_arr / forward)
        use = np.isfinite(k) & np.isfinite(vol) & (vol > 0.0)
    k, vol = k[use], vol[use]
    nan_params = SmileParams(T=float(T), theta=math.nan, rho=math.nan, phi=math.nan)
    if k.size < max(min_points, 3):
        msg = f"only {k.size} usable quotes (need {max(min_points, 3)})"
        logger.info("fit_smile T=%.4f: %s", T, msg)
        return SmileFit(nan_params, math.nan, int(k.size), False, msg)
    order = np.argsort(k)
    k, vol = k[order], vol[order]
    x0 = np.array(_initial_guess(k, vol * vol * T))

    def residuals(x: FloatArray) -> FloatArray:
        w = ssvi_total_variance(k, x[0], x[1], x[2])
        return np.sqrt(np.maximum(w, 0.0) / T) - vol

    lower = np.array([1e-12, -_RHO_MAX, 1e-8])
    upper = np.array([np.inf, _RHO_MAX, np.inf])
    x0 = np.clip(x0, lower, np.minimum(upper, 1e12))
    sol = least_squares(
        residuals,
        x0,
        bounds=(lower, upper),
        loss="soft_l1",
        f_scale=f_scale,
        x_scale="jac",
        xtol=1e-14,
        ftol=1e-14,
        gtol=1e-14,
        max_nfev=2000,
    )
    params = SmileParams(
        T=float(T), theta=float(sol.x[0]), rho=float(sol.x[1]), phi=float(sol.x[2])
    )
    rmse = float(np.sqrt(np.mean(residuals(sol.x) ** 2)))
    return SmileFit(params, rmse, int(k.size), bool(sol.success), str(sol.message))


# ------------------------------------------------------------------------ skew measures


@dataclass(frozen=True, slots=True)
class SkewMetrics:
    """Skew measures of one expiry (IVs as decimals).

    ``put_call_ratio``: IV at K = F exp(-IV_atm sqrt T) over IV at K = F exp(+IV_atm sqrt T)
    (> 1 = put skew). ``rr25``: IV(25-delta call) - IV(25-delta put) (< 0 = put skew).
    """

    T: float
    atm_iv: float
    iv_put_1sd: float
    iv_call_1sd: float
    put_call_ratio: float
    iv_25d_put: float
    iv_25d_call: float
    rr25: float


def _delta_strike_k(smile: SmileParams, d1: float) -> float:
    """Log-moneyness where the forward delta's d1 equals ``d1``.

    d1 = (-k + w/2)/sqrt(w) with w = w(k), i.e. solve k = w(k)/2 - d1 sqrt(w(k)) by
    Newton from the flat-smile answer; no-arbitrage slices make this well behaved.
    """
    th, rh, ph = smile.theta, smile.rho, smile.phi
    k = 0.5 * th - d1 * math.sqrt(th)
    for _ in range(50):
        pk = ph * k + rh
        root = math.sqrt(pk * pk + 1.0 - rh * rh)
        w = 0.5 * th * (1.0 + rh * ph * k + root)
        dw = 0.5 * th * ph * (rh + pk / root)
        sw = math.sqrt(w)
        step = (k - 0.5 * w + d1 * sw) / (1.0 - 0.5 * dw + d1 * dw / (2.0 * sw))
        k -= step
        if abs(step) < 1e-14 * max(1.0, abs(k)):
            return k
    return math.nan


def skew_metrics(smile: SmileParams) -> SkewMetrics:
    """ATM IV, +/-1 sd put/call IV ratio and 25-delta risk reversal of one smile."""
    atm = smile.atm_vol
    sd = atm * math.sqrt(smile.T)
    iv_put_1sd = float(smile.iv_k(-sd))
    iv_call_1sd = float(smile.iv_k(sd))
    d25 = float(ndtri(0.25))  # call: N(d1) = 0.25; put: N(d1) = 0.75 so d1 = -d25
    k_call = _delta_strike_k(smile, d25)
    k_put = _delta_strike_k(smile, -d25)
    iv_25c = float(smile.iv_k(k_call)) if math.isfinite(k_call) else math.nan
    iv_25p = float(smile.iv_k(k_put)) if math.isfinite(k_put) else math.nan
    return SkewMetrics(
        T=smile.T,
        atm_iv=atm,
        iv_put_1sd=iv_put_1sd,
        iv_call_1sd=iv_call_1sd,
        put_call_ratio=iv_put_1sd / iv_call_1sd,
        iv_25d_put=iv_25p,
        iv_25d_call=iv_25c,
        rr25=iv_25c - iv_25p,
    )


# --------------------------------------------------------------------- IV rank, percentile


class HistoryReason(IntEnum):
    """Why an IV rank/percentile is (or is not) a number."""

    OK = 0
    EMPTY_HISTORY = 1  # no finite values at all
    TOO_SHORT = 2  # fewer finite values than min_history
    FLAT_HISTORY = 3  # max == min, rank undefined
    INVALID_CURRENT = 4  # current IV is NaN/inf/<= 0


class IVStat(NamedTuple):
    """A rank or percentile in [0, 100], or NaN with the reason."""

    value: float
    reason: HistoryReason


def _clean_history(
    history: ArrayLike, current: float, min_history: int
) -> tuple[FloatArray, IVStat | None]:
    h = as_float_array(history, "history").ravel()
    h = h[np.isfinite(h)]
    if not (math.isfinite(current) and current > 0.0):
        return h, IVStat(math.nan, HistoryReason.INVALID_CURRENT)
    if h.size == 0:
        return h, IVStat(math.nan, HistoryReason.EMPTY_HISTORY)
    if h.size < min_history:
        return h, IVStat(math.nan, HistoryReason.TOO_SHORT)
    return h, None


def iv_rank(
    history: ArrayLike, current: float, *, min_history: int = _DEFAULT_MIN_HISTORY
) -> IVStat:
    """IV rank = (current - min) / (max - min) * 100 over the (NaN-dropped) history.

    Clipped to [0, 100]: a current IV beyond the history's range is a new extreme, and
    a rank of 130 would break every threshold rule written against the usual scale.
    ``min_history`` (default 20 days) guards against ranking against a week of data.
    """
    h, bad = _clean_history(history, current, min_history)
    if bad is not None:
        return bad
    lo, hi = float(h.min()), float(h.max())
    if hi <= lo:
        return IVStat(math.nan, HistoryReason.FLAT_HISTORY)
    return IVStat(min(max((current - lo) / (hi - lo) * 100.0, 0.0), 100.0), HistoryReason.OK)


def iv_percentile(
    history: ArrayLike, current: float, *, min_history: int = _DEFAULT_MIN_HISTORY
) -> IVStat:
    """IV percentile = % of history days with IV strictly below ``current``."""
    h, bad = _clean_history(history, current, min_history)
    if bad is not None:
        return bad
    return IVStat(float(np.count_nonzero(h < current)) / h.size * 100.0, HistoryReason.OK)
