"""Tasks of the IV history: thin wrappers over `core.marketdata.iv_history`.

The backfill reads the broker (read-only) and merges idempotently, so it retries with
back-off: a repeat asks again and writes nothing new. Stats only read the store. Nothing
caches: the broker input holds a live connection and results are in-memory frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import polars as pl
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from core.broker.base import Broker
from core.calendar import MarketCalendar
from core.marketdata.iv_history import (
    IVBackfill,
    backfill_iv_history,
    iv_stats,
    record_atm_iv,
)
from core.runtime import current_runtime


@task(name="backfill-iv-history", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
async def backfill_iv_history_task(
    broker: Broker, now: datetime, underlyings: Sequence[str] | None = None
) -> IVBackfill:
    """Daily IV bars since each underlying's last broker-recorded day (a year of them on
    a fresh install) into `iv_history`; underlyings default to `universe.underlyings`."""
    rt = current_runtime()
    symbols = list(underlyings) if underlyings is not None else rt.settings.universe.underlyings
    result = await backfill_iv_history(
        broker, rt.store, symbols, now, days=rt.settings.analysis.iv_history_days
    )
    logger = get_run_logger()
    logger.info(
        "iv history: %d rows written (bars per underlying: %s)",
        result.written,
        ", ".join(f"{s}={n}" for s, n in result.fetched.items()) or "none",
    )
    for symbol, why in result.errors.items():
        logger.warning("iv history %s: no IV bars from the broker: %s", symbol, why)
    return result


@task(name="record-atm-iv", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5])
async def record_atm_iv_task(frame: pl.DataFrame, now: datetime) -> int:
    """Today's chain-measured ATM IV (per underlying, or per expiry with T) into
    `iv_history`, unless the broker's daily bar already covers today."""
    rt = current_runtime()
    written = record_atm_iv(
        rt.store, frame, now=now, calendar=MarketCalendar(rt.settings.schedules)
    )
    get_run_logger().info("iv history: %d chain ATM IV rows recorded", written)
    return written


@task(name="iv-stats", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5])
async def iv_stats_task(now: datetime, underlyings: Sequence[str] | None = None) -> pl.DataFrame:
    """[underlying, iv_now, iv_rank, iv_percentile, n_days, as_of, reason] per underlying;
    rank/percentile are null (with the reason) where the history is too short or stale."""
    rt = current_runtime()
    a = rt.settings.analysis
    symbols = list(underlyings) if underlyings is not None else rt.settings.universe.underlyings
    stats = iv_stats(
        rt.store,
        symbols,
        now,
        min_history=a.iv_min_history_days,
        lookback_days=a.iv_history_days,
        max_age_days=a.iv_max_age_days,
    )
    logger = get_run_logger()
    for row in stats.filter(pl.col("reason").is_not_null()).iter_rows(named=True):
        logger.warning("iv stats %s: %s", row["underlying"], row["reason"])
    return stats
