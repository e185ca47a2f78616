"""Option-chain snapshots as one polars frame: the input of skew, strike selection and
candidate building.

One row per listed option (any number of underlyings and expiries):

    underlying str, expiry date, strike f64, right "P"|"C", con_id i64 (> 0, qualified),
    multiplier i64, bid f64, ask f64, iv f64, delta f64 (IB convention: puts negative),
    underlying_price f64, local_symbol str, trading_class str

NaN or null means "the broker did not say". The frame is built from broker quotes at the
edge (`chain_frame`, `snapshot_chain`) so everything downstream is vectorised and pure.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from datetime import UTC, date, datetime, time

import numpy as np
import polars as pl

from core.broker.base import Broker
from core.config import StrategySettings
from core.domain import Contract, Quote, Right, SecType
from core.domain.timezones import MARKET_TZ, UTC_US
from core.pricing import bs_greeks, implied_vol

log = logging.getLogger(f"v6.{__name__}")

EXPIRY_CLOSE = time(16, 0)
YEAR_DAYS = 365.0

CHAIN_SCHEMA = pl.Schema(
    {
        "underlying": pl.String(),
        "expiry": pl.Date(),
        "strike": pl.Float64(),
        "right": pl.String(),
        "con_id": pl.Int64(),
        "multiplier": pl.Int64(),
        "bid": pl.Float64(),
        "ask": pl.Float64(),
        "iv": pl.Float64(),
        "delta": pl.Float64(),
        "underlying_price": pl.Float64(),
        "local_symbol": pl.String(),
        "trading_class": pl.String(),
    }
)
_REQUIRED = ("underlying", "expiry", "strike", "right", "con_id", "bid", "ask")
_DEFAULTS: dict[str, object] = {
    "multiplier": 100,
    "iv": math.nan,
    "delta": math.nan,
    "underlying_price": math.nan,
    "local_symbol": "",
    "trading_class": "",
}


def conform_chain(chain: pl.DataFrame) -> pl.DataFrame:
    """Cast to `CHAIN_SCHEMA`, adding optional columns, naming any missing one and the fix."""
    missing = [c for c in _REQUIRED if c not in chain.columns]
    if missing:
        raise ValueError(
            f"chain: columns {missing} are missing; a chain frame needs {list(_REQUIRED)} "
            "(build it with core.strategy.chain.chain_frame(quotes))"
        )
    exprs = []
    for name, dtype in CHAIN_SCHEMA.items():
        if name in chain.columns:
            exprs.append(pl.col(name).cast(dtype))
        else:
            exprs.append(pl.lit(_DEFAULTS[name], dtype=dtype).alias(name))
    out = chain.select(exprs).with_columns(
        pl.col("iv", "delta", "underlying_price", "bid", "ask").fill_null(math.nan),
        pl.col("right").str.to_uppercase(),
    )
    bad = out.filter(~pl.col("right").is_in(["P", "C"]) | (pl.col("con_id") <= 0))
    if bad.height:
        raise ValueError(
            f"chain: {bad.height} row(s) have right not in 'P'/'C' or con_id <= 0 (unqualified), "
            f"e.g. {bad.select('underlying', 'expiry', 'strike', 'right', 'con_id').row(0)}; "
            "qualify the contracts with the broker first"
        )
    return out


def expiry_close(expiry: pl.Expr) -> pl.Expr:
    """The expiry's regular close (16:00 New York) as a UTC datetime expression."""
    return (
        expiry.cast(pl.Datetime("us"))
        .dt.offset_by("16h")
        .dt.replace_time_zone(MARKET_TZ.key)
        .dt.convert_time_zone("UTC")
    )


def with_time(chain: pl.DataFrame, now: datetime) -> pl.DataFrame:
    """Add `dte` (calendar days, market dates) and `T` (years to the 16:00 NY close)."""
    if now.tzinfo is None:
        raise ValueError(f"now={now!r} is naive; pass a tz-aware UTC datetime")
    today = now.astimezone(MARKET_TZ).date()
    now_utc = pl.lit(now.astimezone(UTC)).cast(UTC_US)
    return chain.with_columns(
        dte=(pl.col("expiry") - pl.lit(today)).dt.total_days().cast(pl.Int64),
        T=(expiry_close(pl.col("expiry")) - now_utc).dt.total_seconds().cast(pl.Float64)
        / (YEAR_DAYS * 86400.0),
    )


