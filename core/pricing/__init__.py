"""Vectorised option pricing: Black-Scholes-Merton, greeks, implied vol, vol surface.

Strict vs flagging: every array function flags by default (NaN + ``valid``/reason codes
per row, so one junk quote never sinks a chain) and raises :class:`PricingInputError`
naming the field, the bad rows and the fix when called with ``strict=True``.
``validate_inputs`` is the strict check on its own. Configuration objects
(:class:`VolSurface`) and argument misuse (:func:`fit_smile` with neither quote kind)
always raise: those are bugs, not data.
"""

from core.pricing.black_scholes import (
    DAYS_PER_YEAR,
    Greeks,
    bs_greeks,
    bs_price,
    theta_per_day,
)
from core.pricing.implied_vol import IVReason, IVResult, implied_vol
from core.pricing.surface import (
    HistoryReason,
    IVStat,
    SkewMetrics,
    SmileFit,
    SmileParams,
    VolSurface,
    fit_smile,
    iv_percentile,
    iv_rank,
    skew_metrics,
    ssvi_total_variance,
)
from core.pricing.validation import PricingInputError, parse_right, validate_inputs

__all__ = [
    "DAYS_PER_YEAR",
    "Greeks",
    "HistoryReason",
    "IVReason",
    "IVResult",
    "IVStat",
    "PricingInputError",
    "SkewMetrics",
    "SmileFit",
    "SmileParams",
    "VolSurface",
    "bs_greeks",
    "bs_price",
    "fit_smile",
    "implied_vol",
    "iv_percentile",
    "iv_rank",
    "parse_right",
    "skew_metrics",
    "ssvi_total_variance",
    "theta_per_day",
    "validate_inputs",
]
