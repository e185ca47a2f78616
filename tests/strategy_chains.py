"""Synthetic option chains on a known SSVI surface, so tests know the true skew and deltas."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta

import numpy as np
import polars as pl

from core.domain.timezones import MARKET_TZ
from core.pricing import VolSurface, bs_greeks
from core.strategy.chain import CHAIN_SCHEMA

NOW = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)  # 11:00 New York


def expiry_for(now: datetime, dte: int) -> date:
    return now.astimezone(MARKET_TZ).date() + timedelta(days=dte)


def years_to(expiry: date, now: datetime) -> float:
    close = datetime.combine(expiry, time(16, 0), tzinfo=MARKET_TZ)
    return (close - now).total_seconds() / (365.0 * 86400.0)


def synthetic_chain(
    *,
    underlying: str = "SPY",
    spot: float = 500.0,
    now: datetime = NOW,
    dte: int = 45,
    surface: VolSurface | None = None,
    step: float = 1.0,
    band: float = 0.25,
    half_spread: float = 0.02,
    con_base: int = 100_000,
    quote_iv: bool = True,
    quote_delta: bool = True,
) -> pl.DataFrame:
    """Puts and calls every `step` within `band` of spot, priced on `surface` (r = q = 0).

    bid/ask straddle the model price by `half_spread` (rounded outward to cents), so the
    mid is the model price to within a cent.
    """
    surface = surface or VolSurface()
    expiry = expiry_for(now, dte)
    T = years_to(expiry, now)
    strikes = np.arange(math.ceil(spot * (1 - band)), math.floor(spot * (1 + band)) + 1, step)
    k = np.concatenate([strikes, strikes])
    call = np.concatenate([np.zeros(strikes.size, bool), np.ones(strikes.size, bool)])
    iv = surface.iv(spot, k, T)
    g = bs_greeks(spot, k, T, 0.0, 0.0, iv, call)
    bid = np.maximum(np.floor((g.price - half_spread) * 100 + 1e-9) / 100, 0.0)
    ask = np.ceil((g.price + half_spread) * 100 - 1e-9) / 100
    n = k.size
    return pl.DataFrame(
        {
            "underlying": [underlying] * n,
            "expiry": [expiry] * n,
            "strike": k,
            "right": np.where(call, "C", "P"),
            "con_id": np.arange(con_base, con_base + n),
            "multiplier": [100] * n,
            "bid": bid,
            "ask": ask,
            "iv": iv if quote_iv else np.full(n, np.nan),
            "delta": g.delta if quote_delta else np.full(n, np.nan),
            "underlying_price": [spot] * n,
            "local_symbol": [""] * n,
            "trading_class": [underlying] * n,
        },
        schema=CHAIN_SCHEMA,
    )