def quote_mid() -> pl.Expr:
    """Mid of a two-sided, uncrossed quote; NaN otherwise (a zero bid is a real quote)."""
    b, a = pl.col("bid"), pl.col("ask")
    ok = b.is_finite() & a.is_finite() & (b >= 0) & (a > 0) & (a >= b)
    return pl.when(ok).then((b + a) / 2.0).otherwise(math.nan)


def chain_frame(quotes: Sequence[Quote]) -> pl.DataFrame:
    """Option quotes (from `Broker.quotes`) as a chain frame; non-options are dropped."""
    rows = [
        (
            q.contract.symbol,
            q.contract.expiry,
            q.contract.strike,
            q.contract.right.value if q.contract.right else None,
            q.contract.con_id,
            q.contract.multiplier,
            q.bid,
            q.ask,
            q.iv,
            q.delta,
            q.underlying_price,
            q.contract.local_symbol,
            q.contract.trading_class,
        )
        for q in quotes
        if q.contract.sec_type is SecType.OPT
    ]
    return pl.DataFrame(rows, schema=CHAIN_SCHEMA, orient="row")


def pick_expiries(
    expirations: Sequence[date], now: datetime, settings: StrategySettings
) -> list[date]:
    """The listed expiry nearest `target_dte` inside [dte_min, dte_max] (earlier on a tie)."""
    today = now.astimezone(MARKET_TZ).date()
    inside = [e for e in expirations if settings.dte_min <= (e - today).days <= settings.dte_max]
    if not inside:
        return []
    return [min(inside, key=lambda e: (abs((e - today).days - settings.target_dte), e))]


async def snapshot_chain(
    broker: Broker, underlying: str, settings: StrategySettings, now: datetime
) -> pl.DataFrame:
    """Quote the expiry nearest target DTE, strikes within `chain_strike_band_pct` of spot.

    One `quotes` call for the whole slice (the broker batches market-data lines). Returns an
    empty chain frame when nothing is listed in the DTE window.
    """
    chains = await broker.option_chain(underlying)
    if not chains:
        log.warning("no option chain for %s", underlying)
        return pl.DataFrame(schema=CHAIN_SCHEMA)
    chain = max(chains, key=lambda c: len(c.strikes))
    expiries = pick_expiries(chain.expirations, now, settings)
    if not expiries:
        log.info("%s: no expiry within %d..%d DTE", underlying, settings.dte_min, settings.dte_max)
        return pl.DataFrame(schema=CHAIN_SCHEMA)
    spot_q = (await broker.quotes([Contract.stock(underlying)]))[0]
    spot = spot_q.mid if math.isfinite(spot_q.mid) else spot_q.last
    strikes = np.asarray(chain.strikes, dtype=np.float64)
    if math.isfinite(spot) and spot > 0:
        band = settings.chain_strike_band_pct / 100.0
        strikes = strikes[np.abs(strikes / spot - 1.0) <= band]
    contracts = [
        Contract.option(underlying, e, float(k), r, chain.multiplier)
        for e in expiries
        for k in strikes
        for r in (Right.PUT, Right.CALL)
    ]
    qualified = await broker.qualify(contracts)
    known = [c for c in qualified if c is not None]
    quotes = await broker.quotes(known)
    frame = chain_frame(quotes)
    if math.isfinite(spot):
        frame = frame.with_columns(pl.col("underlying_price").fill_nan(spot))
    return frame


