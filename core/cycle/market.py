"""The cycle's market view: quotes and greeks of every held leg, and per-underlying context
(spot, regime, 1-hour move, IV percentile and rank, VIX) for the exit rules and the entries.

Broker traffic per cycle: one quote request for every held leg + the underlyings + the
volatility index (batched within the market-data lines by `CycleBroker`) and one request of
intraday bars per underlying. Those bars give three things at once: the close an hour ago,
the daily closes (regimes) and the close-to-close returns (correlation limit). Once a day,
the first cycle also backfills the daily IV history (`marketdata.iv_history`), from which
the IV percentile and rank are read.

Why the 1-hour move is computed here rather than with `rules.underlying_move_1h`: that
helper wants a bar from within 15 minutes of one hour ago, which does not exist during the
first hour of a session; every strategy would then be NO_DATA each morning (and trip the
data-quality condition). Here the reference is the last close at least an hour old, from
the previous session if need be: an opening gap is a move, and it is exactly the move the
catastrophe rule exists for. The latest price is the live quote.

The regime detector's VIX input is the live volatility-index quote (its freshest value).

Dividends (the early-assignment rule's next ex-date and amount) are asked only for the
underlyings on which the book holds a short call, one request each (IB generic tick 456);
an underlying the broker has no dividend answer for stays unknown (null), which the rule
reports for the short calls it cannot judge rather than assuming no dividend.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import polars as pl

from core.book.ledger import Book
from core.broker.base import Broker, BrokerError, ErrorClass
from core.calendar import MarketCalendar
from core.clock import Clock
from core.config import Settings
from core.domain import Bar, Contract, Quote
from core.domain.frames import contract_from_row
from core.domain.timezones import MARKET_TZ, UTC_US
from core.marketdata.iv_history import BROKER as IV_BROKER
from core.marketdata.iv_history import TABLE as IV_TABLE
from core.marketdata.iv_history import backfill_iv_history, iv_stats
from core.rules.regime import daily_closes, detect_regimes
from core.store.delta import DeltaStore

log = logging.getLogger(f"v6.{__name__}")

BAR_SIZE = "5 mins"
BAR_MINUTES = 5
MOVE_WINDOW = timedelta(hours=1)
MOVE_MAX_GAP = timedelta(days=5)  # a reference close older than this (long holiday) is unknown
SPOT_MAX_AGE = timedelta(minutes=15)  # a bar close this fresh may stand in for a missing quote

QUOTE_SCHEMA = pl.Schema(
    {
        "con_id": pl.Int64(),
        "bid": pl.Float64(),
        "ask": pl.Float64(),
        "last": pl.Float64(),
        "mid": pl.Float64(),
        "iv": pl.Float64(),
        "delta": pl.Float64(),
        "gamma": pl.Float64(),
        "stale": pl.Boolean(),
    }
)
BARS_SCHEMA = pl.Schema({"symbol": pl.String(), "ts": UTC_US, "close": pl.Float64()})
CONTEXT_SCHEMA = pl.Schema(
    {
        "symbol": pl.String(),
        "spot": pl.Float64(),
        "regime": pl.String(),
        "regime_reason": pl.String(),
        "underlying_move_1h_pct": pl.Float64(),
        "iv_percentile": pl.Float64(),
        "iv_rank": pl.Float64(),
        "iv_reason": pl.String(),
        "vix": pl.Float64(),
        "dividend_ex_date": pl.Date(),
        "dividend_amount": pl.Float64(),
    }
)
DIVIDEND_SCHEMA = pl.Schema(
    {"symbol": pl.String(), "dividend_ex_date": pl.Date(), "dividend_amount": pl.Float64()}
)


@dataclass(frozen=True)
class MarketView:
    """Everything the cycle knows about the market at `as_of`.

    `legs`: the book's held legs (`Book.leg_positions`, quantity != 0) with their quote
    columns (bid, ask, last, mid, iv, delta, gamma, stale; NaN = the broker did not say).
    `context`: `CONTEXT_SCHEMA`, one row per underlying. `bars`: intraday closes (symbol, ts,
    close) of the underlyings, for correlations. `vix`: NaN when unknown.
    """

    as_of: datetime
    legs: pl.DataFrame
    context: pl.DataFrame
    bars: pl.DataFrame
    vix: float
    quoted: int = 0
    slots: Mapping[str, int] = field(default_factory=dict)
    delayed: int = 0  # quotes the broker sent from its delayed feed
    delay_s: float = 0.0  # how far behind the market the oldest of them is (about)
    withheld: tuple[str, ...] = ()  # one reason (with its fix) per quote the broker withheld

    @property
    def data_note(self) -> str:
        """What the quotes were, in one line for the summary ('' when all live)."""
        parts = []
        if self.delayed:
            parts.append(
                f"{self.delayed} of {self.quoted} quote(s) delayed "
                f"(about {self.delay_s / 60:.0f} min old, IB market-data type 3/4)"
            )
        if self.withheld:
            reasons = list(dict.fromkeys(self.withheld))
            parts.append(
                f"{len(self.withheld)} of {self.quoted} quote(s) withheld by IB: "
                + "; ".join(reasons[:3])
                + (f" (and {len(reasons) - 3} more)" if len(reasons) > 3 else "")
            )
        return "; ".join(parts)

    def deltas(self) -> dict[int, float]:
        """con_id -> delta per unit (NaN kept: the limits refuse unknown risk)."""
        if self.legs.is_empty():
            return {}
        pairs = self.legs.select("con_id", "delta").unique("con_id").iter_rows()
        return {int(k): float(v) if v is not None else math.nan for k, v in pairs}

    def regimes(self) -> dict[str, str]:
        return {
            r["symbol"]: r["regime"]
            for r in self.context.iter_rows(named=True)
            if r["regime"] is not None
        }

    def iv_ranks(self) -> dict[str, float | None]:
        return {r["symbol"]: r["iv_rank"] for r in self.context.iter_rows(named=True)}


# -- pure pieces ------------------------------------------------------------------------


def quotes_frame(quotes: Sequence[Quote]) -> pl.DataFrame:
    """Broker quotes as `QUOTE_SCHEMA` rows (con_id from the contract asked for)."""
    rows = [
        (
            q.contract.con_id,
            q.bid,
            q.ask,
            q.last,
            q.mid,
            q.iv,
            q.delta,
            q.gamma,
            q.stale,
        )
        for q in quotes
    ]
    return pl.DataFrame(rows, schema=QUOTE_SCHEMA, orient="row").unique("con_id", keep="first")


def bars_frame(symbol: str, bars: Sequence[Bar]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "symbol": [symbol] * len(bars),
            "ts": [b.time for b in bars],
            "close": [b.close for b in bars],
        },
        schema=BARS_SCHEMA,
    )


def one_hour_moves(
    bars: pl.DataFrame,
    spots: Mapping[str, float],
    now: datetime,
    *,
    bar_minutes: int = BAR_MINUTES,
) -> pl.DataFrame:
    """Per symbol: % move from the last close at least an hour old to the latest price.

    Latest price: the live `spots` value, else the last bar close if it is at most
    `SPOT_MAX_AGE` old. Reference: the close of the last bar that ended at or before
    now - 1h, at most `MOVE_MAX_GAP` back (so the first hour of a session measures from the
    previous session's close). Null when either is missing.
    """
    c = pl.col
    length = timedelta(minutes=bar_minutes)
    ref_cut = now - MOVE_WINDOW - length  # bar start such that the bar ended by now - 1h
    ended = bars.filter(c("ts") <= now - length)
    ref = (
        ended.filter((c("ts") <= ref_cut) & (c("ts") >= ref_cut - MOVE_MAX_GAP))
        .sort("symbol", "ts")
        .group_by("symbol")
        .agg(c("close").last().alias("_ref"))
    )
    latest_bar = (
        ended.filter(c("ts") >= now - SPOT_MAX_AGE - length)
        .sort("symbol", "ts")
        .group_by("symbol")
        .agg(c("close").last().alias("_bar"))
    )
    symbols = sorted({*spots, *bars.get_column("symbol").unique().to_list()})
    live = pl.DataFrame(
        {
            "symbol": symbols,
            "_spot": [spots.get(s, math.nan) for s in symbols],
        },
        schema={"symbol": pl.String, "_spot": pl.Float64},
    )
    spot = pl.when(c("_spot").is_finite() & (c("_spot") > 0)).then(c("_spot")).otherwise(c("_bar"))
    return (
        live.join(latest_bar, on="symbol", how="left")
        .join(ref, on="symbol", how="left")
        .select(
            "symbol",
            pl.when(c("_ref") > 0)
            .then(((spot / c("_ref") - 1.0) * 100.0).round(9))
            .alias("underlying_move_1h_pct"),
        )
    )


def market_context(
    symbols: Sequence[str],
    bars: pl.DataFrame,
    spots: Mapping[str, float],
    vix: float,
    iv: pl.DataFrame,
    settings: Settings,
    now: datetime,
    dividends: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """`CONTEXT_SCHEMA`: one row per symbol (pure; see the module doc for each column).

    `iv`: `iv_history.iv_stats` rows (underlying, iv_percentile, iv_rank, reason).
    `dividends`: `DIVIDEND_SCHEMA` rows; a symbol without one has its dividend unknown.
    """
    closes = daily_closes(bars) if bars.height else bars.select("symbol", "ts", "close")
    vix_frame = pl.DataFrame(
        {"ts": [now] if math.isfinite(vix) else [], "close": [vix] if math.isfinite(vix) else []},
        schema={"ts": UTC_US, "close": pl.Float64},
    )
    regimes = detect_regimes(closes, vix_frame, settings.rules, now, symbols).select(
        "symbol", "regime", pl.col("reason").alias("regime_reason")
    )
    moves = one_hour_moves(bars, spots, now)
    names = list(dict.fromkeys(symbols))
    base = pl.DataFrame(
        {"symbol": names, "spot": [spots.get(s, math.nan) for s in names]},
        schema={"symbol": pl.String, "spot": pl.Float64},
    )
    ivs = iv.select(
        pl.col("underlying").alias("symbol"),
        "iv_percentile",
        "iv_rank",
        pl.col("reason").alias("iv_reason"),
    )
    return (
        base.join(regimes, on="symbol", how="left")
        .join(moves, on="symbol", how="left")
        .join(ivs, on="symbol", how="left")
        .join(
            dividends if dividends is not None else pl.DataFrame(schema=DIVIDEND_SCHEMA),
            on="symbol",
            how="left",
        )
        .with_columns(pl.lit(vix if math.isfinite(vix) else None, dtype=pl.Float64).alias("vix"))
        .select(list(CONTEXT_SCHEMA))
        .cast(CONTEXT_SCHEMA)
    )


async def ensure_iv_history(
    broker: Broker, store: DeltaStore, settings: Settings, symbols: Sequence[str], now: datetime
) -> int:
    """Backfill the daily IV history when some symbol lacks the last completed session
    (once a day in practice: later cycles find it and ask the broker nothing). Returns the
    rows written. A symbol the broker has no IV for is logged and left to read as NO_DATA."""
    calendar = MarketCalendar(settings.schedules)
    last_session = calendar.previous_close(now).astimezone(MARKET_TZ).date()
    have: dict[str, date] = {}
    if store.exists(IV_TABLE):
        got = (
            store.read(
                IV_TABLE,
                where=(pl.col("source") == IV_BROKER) & pl.col("underlying").is_in(list(symbols)),
                columns=["underlying", "date"],
            )
            .group_by("underlying")
            .agg(pl.col("date").max())
            .collect()
        )
        have = dict(got.iter_rows())
    if all(have.get(s) is not None and have[s] >= last_session for s in symbols):
        return 0
    result = await backfill_iv_history(
        broker, store, symbols, now, days=settings.analysis.iv_history_days
    )
    for symbol, why in result.errors.items():
        log.warning("no IV history for %s from the broker: %s", symbol, why)
    return result.written


def iv_context(
    store: DeltaStore, settings: Settings, symbols: Sequence[str], now: datetime
) -> pl.DataFrame:
    a = settings.analysis
    return iv_stats(
        store,
        symbols,
        now,
        min_history=a.iv_min_history_days,
        lookback_days=a.iv_history_days,
        max_age_days=a.iv_max_age_days,
    )


def held_legs(store: DeltaStore, clock: Clock) -> pl.DataFrame:
    """The book's open legs that hold a position (what the exit rules and the marks need)."""
    legs = Book(store, clock).leg_positions(open_only=True)
    return legs.filter(pl.col("quantity") != 0)


def bars_duration(settings: Settings) -> timedelta:
    """Calendar days of intraday bars that cover the regime and correlation lookbacks."""
    sessions = max(settings.rules.regime_lookback_bars, settings.limits.correlation_lookback_days)
    return timedelta(days=math.ceil((sessions + 1) * 7 / 5) + 6)


async def load_dividends(broker: Broker, symbols: Sequence[str]) -> pl.DataFrame:
    """`DIVIDEND_SCHEMA` rows for `symbols`: the next ex-date and amount (0.0 and no date
    when none is expected). A symbol the broker has no answer for (DATA) is left out:
    unknown. Connectivity errors raise (the step is retried)."""
    rows: list[tuple[str, date | None, float | None]] = []
    for s in symbols:
        try:
            got = await broker.dividends(Contract.stock(s))
        except BrokerError as exc:
            if exc.kind is not ErrorClass.DATA:
                raise
            log.warning("no dividend data for %s: %s", s, exc)
            continue
        ex, amount = got.next_known()
        if amount is None:
            log.warning("dividends of %s cannot be told from %s", s, got)
            continue
        rows.append((s, ex, amount))
    return pl.DataFrame(rows, schema=DIVIDEND_SCHEMA, orient="row")


def short_call_underlyings(legs: pl.DataFrame) -> list[str]:
    """Underlyings on which the book holds a short call (what dividends are asked for)."""
    c = pl.col
    short_call = (c("sec_type") == "OPT") & (c("right") == "C") & (c("quantity") < 0)
    return sorted(legs.filter(short_call).get_column("underlying").drop_nulls().unique())


def _spot(q: Quote) -> float:
    m = q.mid
    return m if math.isfinite(m) and m > 0 else q.last


# -- the broker side --------------------------------------------------------------------


async def load_market(
    broker: Broker,
    store: DeltaStore,
    settings: Settings,
    clock: Clock,
) -> MarketView:
    """Quote every held leg, the underlyings and the volatility index; fetch the bars;
    build the context. Raises on connectivity (the step is retried); a symbol whose bars
    the broker refuses (DATA) gets nulls, which the rules report as NO_DATA."""
    now = clock.now()
    legs = held_legs(store, clock)
    uni = settings.universe
    symbols = list(
        dict.fromkeys([*uni.underlyings, *legs.get_column("underlying").drop_nulls().to_list()])
    )
    leg_rows = legs.unique("con_id", keep="first", maintain_order=True)
    leg_contracts = [contract_from_row(r) for r in leg_rows.iter_rows(named=True)]
    vix_contract = Contract.index(uni.volatility_index)
    asked = [*leg_contracts, *(Contract.stock(s) for s in symbols), vix_contract]
    quotes = await broker.quotes(asked)
    n_legs = len(leg_contracts)
    und_quotes = quotes[n_legs : n_legs + len(symbols)]
    spots = {s: _spot(q) for s, q in zip(symbols, und_quotes, strict=True)}
    vq = quotes[n_legs + len(symbols)]
    vix = vq.last if math.isfinite(vq.last) and vq.last > 0 else vq.mid

    frames = []
    for s in symbols:
        try:
            got = await broker.historical_bars(
                Contract.stock(s), end=now, duration=bars_duration(settings), bar_size=BAR_SIZE
            )
        except BrokerError as exc:
            if exc.kind is not ErrorClass.DATA:
                raise
            log.warning("no intraday bars for %s: %s", s, exc)
            got = []
        frames.append(bars_frame(s, got))
    bars = pl.concat(frames) if frames else pl.DataFrame(schema=BARS_SCHEMA)
    await ensure_iv_history(broker, store, settings, symbols, now)
    iv = iv_context(store, settings, symbols, now)

    qframe = quotes_frame(quotes[:n_legs]) if n_legs else pl.DataFrame(schema=QUOTE_SCHEMA)
    live = list(QUOTE_SCHEMA)[1:-1]
    legs_q = legs.join(qframe, on="con_id", how="left").with_columns(
        pl.col("stale").fill_null(False)
    )
    # a frozen quote is not a measurement: the rules must see it as missing (NO_DATA)
    legs_q = legs_q.with_columns(
        pl.when(pl.col("stale"))
        .then(math.nan)
        .otherwise(pl.col(live))
        .fill_null(math.nan)
        .name.keep()
    )
    dividends = await load_dividends(broker, short_call_underlyings(legs))
    context = market_context(symbols, bars, spots, vix, iv, settings, now, dividends)
    return MarketView(
        as_of=now.astimezone(UTC),
        legs=legs_q,
        context=context,
        bars=bars,
        vix=vix if math.isfinite(vix) else math.nan,
        quoted=len(asked),
        delayed=sum(1 for q in quotes if q.delayed),
        delay_s=max((q.age_s for q in quotes if q.delayed), default=0.0),
        withheld=tuple(q.unavailable for q in quotes if q.unavailable),
    )


__all__ = [
    "BAR_SIZE",
    "CONTEXT_SCHEMA",
    "DIVIDEND_SCHEMA",
    "QUOTE_SCHEMA",
    "MarketView",
    "bars_duration",
    "ensure_iv_history",
    "held_legs",
    "iv_context",
    "load_dividends",
    "load_market",
    "market_context",
    "one_hour_moves",
    "quotes_frame",
    "short_call_underlyings",
]
