"""The steps of one futures collection run, free of Prefect so they test in plain pytest.

A run is: resolve the front contracts, find the last stored bar of each, ask the broker
for every bar since then (capped), check the bars, and merge them in one commit per
table. Because each run asks for "everything since the last stored bar" and merges on
(symbol, contract, ts), a missed run is healed by the next one and a repeated run
changes nothing (the store's merge commits nothing when no row changed).

Bars still in progress (ts <= now < ts + 1 min) are left for the next run: storing a
partial bar would make the next run rewrite it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import polars as pl

from core.broker.base import Broker
from core.domain import Bar, Contract, Quote
from core.domain.timezones import UTC_US
from core.marketdata.futures_contracts import front_contract
from core.marketdata.futures_quality import QualitySplit, split_bars
from core.store.delta import DeltaStore, WriteResult

log = logging.getLogger(f"v6.{__name__}")

BAR = timedelta(minutes=1)
# How far back the first, cheap look for the last stored bar reaches (see last_stored_bars):
# ten one-minute collection intervals.
RECENT = timedelta(minutes=10)
_BAR_SCHEMA = pl.Schema(
    {
        "symbol": pl.String(),
        "contract": pl.String(),
        "ts": UTC_US,
        "open": pl.Float64(),
        "high": pl.Float64(),
        "low": pl.Float64(),
        "close": pl.Float64(),
        "volume": pl.Int64(),
    }
)
_QUOTE_SCHEMA = pl.Schema(
    {
        "symbol": pl.String(),
        "contract": pl.String(),
        "ts": UTC_US,
        "bid": pl.Float64(),
        "ask": pl.Float64(),
        "last": pl.Float64(),
    }
)
SUMMARY_SCHEMA = pl.Schema(
    {
        "kind": pl.String(),
        "symbol": pl.String(),
        "contract": pl.String(),
        "last_stored_before": UTC_US,
        "newest_bar": UTC_US,
        "bars_fetched": pl.Int64(),
        "bars_pending": pl.Int64(),
        "bars_new": pl.Int64(),
        "gap_filled": pl.Int64(),
        "gap_truncated": pl.Boolean(),
        "quarantined": pl.Int64(),
    }
)


# -- contracts -------------------------------------------------------------------------
async def resolve_front_contracts(
    broker: Broker, symbols: Sequence[str], now: datetime, roll_days_before_expiry: int
) -> list[Contract]:
    """Pick each root's front contract by the roll rule and have the broker qualify it."""
    wanted = [front_contract(s, now, roll_days_before_expiry) for s in symbols]
    qualified = await broker.qualify(wanted)
    unknown = [w.local_symbol for w, q in zip(wanted, qualified, strict=True) if q is None]
    if unknown:
        raise LookupError(
            f"broker does not know the front futures contracts {unknown} (roll rule: "
            f"{roll_days_before_expiry} days before expiry); check universe.futures and the "
            "broker's futures permissions"
        )
    return [_with_local_symbol(w, q) for w, q in zip(wanted, qualified, strict=True) if q]


def _with_local_symbol(wanted: Contract, got: Contract) -> Contract:
    return (
        got if got.local_symbol else got.with_con_id(got.con_id, local_symbol=wanted.local_symbol)
    )


def series_id(contract: Contract) -> str:
    """The `contract` value a bar is stored under: the local symbol for futures, the
    symbol itself for underlyings (so quarantine rows of either kind share one key)."""
    return contract.local_symbol or contract.symbol


# -- frames ----------------------------------------------------------------------------
def bars_frame(symbol: str, contract: str, bars: Iterable[Bar]) -> pl.DataFrame:
    """Broker bars as a typed frame (the one per-bar conversion, at the I/O edge).

    Missing prices stay NaN and reach the quality check, which quarantines them."""
    rows = [
        (symbol, contract, b.time, float(b.open), float(b.high), float(b.low), float(b.close),
         int(b.volume))
        for b in bars
    ]  # fmt: skip
    return pl.DataFrame(rows, schema=_BAR_SCHEMA, orient="row")


def quotes_frame(quotes: Iterable[Quote]) -> pl.DataFrame:
    """Futures quote snapshots; NaN or non-positive prices mean "no quote" and become null."""

    def px(x: float) -> float | None:
        return None if x is None or math.isnan(x) or x <= 0 else float(x)

    rows = [
        (q.contract.symbol, series_id(q.contract), q.time, px(q.bid), px(q.ask), px(q.last))
        for q in quotes
    ]
    if not rows:
        return pl.DataFrame(schema=_QUOTE_SCHEMA)
    return pl.DataFrame(rows, schema=_QUOTE_SCHEMA, orient="row")


