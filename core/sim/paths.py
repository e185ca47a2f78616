"""Minute price paths for one session, generated in one vectorised pass.

Model (all in log space, one grid point per Globex minute of the session):

* Drivers: one per future (ES, NQ, RTY...) plus a synthetic one for any underlying
  without a leading future. Minute returns are equicorrelated Gaussians scaled by the
  regime's vol, the driver's beta and an intraday shape (U-shaped in regular hours,
  quiet overnight), plus a regime drift (trend) or a scripted drop (crash, with the
  regular-hours noise bridged to zero so the drop is exact).
* Underlyings follow their driver with a lag: u[k] = f[k - lag] + basis + e[k], where e
  is a small AR(1) noise. So the underlying's minute return at t is the future's at
  t - lag plus small noise, which is the lead-lag the analysis layer looks for.
* VIX: log VIX is an AR(1) (Ornstein-Uhlenbeck) toward the regime's target, pushed up
  by market down-moves (negative return beta) plus vol-of-vol noise.

Each session draws from its own Generator seeded by (seed, date), and carries only a
small end state to the next, so any day can be regenerated bit for bit and a simulated
year is a few hundred vectorised passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Final

import numpy as np
from numpy.typing import NDArray
from scipy.signal import lfilter

from core.domain.regimes import Regime
from core.sim.regimes import REGIME_SPECS

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

TRADING_DAYS: Final = 252
OVERNIGHT_SHAPE: Final = 0.3
VIX_RETURN_BETA: Final = 4.0  # d log VIX per unit market log return (negative correlation)
VIX_NOISE: Final = 0.0012  # per-minute vol of log VIX in regular hours
UNDERLYING_NOISE: Final = 0.25  # AR noise innovation, as a fraction of the driver's minute vol
UNDERLYING_NOISE_PHI: Final = 0.9
BAR_EXTENSION: Final = 0.5  # intra-minute high/low reach, in minute vols
VIX_MIN, VIX_MAX = 9.0, 90.0


@dataclass(frozen=True, slots=True)
class PathModel:
    """Everything about the paths that does not change from day to day."""

    seed: int
    driver_betas: FloatArray  # (D,)
    driver_volumes: FloatArray  # (D,) contracts per session
    underlying_driver: IntArray  # (U,) driver index each underlying follows
    underlying_volumes: FloatArray  # (U,) shares per regular session
    lead_minutes: int
    correlation: float = 0.85

    def __post_init__(self) -> None:
        if self.lead_minutes < 0:
            raise ValueError(f"lead_minutes must be >= 0, got {self.lead_minutes}")
        if not 0.0 <= self.correlation < 1.0:
            raise ValueError(f"correlation must be in [0, 1), got {self.correlation}")

    @property
    def n_drivers(self) -> int:
        return len(self.driver_betas)

    @property
    def n_underlyings(self) -> int:
        return len(self.underlying_driver)


@dataclass(frozen=True, slots=True)
class DayState:
    """What one session hands to the next: levels, the lag tail, AR and VIX state."""

    driver_log: FloatArray  # (D,) last log level
    driver_tail: FloatArray  # (D, lag) the last `lag` points before the end point
    underlying_noise: FloatArray  # (U,)
    underlying_basis: FloatArray  # (U,) log(underlying / driver), fixed from the start
    vix_log: float
    vix_target_log: float
    vix_kappa: float


@dataclass(frozen=True, slots=True)
class DayPaths:
    """One session's minute grid. Point k is time t0 + 60 k; bar k spans points k..k+1."""

    day: date
    regime: Regime
    t0: int
    n: int
    rth_lo: int  # grid point of the regular open
    rth_hi: int  # grid point of the regular close
    driver_log: FloatArray  # (D, n+1)
    underlying_log: FloatArray  # (U, n+1) fair value (trades only in regular hours)
    vix_log: FloatArray  # (n+1,)
    driver_ext: FloatArray  # (2, D, n) high/low reach beyond max/min(open, close), log
    underlying_ext: FloatArray  # (2, U, n)
    vix_ext: FloatArray  # (2, n)
    driver_volume: IntArray  # (D, n)
    underlying_volume: IntArray  # (U, n)
    end: DayState


