"""The simulator's "true" implied-vol surface and its bid/ask model.

The market's IV is driven by VIX: ATM 30-day vol of an underlying is VIX/100 times the
underlying's IV beta. Term structure bends toward a long-run level (contango when VIX is
low, inverted when it spikes), and each expiry's smile is the pricing package's SSVI
slice with equity put skew (puts rich, calls cheap, skew steepest short-dated). Option
prices and greeks are Black-Scholes-Merton (`core.pricing`) on that surface.

Spreads widen with vol and with distance from the money, because that is what market
makers do and what the fill model and slippage statistics must reproduce.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import NDArray

from core.pricing.black_scholes import Greeks, bs_greeks
from core.pricing.surface import VolSurface, ssvi_total_variance

FloatArray = NDArray[np.float64]

RISK_FREE: Final = 0.04
LONG_RUN_VOL: Final = 0.19  # ATM vol (for iv_beta 1) the term structure bends toward
TERM_DAYS: Final = 30.0
TERM_POWER: Final = 0.2
SMILE: Final = VolSurface()  # SSVI skew (rho -0.7) and curvature of an equity index
MIN_T: Final = 5.0 / (365.0 * 24.0 * 60.0)  # five minutes: below this greeks are numerically wild
OPTION_TICK: Final = 0.01


def atm_vol(t_years: FloatArray, vix: FloatArray, iv_beta: FloatArray) -> FloatArray:
    """ATM implied vol by expiry: VIX-anchored at 30 days, bending to the long-run level."""
    v30 = vix / 100.0 * iv_beta
    lr = LONG_RUN_VOL * iv_beta
    days = np.maximum(t_years * 365.0, 1.0)
    factor = np.minimum((TERM_DAYS / days) ** TERM_POWER, 3.0)
    return np.maximum(lr + (v30 - lr) * factor, 0.6 * v30)


def implied_vol(
    spot: FloatArray,
    strike: FloatArray,
    t_years: FloatArray,
    rate: float,
    div_yield: FloatArray,
    vix: FloatArray,
    iv_beta: FloatArray,
) -> FloatArray:
    """IV at (strike, expiry): the VIX-driven ATM term structure, shaped into an
    arbitrage-free SSVI smile with equity put skew (`core.pricing.surface`)."""
    t = np.maximum(t_years, MIN_T)
    atm = atm_vol(t, vix, iv_beta)
    fwd = spot * np.exp((rate - div_yield) * t)
    theta = atm * atm * t
    w = ssvi_total_variance(np.log(strike / fwd), theta, SMILE.skew, SMILE.phi_at(theta))
    iv: FloatArray = np.clip(np.sqrt(w / t), 0.03, 3.0)
    return iv


def moneyness_sd(
    spot: FloatArray, strike: FloatArray, t_years: FloatArray, iv: FloatArray
) -> FloatArray:
    """Distance from the money in standard deviations (0 at the money)."""
    t = np.maximum(t_years, MIN_T)
    out: FloatArray = np.log(strike / spot) / (iv * np.sqrt(t))
    return out


def option_half_spread(mid: FloatArray, iv: FloatArray, m_sd: FloatArray) -> FloatArray:
    """Half the quoted spread: a penny floor plus a price-proportional part, scaled up
    with vol (iv / 16 %) and with distance from the money."""
    vol_factor = np.clip(iv / 0.16, 0.75, 6.0)
    half: FloatArray = 0.5 * (0.01 + 0.004 * mid) * vol_factor * (1.0 + 0.3 * np.abs(m_sd))
    return half


def round_bid_ask(
    mid: FloatArray, half: FloatArray, tick: float | FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Bid rounded down and ask rounded up to the tick, at least one tick apart, bid >= 0."""
    bid = np.maximum(np.floor((mid - half) / tick + 1e-9) * tick, 0.0)
    ask = np.ceil((mid + half) / tick - 1e-9) * tick
    ask = np.maximum(ask, bid + tick)
    return round6(bid), round6(ask)


def round6(x: FloatArray) -> FloatArray:
    """Round away float dust (prices are shown to 6 decimals at most)."""
    return np.asarray(np.round(x, 6), dtype=np.float64)


def price_options(
    spot: FloatArray,
    strike: FloatArray,
    t_years: FloatArray,
    is_call: NDArray[np.bool_],
    div_yield: FloatArray,
    vix: FloatArray,
    iv_beta: FloatArray,
) -> tuple[FloatArray, Greeks]:
    """(iv, BSM greeks) for a batch; rows with t <= 0 come back NaN (expired)."""
    iv = implied_vol(spot, strike, t_years, RISK_FREE, div_yield, vix, iv_beta)
    t = np.where(t_years > 0.0, np.maximum(t_years, MIN_T), 0.0)
    greeks = bs_greeks(spot, strike, t, RISK_FREE, div_yield, iv, is_call)
    return iv, greeks
