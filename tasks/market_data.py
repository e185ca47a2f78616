"""Tasks of futures collection: thin wrappers over `core.marketdata` and the lead-lag
analysis.

Broker reads retry with back-off (they are read-only; a repeat asks again and merges
the same rows). Store writes are idempotent merges, so they retry too. Nothing here
caches: inputs hold a live broker connection and results are in-memory frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import polars as pl
from prefect import get_run_logger, task
from prefect.artifacts import acreate_table_artifact
from prefect.cache_policies import NO_CACHE

from core.analysis.futures import compute_signals, write_signals
from core.broker.base import Broker
from core.domain import Contract
from core.marketdata.futures_collection import (
    CollectionWrite,
    PreparedBatch,
    fetch_bars,
    last_stored_bars,
    prepare_batch,
    quotes_frame,
    resolve_front_contracts,
    series_id,
    summary_rows,
    write_collection,
)
from core.runtime import current_runtime

COLLECTION_KEY = "futures-collection"


@task(name="resolve-front-futures", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5])
async def resolve_front_futures(
    broker: Broker, symbols: Sequence[str], now: datetime
) -> list[Contract]:
    roll_days = current_runtime().settings.universe.futures_roll_days_before_expiry
    contracts = await resolve_front_contracts(broker, symbols, now, roll_days)
    get_run_logger().info(
        "front contracts (roll %d days before expiry): %s",
        roll_days,
        ", ".join(c.local_symbol for c in contracts),
    )
    return contracts


@task(name="qualify-underlyings", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5])
async def qualify_underlyings(broker: Broker, symbols: Sequence[str]) -> list[Contract]:
    got = await broker.qualify([Contract.stock(s) for s in symbols])
    missing = [s for s, c in zip(symbols, got, strict=True) if c is None]
    if missing:
        raise LookupError(
            f"broker does not know the underlyings {missing}; fix universe.underlyings"
        )
    return [c for c in got if c is not None]


@task(name="collect-bars", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5])
async def collect_bars(
    broker: Broker, contracts: Sequence[Contract], kind: str, now: datetime
) -> PreparedBatch:
    """Everything since each series' last stored bar, checked and split (nothing written)."""
    rt = current_runtime()
    table = "futures_bars" if kind == "future" else "underlying_bars"
    cap = timedelta(hours=rt.settings.universe.futures_backfill_max_hours)
    series = [(c.symbol, series_id(c)) for c in contracts]
    last = last_stored_bars(rt.store, table, series, now, cap)
    frames = [
        await fetch_bars(broker, c, last=last.get((c.symbol, series_id(c))), now=now, cap=cap)
        for c in contracts
    ]
    batch = prepare_batch(
        kind,
        pl.concat(frames),
        series,
        last,
        now,
        interval=timedelta(minutes=rt.settings.schedules.collection_every_min),
        cap=cap,
    )
    get_run_logger().info(
        "%s bars: %d good, %d quarantined, %d still in progress",
        kind,
        batch.split.good.height,
        batch.split.quarantined.height,
        batch.pending,
    )
    return batch


@task(name="snapshot-futures-quotes", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5])
async def snapshot_futures_quotes(broker: Broker, contracts: Sequence[Contract]) -> pl.DataFrame:
    return quotes_frame(await broker.quotes(contracts))


@task(name="store-collection", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5])
async def store_collection(
    futures: PreparedBatch, underlyings: PreparedBatch | None, quotes: pl.DataFrame
) -> CollectionWrite:
    """One merge per table; a retry after a partial failure re-merges to the same state."""
    return write_collection(
        current_runtime().store, futures=futures, underlyings=underlyings, quotes=quotes
    )


@task(name="compute-futures-signals", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=[2])
async def compute_futures_signals(now: datetime) -> pl.DataFrame:
    rt = current_runtime()
    signals = compute_signals(rt.store, rt.settings, now)
    write_signals(rt.store, signals)
    log = get_run_logger()
    for row in signals.iter_rows(named=True):
        if row["status"] == "ok":
            log.info(
                "%s <- %s: lead %s min (corr %.2f), expected move %s%%, direction %s",
                row["underlying"],
                row["future"],
                row["best_lag_min"],
                row["best_corr"],
                _fmt(row["expected_move_pct"]),
                row["direction"],
            )
        else:
            log.info(
                "%s <- %s: need %d days, have %d",
                row["underlying"],
                row["future"],
                rt.settings.analysis.lead_lag_min_days,
                row["days_of_data"],
            )
    return signals


@task(name="publish-collection-artifact", cache_policy=NO_CACHE)
async def publish_collection_artifact(
    batches: Sequence[PreparedBatch], written: CollectionWrite, now: datetime
) -> list[dict[str, Any]]:
    """One table per run: what each series stored, gaps filled, rows quarantined."""
    rows = summary_rows(batches, written)
    await acreate_table_artifact(
        rows, key=COLLECTION_KEY, description=f"futures collection at {now.isoformat()}"
    )
    return rows


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.3f}"
