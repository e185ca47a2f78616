"""Daily implied-vol history per underlying, and the IV rank / percentile read from it.

Why: exit rule 5.5 (IV below its 30th percentile with profit > 20%: close) and entry
scoring (IV rank) compare today's IV with the underlying's own past. A fresh install has
no past, so the rules would report NO_DATA for weeks; IB serves a year of daily implied
vol per underlying (reqHistoricalData, whatToShow OPTION_IMPLIED_VOLATILITY: each bar's
close is the 30-day ATM IV), so the history is backfilled from the broker and then kept
current.

Table `iv_history` (`core.store.schemas.volatility`), key (underlying, date):

- `broker_history` rows come from the broker's daily IV bars and are authoritative: a
  backfill overwrites a `chain_snapshot` row for the same day, never the reverse.
- `chain_snapshot` rows are today's ATM IV as measured from a trading cycle's option
  chain (`record_atm_iv`): they make today's value available before the broker's daily
  bar is final, and the next backfill replaces them.

Writes skip rows whose value and source are already stored, so replaying a backfill or a
snapshot commits nothing (`recorded_at` alone never causes a rewrite).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Final

import numpy as np
import polars as pl

from core.broker.base import Broker, BrokerError, ErrorClass
from core.calendar import MarketCalendar
from core.domain import Bar, Contract
from core.domain.timezones import MARKET_TZ, UTC_US
from core.pricing import HistoryReason, iv_percentile, iv_rank
from core.store import DeltaStore
from core.store.schemas.volatility import MAX_ATM_IV

log = logging.getLogger(f"v6.{__name__}")

TABLE: Final = "iv_history"
BROKER: Final = "broker_history"
CHAIN: Final = "chain_snapshot"
IV_WHAT: Final = "OPTION_IMPLIED_VOLATILITY"
ATM_TERM_DAYS: Final = 30.0  # the tenor IB's IV bars quote; chain snapshots are mapped to it
MAX_REQUEST: Final = timedelta(days=365)  # IB wants durations beyond a year in years: split
MIN_REQUEST: Final = timedelta(days=2)  # daily bars need a duration in days, not seconds
KEYS: Final = ("underlying", "date")

STATS_SCHEMA: Final = pl.Schema(
    {
        "underlying": pl.String(),
        "iv_now": pl.Float64(),
        "iv_rank": pl.Float64(),
        "iv_percentile": pl.Float64(),
        "n_days": pl.Int64(),
        "as_of": pl.Date(),
        "reason": pl.String(),
    }
)


@dataclass(frozen=True)
class IVBackfill:
    """What one backfill did: bars received and rows written, per the whole batch."""

    fetched: dict[str, int] = field(default_factory=dict)  # usable daily IV bars per symbol
    written: int = 0  # rows inserted or updated (0 = the store already had everything)
    version: int | None = None  # Delta version committed; None when nothing changed
    errors: dict[str, str] = field(default_factory=dict)  # symbol -> why it has no bars


# ------------------------------------------------------------------------------- helpers
def session_dates(ts: pl.Expr) -> pl.Expr:
    """The New York session date of a bar stamp (UTC datetime expression).

    IB stamps daily bars with the bare session date (which `bar_from_ib` turns into
    midnight UTC), the simulator with the session's open; intraday stamps are instants.
    Midnight UTC is 19:00/20:00 in New York, never inside a session, so it can only be a
    bare date: take it as is, and convert every other stamp to New York."""
    return (
        pl.when(ts.dt.time() == time(0))
        .then(ts.dt.date())
        .otherwise(ts.dt.convert_time_zone(MARKET_TZ.key).dt.date())
    )


def first_backfill_span(days: int) -> timedelta:
    """Calendar days that hold `days` sessions (5 a week) through a year of holidays."""
    return timedelta(days=math.ceil(days * 7 / 5) + 14)


def _ny_date(now: datetime) -> date:
    return now.astimezone(MARKET_TZ).date()


def _check_now(now: datetime) -> None:
    if now.tzinfo is None:
        raise ValueError(f"now must be tz-aware UTC, got {now!r}")


def _symbols(underlyings: Sequence[str]) -> list[str]:
    if isinstance(underlyings, str):
        raise ValueError(f"underlyings must be a list of symbols, got the string {underlyings!r}")
    out = list(dict.fromkeys(s.strip().upper() for s in underlyings))
    bad = [s for s in out if not s]
    if bad or not out:
        raise ValueError(f"underlyings must be non-empty symbols, got {list(underlyings)!r}")
    return out


def _stored(store: DeltaStore, symbols: Sequence[str]) -> pl.DataFrame:
    return (
        store.read(TABLE, where=pl.col("underlying").is_in(list(symbols)))
        .select("underlying", "date", "atm_iv", "source")
        .collect()
    )


def _changed(rows: pl.DataFrame, stored: pl.DataFrame) -> pl.DataFrame:
    """Rows whose key is new, or whose value or source differs from the stored row."""
    old = stored.select(*KEYS, pl.col("atm_iv").alias("_iv"), pl.col("source").alias("_src"))
    joined = rows.join(old, on=list(KEYS), how="left")
    return joined.filter(
        pl.col("_iv").is_null()
        | (pl.col("atm_iv") != pl.col("_iv"))
        | (pl.col("source") != pl.col("_src"))
    ).drop("_iv", "_src")


def _rows(frame: pl.DataFrame, source: str, now: datetime) -> pl.DataFrame:
    return frame.select(
        pl.col("underlying").cast(pl.String),
        pl.col("date").cast(pl.Date),
        pl.col("atm_iv").cast(pl.Float64),
        pl.lit(source, dtype=pl.String).alias("source"),
        pl.lit(now.astimezone(UTC)).cast(UTC_US).alias("recorded_at"),
    )


def _usable(iv: pl.Expr) -> pl.Expr:
    return iv.is_not_null() & iv.is_finite() & (iv > 0) & (iv <= MAX_ATM_IV)


def bars_frame(symbol: str, bars: Sequence[Bar]) -> pl.DataFrame:
    """Daily IV bars as [underlying, date, atm_iv]: one row per session date (the latest
    bar wins where request windows overlapped), junk values (<= 0, NaN, > 500%) dropped."""
    raw = pl.DataFrame(
        {"time": [b.time for b in bars], "atm_iv": [b.close for b in bars]},
        schema={"time": UTC_US, "atm_iv": pl.Float64},
    )
    good = raw.filter(_usable(pl.col("atm_iv")))
    if good.height < raw.height:
        log.warning(
            "iv history %s: dropped %d IV bars with no usable value",
            symbol,
            raw.height - good.height,
        )
    return (
        good.sort("time")
        .select(
            pl.lit(symbol, dtype=pl.String).alias("underlying"),
            session_dates(pl.col("time")).alias("date"),
            "atm_iv",
        )
        .unique(subset=["date"], keep="last", maintain_order=True)
    )


# ------------------------------------------------------------------------------- backfill
async def fetch_iv_bars(broker: Broker, symbol: str, *, start: date, now: datetime) -> list[Bar]:
    """Daily IV bars of `symbol` from session `start` to `now`, in requests of at most a
    year (IB rejects longer durations in days) and at least two days (daily bars need a
    duration in days)."""
    begin = datetime.combine(start, time(0), MARKET_TZ).astimezone(UTC)
    remaining = max(now - begin, MIN_REQUEST)
    end = now
    out: list[Bar] = []
    while remaining > timedelta(0):
        step = min(remaining, MAX_REQUEST)
        got = await broker.historical_bars(
            Contract.stock(symbol), end=end, duration=step, bar_size="1 day", what=IV_WHAT
        )
        out = got + out
        end -= step
        remaining -= step
    return out


async def backfill_iv_history(
    broker: Broker,
    store: DeltaStore,
    underlyings: Sequence[str],
    now: datetime,
    days: int = 260,
) -> IVBackfill:
    """Fetch each underlying's daily IV bars since its last `broker_history` date (that
    day included: IB's bar for a session still trading is provisional), or `days`
    sessions back when it has none, and merge them in one commit.

    Gaps heal because the fetch starts at the last *broker* date, not at a later chain
    snapshot. A symbol the broker has no IV for (a DATA error) is reported in `errors`
    and the others still go in; connectivity errors propagate (the caller retries, and
    nothing was written)."""
    _check_now(now)
    if days < 1:
        raise ValueError(f"days={days}: must be >= 1 (sessions of IV history to backfill)")
    symbols = _symbols(underlyings)
    stored = _stored(store, symbols)
    earliest = _ny_date(now) - first_backfill_span(days)
    last = dict(
        stored.filter(pl.col("source") == BROKER)
        .group_by("underlying")
        .agg(pl.col("date").max())
        .iter_rows()
    )
    frames: list[pl.DataFrame] = []
    fetched: dict[str, int] = {}
    errors: dict[str, str] = {}
    for symbol in symbols:
        prev = last.get(symbol)
        start = earliest if prev is None else max(prev, earliest)
        try:
            bars = await fetch_iv_bars(broker, symbol, start=start, now=now)
        except BrokerError as exc:
            if exc.kind is not ErrorClass.DATA:
                raise
            errors[symbol] = str(exc)
            log.warning("iv history %s: no IV bars (%s)", symbol, exc)
            continue
        frame = bars_frame(symbol, bars).filter(pl.col("date") >= start)
        fetched[symbol] = frame.height
        frames.append(frame)
    if not frames:
        return IVBackfill(fetched, 0, None, errors)
    rows = _changed(_rows(pl.concat(frames), BROKER, now), stored)
    if rows.is_empty():
        log.info("iv history: nothing new for %s", ", ".join(fetched))
        return IVBackfill(fetched, 0, None, errors)
    result = store.merge(TABLE, rows, update=True)
    log.info(
        "iv history: %d rows written for %s (version %s)",
        rows.height,
        ", ".join(sorted(set(rows.get_column("underlying").to_list()))),
        result.version,
    )
    return IVBackfill(fetched, rows.height, result.version, errors)


# ------------------------------------------------------------------------------- snapshots
def atm_iv_30d(frame: pl.DataFrame) -> pl.DataFrame:
    """[underlying, atm_iv] at the 30-day tenor IB's IV bars use.

    `frame` has `underlying` and `atm_iv` (decimal) and optionally `T` (years to expiry,
    one row per expiry, as `core.strategy.skew.measure_skew` writes it). With `T`, ATM
    total variance (iv^2 T) is interpolated linearly in T to 30 days; outside the listed
    expiries the nearest expiry's IV is used (flat vol). Without `T` the frame must
    already hold one 30-day value per underlying."""
    missing = [c for c in ("underlying", "atm_iv") if c not in frame.columns]
    if missing:
        raise ValueError(
            f"ATM IV frame lacks columns {missing}; it needs underlying and atm_iv "
            f"(and T in years for per-expiry rows), got {frame.columns}"
        )
    usable = _usable(pl.col("atm_iv").cast(pl.Float64))
    if "T" not in frame.columns:
        rows = frame.select("underlying", pl.col("atm_iv").cast(pl.Float64)).filter(usable)
        dup = rows.filter(pl.col("underlying").is_duplicated()).get_column("underlying")
        if dup.len():
            raise ValueError(
                f"ATM IV frame has several rows for {sorted(set(dup.to_list()))} and no T "
                "column; give one 30-day value per underlying, or per-expiry rows with T"
            )
        return rows
    rows = frame.select(
        "underlying", pl.col("atm_iv").cast(pl.Float64), pl.col("T").cast(pl.Float64)
    ).filter(usable & pl.col("T").is_finite() & (pl.col("T") > 0))
    target = ATM_TERM_DAYS / 365.0
    out: dict[str, list[object]] = {"underlying": [], "atm_iv": []}
    for (symbol,), g in rows.sort("underlying", "T").group_by("underlying", maintain_order=True):
        t = g.get_column("T").to_numpy()
        w = g.get_column("atm_iv").to_numpy() ** 2 * t
        tc = min(max(target, float(t[0])), float(t[-1]))
        out["underlying"].append(symbol)
        out["atm_iv"].append(math.sqrt(float(np.interp(tc, t, w)) / tc))
    return pl.DataFrame(out, schema={"underlying": pl.String, "atm_iv": pl.Float64})


def record_atm_iv(
    store: DeltaStore,
    frame: pl.DataFrame,
    *,
    now: datetime,
    calendar: MarketCalendar | None = None,
) -> int:
    """Upsert today's `chain_snapshot` ATM IV per underlying (see `atm_iv_30d` for the
    frame); returns rows written. Idempotent: an unchanged value writes nothing, and a
    day the broker's history already covers is left alone (the broker's bar wins).
    With a `calendar`, nothing is recorded on a day that is not a session."""
    _check_now(now)
    today = _ny_date(now)
    if calendar is not None and not calendar.is_trading_day(today):
        log.info("iv history: %s is not a session; chain ATM IV not recorded", today)
        return 0
    values = atm_iv_30d(frame)
    if values.is_empty():
        return 0
    stored = _stored(store, values.get_column("underlying").unique().to_list()).filter(
        pl.col("date") == today
    )
    rows = _rows(values.with_columns(date=pl.lit(today)), CHAIN, now)
    rows = rows.join(
        stored.filter(pl.col("source") == BROKER).select(KEYS), on=list(KEYS), how="anti"
    )
    rows = _changed(rows, stored)
    if rows.is_empty():
        return 0
    store.merge(TABLE, rows, update=True)
    return rows.height


# ------------------------------------------------------------------------------- stats
def iv_stats(
    store: DeltaStore,
    underlyings: Sequence[str],
    now: datetime,
    *,
    min_history: int = 20,
    lookback_days: int = 260,
    max_age_days: int = 5,
) -> pl.DataFrame:
    """One row per underlying (in the order asked): `iv_now` (latest recorded ATM IV on
    or before today), `iv_rank` and `iv_percentile` (0..100, `core.pricing`) over the
    last `lookback_days` recorded days including that one, `n_days` of history used,
    `as_of` (the date of `iv_now`), and `reason` (null when both numbers are known).

    Rank and percentile are null, with the reason, when there are fewer than
    `min_history` days (settings `analysis.iv_min_history_days`) or the latest value is
    more than `max_age_days` calendar days old (a stalled backfill must read as NO_DATA,
    not as last week's percentile). Percentile = % of the days with IV strictly below
    `iv_now`; rank = (iv_now - min) / (max - min) x 100."""
    _check_now(now)
    if min_history < 1 or lookback_days < min_history:
        raise ValueError(
            f"min_history={min_history}, lookback_days={lookback_days}: need 1 <= min_history "
            "<= lookback_days (settings analysis.iv_min_history_days <= iv_history_days)"
        )
    if max_age_days < 0:
        raise ValueError(f"max_age_days={max_age_days}: must be >= 0")
    symbols = _symbols(underlyings)
    today = _ny_date(now)
    history = (
        _stored(store, symbols)
        .filter(pl.col("date") <= today)
        .sort("underlying", "date")
        .group_by("underlying", maintain_order=True)
        .tail(lookback_days)
    )
    by_symbol = {s: g for (s,), g in history.group_by("underlying")}
    rows: list[dict[str, object]] = []
    for symbol in symbols:
        g = by_symbol.get(symbol)
        rows.append(_stats_row(symbol, g, today, min_history, max_age_days))
    return pl.DataFrame(rows, schema=STATS_SCHEMA)


def _stats_row(
    symbol: str, g: pl.DataFrame | None, today: date, min_history: int, max_age_days: int
) -> dict[str, object]:
    row: dict[str, object] = {
        "underlying": symbol,
        "iv_now": None,
        "iv_rank": None,
        "iv_percentile": None,
        "n_days": 0,
        "as_of": None,
        "reason": f"need {min_history} days of IV history, have 0",
    }
    if g is None or g.is_empty():
        return row
    ivs = g.get_column("atm_iv").to_numpy()
    as_of = g.get_column("date")[-1]
    current = float(ivs[-1])
    row.update(iv_now=current, n_days=int(ivs.size), as_of=as_of)
    age = (today - as_of).days
    if age > max_age_days:
        row["reason"] = (
            f"latest IV is from {as_of} ({age} days old, max {max_age_days}); "
            "backfill the IV history"
        )
        return row
    rank = iv_rank(ivs, current, min_history=min_history)
    pct = iv_percentile(ivs, current, min_history=min_history)
    if pct.reason is not HistoryReason.OK:
        row["reason"] = _why(pct.reason, min_history, ivs.size, current)
        return row
    row["iv_percentile"] = pct.value
    if rank.reason is HistoryReason.OK:
        row.update(iv_rank=rank.value, reason=None)
    else:
        row["reason"] = "iv_rank " + _why(rank.reason, min_history, ivs.size, current)
    return row


def _why(reason: HistoryReason, min_history: int, n: int, current: float) -> str:
    if reason in (HistoryReason.EMPTY_HISTORY, HistoryReason.TOO_SHORT):
        return f"need {min_history} days of IV history, have {n}"
    if reason is HistoryReason.FLAT_HISTORY:
        return f"undefined: IV flat at {current:.4f} over {n} days"
    return f"current IV {current!r} is not a positive number"