def forwards(chain: pl.DataFrame) -> pl.DataFrame:
    """Forward per (underlying, expiry) by put-call parity at the strike where call and put
    mids are closest (F = K + C - P, undiscounted: at 45 days the discount moves F by
    well under a tick of the strike grid). Falls back to the reported underlying price.

    Why parity: it needs no rate or dividend assumption, and it puts ATM where the market
    does, which is what skew and delta are measured against.
    """
    keys = ["underlying", "expiry"]
    spot = chain.group_by(keys).agg(
        spot=pl.col("underlying_price").filter(pl.col("underlying_price").is_finite()).median()
    )
    ok = pl.col("mid").is_finite()
    puts = chain.filter(ok & (pl.col("right") == "P")).select(*keys, "strike", p_mid="mid")
    calls = chain.filter(ok & (pl.col("right") == "C")).select(*keys, "strike", c_mid="mid")
    parity = (
        puts.join(calls, on=[*keys, "strike"])
        .sort((pl.col("c_mid") - pl.col("p_mid")).abs(), "strike")
        .group_by(keys, maintain_order=True)
        .first()
        .select(*keys, parity=pl.col("strike") + pl.col("c_mid") - pl.col("p_mid"))
    )
    sane = (pl.col("parity") > 0) & (
        pl.col("spot").is_null() | ((pl.col("parity") / pl.col("spot") - 1.0).abs() < 0.2)
    )
    return (
        spot.join(parity, on=keys, how="full", coalesce=True)
        .with_columns(
            forward=pl.when(sane).then(pl.col("parity")).otherwise(pl.col("spot")),
            forward_source=pl.when(sane)
            .then(pl.lit("parity"))
            .when(pl.col("spot").is_not_null())
            .then(pl.lit("spot"))
            .otherwise(pl.lit("none")),
        )
        .select(*keys, "spot", "forward", "forward_source")
    )


def prepare_chain(chain: pl.DataFrame, now: datetime) -> pl.DataFrame:
    """Conformed chain plus mid, dte, T, forward, `iv_used` and `delta_used`.

    IV: the broker's when it is a positive number, else implied from the mid (Black-76 on
    the forward). Delta: the broker's when finite, else the forward delta at `iv_used`.
    `iv_source`/`delta_source` say which ("quote", "model", "none"), so a candidate built
    on model numbers is visible as such. Expired rows (T <= 0) are dropped.
    """
    c = with_time(conform_chain(chain), now).with_columns(mid=quote_mid())
    c = c.filter(pl.col("T") > 0)
    c = c.join(forwards(c), on=["underlying", "expiry"], how="left")
    if c.is_empty():
        return c.with_columns(
            iv_used=pl.lit(None, pl.Float64),
            iv_source=pl.lit(None, pl.String),
            delta_used=pl.lit(None, pl.Float64),
            delta_source=pl.lit(None, pl.String),
        )
    f = c["forward"].fill_null(math.nan).to_numpy()
    k = c["strike"].to_numpy()
    t = c["T"].to_numpy()
    call = (c["right"] == "C").to_numpy()
    mid = c["mid"].to_numpy()
    iv_q = c["iv"].to_numpy()
    with np.errstate(all="ignore"):
        have_iv = np.isfinite(iv_q) & (iv_q > 0)
        implied = implied_vol(mid, f, k, t, 0.0, 0.0, call).iv
        iv = np.where(have_iv, iv_q, implied)
        model_delta = bs_greeks(f, k, t, 0.0, 0.0, iv, call).delta
    d_q = c["delta"].to_numpy()
    have_d = np.isfinite(d_q)
    delta = np.where(have_d, d_q, model_delta)
    iv_src = np.where(have_iv, "quote", np.where(np.isfinite(iv), "model", "none"))
    d_src = np.where(have_d, "quote", np.where(np.isfinite(delta), "model", "none"))
    return c.with_columns(
        iv_used=pl.Series(iv, dtype=pl.Float64),
        iv_source=pl.Series(iv_src, dtype=pl.String),
        delta_used=pl.Series(delta, dtype=pl.Float64),
        delta_source=pl.Series(d_src, dtype=pl.String),
    )


__all__ = [
    "CHAIN_SCHEMA",
    "chain_frame",
    "conform_chain",
    "expiry_close",
    "forwards",
    "pick_expiries",
    "prepare_chain",
    "quote_mid",
    "snapshot_chain",
    "with_time",
]