def initial_state(
    model: PathModel,
    driver_start: FloatArray,
    underlying_start: FloatArray,
    vix: float,
    regime: Regime,
) -> DayState:
    """State before the first simulated session: start levels, flat lag tail."""
    d_log = np.log(driver_start)
    u_log = np.log(underlying_start)
    spec = REGIME_SPECS[regime]
    return DayState(
        driver_log=d_log,
        driver_tail=np.repeat(d_log[:, None], model.lead_minutes, axis=1),
        underlying_noise=np.zeros(model.n_underlyings),
        underlying_basis=u_log - d_log[model.underlying_driver],
        vix_log=float(np.log(vix)),
        vix_target_log=float(np.log(spec.vix_target)),
        vix_kappa=float(np.log(2.0) / spec.vix_half_life_min),
    )


def _shape(n: int, lo: int, hi: int) -> FloatArray:
    """Relative minute vol: U-shaped in regular hours, flat and quiet outside."""
    shape = np.full(n, OVERNIGHT_SHAPE)
    m = hi - lo
    if m > 0:
        x = (np.arange(m) + 0.5) / m
        shape[lo:hi] = 1.0 + 0.8 * (2.0 * x - 1.0) ** 2
    return shape


def _equicorrelation_chol(d: int, rho: float) -> FloatArray:
    corr = np.full((d, d), rho)
    np.fill_diagonal(corr, 1.0)
    return np.linalg.cholesky(corr)