# -- gap detection -----------------------------------------------------------------------
def last_stored_bars(
    store: DeltaStore,
    table: str,
    series: Sequence[tuple[str, str]],
    now: datetime,
    lookback: timedelta,
    *,
    recent: timedelta = RECENT,
) -> dict[tuple[str, str], datetime]:
    """Newest stored bar ts per (symbol, contract) within `lookback` of `now`.

    Only a gap the run may still backfill matters, so older history is never opened.
    In steady state the newest bar is one collection interval old, so the first look
    covers only the last `recent` (a few intervals; file stats then skip every file but
    the newest few, where a day partition holds one file per run until nightly
    compaction); only series not found there -- after an outage, or a new contract --
    are looked up over the whole lookback. Underlying tables have no contract column;
    their key is (symbol, symbol).
    """
    if not series:
        return {}
    out = _newest_bars(store, table, series, now, min(recent, lookback))
    missing = [k for k in series if k not in out]
    if missing and lookback > recent:
        out.update(_newest_bars(store, table, missing, now, lookback))
    return out


def _newest_bars(
    store: DeltaStore,
    table: str,
    series: Sequence[tuple[str, str]],
    now: datetime,
    lookback: timedelta,
) -> dict[tuple[str, str], datetime]:
    since = now - lookback
    symbols = sorted({s for s, _ in series})
    where = (
        (pl.col("date") >= since.date())
        & (pl.col("ts") >= pl.lit(since).cast(UTC_US))
        & pl.col("symbol").is_in(symbols)
    )
    has_contract = "contract" in store.spec(table).schema
    group = ["symbol", "contract"] if has_contract else ["symbol"]
    newest = (
        store.read(table, where=where, columns=[*group, "ts"])
        .group_by(group)
        .agg(pl.col("ts").max())
        .collect()
    )
    out: dict[tuple[str, str], datetime] = {}
    for row in newest.iter_rows(named=True):
        key = (row["symbol"], row["contract"] if has_contract else row["symbol"])
        out[key] = row["ts"]
    wanted = set(series)
    return {k: v for k, v in out.items() if k in wanted}


def request_duration(last: datetime | None, now: datetime, cap: timedelta) -> timedelta:
    """How far back a request ending at `now` must reach: to the last stored bar (inclusive,
    so a corrected bar is refreshed), at least two bars, at most `cap`."""
    if last is None:
        return cap
    wanted = now - last + BAR
    whole = timedelta(minutes=math.ceil(wanted / BAR))
    return min(max(whole, 2 * BAR), cap)


async def fetch_bars(
    broker: Broker, contract: Contract, *, last: datetime | None, now: datetime, cap: timedelta
) -> pl.DataFrame:
    """1-minute bars of `contract` since `last` (or `cap` back when nothing is stored)."""
    duration = request_duration(last, now, cap)
    bars = await broker.historical_bars(contract, end=now, duration=duration, bar_size="1 min")
    return bars_frame(contract.symbol, series_id(contract), bars)


# -- one run ---------------------------------------------------------------------------
@dataclass(frozen=True)
class PreparedBatch:
    """The rows a run will write, and what it found out along the way."""

    split: QualitySplit
    summary: pl.DataFrame  # SUMMARY_SCHEMA, one row per series
    pending: int


