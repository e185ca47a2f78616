"""Option listings: which expiries and strikes exist on a given trading day.

Strikes sit on the grids traders see (SPY/QQQ: $1 near the money, $5 further out; IWM:
$1 throughout) around a *reference* price, the previous session's close, so a chain is
stable for the whole day and a strike qualified at 09:31 still exists at 15:59.
Expiries are the next weeklies plus the next monthlies from the exchange calendar.
"""

from __future__ import annotations

import math
from datetime import date

import numpy as np
from numpy.typing import NDArray

from core.sim.calendar import MarketCalendar
from core.sim.instruments import UnderlyingProfile

FloatArray = NDArray[np.float64]


def strike_grid(profile: UnderlyingProfile, reference: float) -> FloatArray:
    """Sorted listed strikes around `reference` for this underlying's grid rules."""
    if not (math.isfinite(reference) and reference > 0):
        raise ValueError(f"reference price must be finite and > 0, got {reference}")
    fine, coarse = profile.fine_step, profile.coarse_step

    def steps(step: float, band: float) -> FloatArray:
        lo = math.ceil(reference * (1.0 - band) / step)
        hi = math.floor(reference * (1.0 + band) / step)
        out: FloatArray = np.arange(max(lo, 1), hi + 1, dtype=np.float64) * step
        return out

    grid = np.union1d(steps(fine, profile.fine_band), steps(coarse, profile.wide_band))
    return np.round(grid, 4)


def on_grid(profile: UnderlyingProfile, reference: float, strike: float) -> bool:
    """True when `strike` is one of the listed strikes for this reference price."""
    if not (math.isfinite(strike) and strike > 0):
        return False
    rel = abs(strike / reference - 1.0)

    def multiple(step: float) -> bool:
        return abs(strike / step - round(strike / step)) < 1e-6

    if rel <= profile.fine_band + 1e-12 and multiple(profile.fine_step):
        return True
    return rel <= profile.wide_band + 1e-12 and multiple(profile.coarse_step)


def listed_expiries(
    calendar: MarketCalendar, trading_day: date, weeklies: int, monthlies: int
) -> tuple[date, ...]:
    """Weeklies and monthlies listed on `trading_day` (a monthly Friday is one expiry)."""
    weekly = calendar.weekly_expiries(trading_day, weeklies)
    monthly = calendar.monthly_expiries(trading_day, monthlies)
    return tuple(sorted(set(weekly) | set(monthly)))