def generate_day(
    model: PathModel,
    day: date,
    regime: Regime,
    t0: int,
    n: int,
    rth_lo: int,
    rth_hi: int,
    prev: DayState,
) -> DayPaths:
    """One session's paths from the previous session's end state (pure function)."""
    if not 0 <= rth_lo <= rth_hi <= n:
        raise ValueError(f"bad session layout for {day}: rth {rth_lo}..{rth_hi} of {n} minutes")
    spec = REGIME_SPECS[regime]
    n_d, n_u, lag = model.n_drivers, model.n_underlyings, model.lead_minutes
    rng = np.random.default_rng([model.seed, day.toordinal(), 0xDA7])
    u_regime = rng.random(3)
    z_drv = rng.standard_normal((n, n_d))
    z_e = rng.standard_normal((n, n_u))
    z_vix = rng.standard_normal(n)
    ext_draw = np.abs(rng.standard_normal((2, n_d + n_u + 1, n)))
    vol_draw = rng.standard_normal((n_d + n_u, n))

    shape = _shape(n, rth_lo, rth_hi)
    sigma = spec.realized_vol * shape / np.sqrt(TRADING_DAYS * float(np.sum(shape * shape)))
    betas = model.driver_betas

    # -- drivers ------------------------------------------------------------------------
    noise = z_drv @ _equicorrelation_chol(n_d, model.correlation).T  # (n, D)
    noise *= sigma[:, None]
    drift = np.zeros(n)
    m_rth = rth_hi - rth_lo
    if spec.crash_range[1] > 0 and m_rth > 0:
        lo_c, hi_c = spec.crash_range
        drop = lo_c + (hi_c - lo_c) * u_regime[1]
        # bridge regular-hours noise so the scripted drop is exact, then spread the drop
        noise[rth_lo:rth_hi] -= noise[rth_lo:rth_hi].mean(axis=0)
        w_lo = rth_lo + min(45, m_rth // 4)
        w_hi = rth_hi - min(30, m_rth // 5)
        drift[w_lo:w_hi] = -drop / (w_hi - w_lo)
    elif spec.trend_range[1] > 0 and m_rth > 0:
        lo_t, hi_t = spec.trend_range
        sign = 1.0 if u_regime[0] < 0.5 else -1.0
        drift[rth_lo:rth_hi] = sign * (lo_t + (hi_t - lo_t) * u_regime[1]) / m_rth
    rets = (noise + drift[:, None]) * betas[None, :]  # (n, D)
    driver_log = np.empty((n_d, n + 1))
    driver_log[:, 0] = prev.driver_log
    np.cumsum(rets.T, axis=1, out=driver_log[:, 1:])
    driver_log[:, 1:] += prev.driver_log[:, None]

    # -- underlyings: lagged driver + small AR(1) noise -----------------------------------
    drv_idx = model.underlying_driver
    if lag:
        ext = np.concatenate([prev.driver_tail, driver_log], axis=1)  # point k-lag at [k]
        lagged = ext[drv_idx, : n + 1]
    else:
        lagged = driver_log[drv_idx]
    u_sigma = UNDERLYING_NOISE * sigma[None, :] * betas[drv_idx][:, None]  # (U, n)
    innov = z_e.T * u_sigma
    phi = UNDERLYING_NOISE_PHI
    e_tail, _ = lfilter(
        [1.0], [1.0, -phi], innov, axis=1, zi=(phi * prev.underlying_noise)[:, None]
    )
    e = np.concatenate([prev.underlying_noise[:, None], e_tail], axis=1)
    underlying_log = lagged + prev.underlying_basis[:, None] + e

    # -- VIX: OU in log space toward the regime target, driven by market returns ----------
    mkt_ret = np.diff(underlying_log[0]) if n_u else np.diff(driver_log[0])
    target = np.full(n, prev.vix_target_log)
    kappa = np.full(n, prev.vix_kappa)
    switch = rth_lo
    if spec.crash_range[1] > 0 and m_rth > 0:
        switch = rth_lo + min(45, m_rth // 4)
    target[switch:] = np.log(spec.vix_target)
    kappa[switch:] = np.log(2.0) / spec.vix_half_life_min
    vix_shape = np.where(shape > OVERNIGHT_SHAPE, 1.0, 0.5)
    drive = kappa * target - VIX_RETURN_BETA * mkt_ret + VIX_NOISE * vix_shape * z_vix
    vix_log = np.empty(n + 1)
    vix_log[0] = prev.vix_log
    # x[k] = (1 - kappa[k]) x[k-1] + drive[k]: time-varying AR(1), piecewise-constant kappa
    x0 = prev.vix_log
    start = 0
    for seg_end in (switch, n):
        if seg_end > start:
            a = 1.0 - float(kappa[start])
            seg, _ = lfilter([1.0], [1.0, -a], drive[start:seg_end], zi=[a * x0])
            vix_log[start + 1 : seg_end + 1] = seg
            x0 = float(seg[-1])
        start = seg_end
    np.clip(vix_log, np.log(VIX_MIN), np.log(VIX_MAX), out=vix_log)

    # -- bar decorations: intra-minute reach and volumes ---------------------------------
    reach = BAR_EXTENSION * sigma[None, :]
    driver_ext = ext_draw[:, :n_d, :] * (reach * betas[:, None])[None]
    underlying_ext = ext_draw[:, n_d : n_d + n_u, :] * (reach * betas[drv_idx][:, None])[None]
    vix_ext = ext_draw[:, -1, :] * (VIX_NOISE * vix_shape)[None, :]

    intensity = shape * shape
    vol_scale = np.sqrt(spec.realized_vol / 0.11)
    lognorm = np.exp(0.35 * vol_draw - 0.5 * 0.35**2)
    d_weights = intensity / intensity.sum()
    driver_volume = np.rint(model.driver_volumes[:, None] * d_weights[None, :] * vol_scale
                            * lognorm[:n_d]).astype(np.int64)  # fmt: skip
    u_weights = np.zeros(n)
    if m_rth > 0:
        u_weights[rth_lo:rth_hi] = intensity[rth_lo:rth_hi] / intensity[rth_lo:rth_hi].sum()
    underlying_volume = np.rint(model.underlying_volumes[:, None] * u_weights[None, :]
                                * vol_scale * lognorm[n_d:]).astype(np.int64)  # fmt: skip

    tail = driver_log[:, n - lag : n] if lag else np.empty((n_d, 0))
    if lag and n < lag:  # a session shorter than the lag keeps part of the old tail
        tail = np.concatenate([prev.driver_tail, driver_log[:, :n]], axis=1)[:, -lag:]
    end = DayState(
        driver_log=driver_log[:, n].copy(),
        driver_tail=tail.copy(),
        underlying_noise=e[:, n].copy(),
        underlying_basis=prev.underlying_basis,
        vix_log=float(vix_log[n]),
        vix_target_log=float(np.log(spec.vix_target)),
        vix_kappa=float(np.log(2.0) / spec.vix_half_life_min),
    )
    return DayPaths(
        day=day,
        regime=regime,
        t0=t0,
        n=n,
        rth_lo=rth_lo,
        rth_hi=rth_hi,
        driver_log=driver_log,
        underlying_log=underlying_log,
        vix_log=vix_log,
        driver_ext=driver_ext,
        underlying_ext=underlying_ext,
        vix_ext=vix_ext,
        driver_volume=driver_volume,
        underlying_volume=underlying_volume,
        end=end,
    )