def prepare_batch(
    kind: str,
    fetched: pl.DataFrame,
    series: Sequence[tuple[str, str]],
    last: dict[tuple[str, str], datetime],
    now: datetime,
    *,
    interval: timedelta,
    cap: timedelta,
) -> PreparedBatch:
    """Trim in-progress bars, split good from bad, and count new and gap-filling bars.

    A bar is *new* when it is newer than the last stored bar of its series; it *fills a
    gap* when the previous scheduled run (one `interval` ago) should already have stored
    it, i.e. it had closed by then. On a series' first run every bar fills the gap.
    """
    now_us = pl.lit(now).cast(UTC_US)
    in_progress = (pl.col("ts") <= now_us) & (pl.col("ts") + pl.duration(minutes=1) > now_us)
    pending = fetched.filter(in_progress)
    split = split_bars(fetched.filter(~in_progress), now)

    lasts = pl.DataFrame(
        {
            "symbol": [s for s, _ in series],
            "contract": [c for _, c in series],
            "last_stored_before": [last.get(k) for k in series],
        },
        schema={"symbol": pl.String(), "contract": pl.String(), "last_stored_before": UTC_US},
    )
    prev_run_edge = pl.lit(now - interval).cast(UTC_US)
    is_new = pl.col("last_stored_before").is_null() | (pl.col("ts") > pl.col("last_stored_before"))
    good = split.good.join(lasts, on=["symbol", "contract"], how="left")
    per_good = good.group_by("symbol", "contract").agg(
        pl.col("ts").max().alias("newest_bar"),
        is_new.sum().cast(pl.Int64).alias("bars_new"),
        (is_new & (pl.col("ts") + pl.duration(minutes=1) <= prev_run_edge))
        .sum()
        .cast(pl.Int64)
        .alias("gap_filled"),
    )
    per_fetched = fetched.group_by("symbol", "contract").agg(
        pl.len().cast(pl.Int64).alias("bars_fetched"),
        in_progress.sum().cast(pl.Int64).alias("bars_pending"),
    )
    per_bad = split.quarantined.group_by("symbol", "contract").agg(
        pl.len().cast(pl.Int64).alias("quarantined")
    )
    floor = pl.lit(now - cap).cast(UTC_US)
    summary = (
        lasts.join(per_fetched, on=["symbol", "contract"], how="left")
        .join(per_good, on=["symbol", "contract"], how="left")
        .join(per_bad, on=["symbol", "contract"], how="left")
        .with_columns(
            pl.lit(kind).alias("kind"),
            pl.col(
                "bars_fetched", "bars_pending", "bars_new", "gap_filled", "quarantined"
            ).fill_null(0),
            (
                pl.col("last_stored_before").is_not_null() & (pl.col("last_stored_before") < floor)
            ).alias("gap_truncated"),
        )
        .select(SUMMARY_SCHEMA.names())
        .cast(SUMMARY_SCHEMA)
    )
    for row in summary.filter(pl.col("gap_truncated")).iter_rows(named=True):
        log.warning(
            "%s %s: last stored bar %s is older than the backfill cap (%s); bars before %s are "
            "lost unless backfilled by hand",
            kind,
            row["contract"],
            row["last_stored_before"],
            cap,
            now - cap,
        )
    return PreparedBatch(split=split, summary=summary, pending=pending.height)


@dataclass(frozen=True)
class CollectionWrite:
    """What each table received in this run (one commit per table at most)."""

    results: dict[str, WriteResult] = field(default_factory=dict)

    def inserted(self, table: str) -> int:
        res = self.results.get(table)
        return res.rows_inserted if res else 0

    def updated(self, table: str) -> int:
        res = self.results.get(table)
        return res.rows_updated if res else 0


def write_collection(
    store: DeltaStore,
    *,
    futures: PreparedBatch | None = None,
    underlyings: PreparedBatch | None = None,
    quotes: pl.DataFrame | None = None,
) -> CollectionWrite:
    """Merge the run's rows: one commit per table, none when nothing changed.

    Bars upsert (a corrected bar replaces the stored one); quarantine is insert-only, so
    the same bad bar seen again keeps its first `quarantined_at` and commits nothing.
    """
    results: dict[str, WriteResult] = {}
    bad = [b.split.quarantined for b in (futures, underlyings) if b is not None]
    bad = [b for b in bad if not b.is_empty()]
    if bad:
        results["futures_quarantine"] = store.merge(
            "futures_quarantine", pl.concat(bad), update=False
        )
    if futures is not None:
        results["futures_bars"] = store.merge("futures_bars", futures.split.good)
    if underlyings is not None:
        results["underlying_bars"] = store.merge(
            "underlying_bars", underlyings.split.good.drop("contract")
        )
    if quotes is not None and not quotes.is_empty():
        results["futures_quotes"] = store.merge("futures_quotes", quotes)
    for name, res in results.items():
        log.info(
            "%s: %d inserted, %d updated (version %s)",
            name,
            res.rows_inserted,
            res.rows_updated,
            res.version,
        )
    return CollectionWrite(results)


def summary_rows(
    batches: Sequence[PreparedBatch], written: CollectionWrite
) -> list[dict[str, object]]:
    """JSON-ready rows for the run's report: one per series, then a total whose stored
    counts come from the store's merge metrics (what really changed)."""
    frames = [b.summary for b in batches]
    summary = pl.concat(frames) if frames else pl.DataFrame(schema=SUMMARY_SCHEMA)
    rows: list[dict[str, object]] = [
        {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}
        for row in summary.iter_rows(named=True)
    ]
    stored = written.inserted("futures_bars") + written.inserted("underlying_bars")
    totals = summary.select(
        pl.col("bars_fetched", "bars_pending", "bars_new", "gap_filled", "quarantined").sum()
    ).row(0, named=True)
    rows.append(
        {
            "kind": "total",
            "symbol": "",
            "contract": "",
            "last_stored_before": None,
            "newest_bar": None,
            **totals,
            "gap_truncated": bool(summary["gap_truncated"].any()),
            "stored_inserted": stored,
            "stored_updated": written.updated("futures_bars") + written.updated("underlying_bars"),
            "quarantine_inserted": written.inserted("futures_quarantine"),
            "quotes_inserted": written.inserted("futures_quotes"),
        }
    )
    return rows
