"""Store benchmark: a simulated month of 1-minute futures bars through the collection path.

Two measurements in one run, on the same deterministic inputs (numpy, seed 7):

1. Ingest. One month = 21 Globex sessions x 23 h x 60 one-minute bars x 3 futures
   (ES, NQ, RTY; 86,940 bars). Production merges every minute (3 bars per commit, ~29k
   commits a month); to keep the benchmark bounded each simulated collection run here
   carries 60 minutes of bars (180 rows), so the month is 483 runs. Each run goes through
   the real per-run path: `prepare_batch` (pre-check split) + `write_collection` (store
   merge, validated, one commit). The baseline writes the same 483 batches with
   `polars.DataFrame.write_parquet`, one file per batch in a directory.
   -> ratio_merge_vs_parquet = merge path seconds / parquet seconds (goal <= 3).
   The run path also looks up the last stored bar (`last_stored_bars`) before fetching;
   that read is timed separately (ratio_run_path_vs_parquet includes it).
   For scale, the same month is also ingested as one merge per session (21 runs), and
   the hourly batches are appended bare with `write_deltalake` (no checks, no merge): the
   floor any Delta commit costs, against which the 3x goal can be judged.

2. Query. "Daily OHLCV of ES over the 30 days" (date-range + symbol filter, group by
   date) on the table the 483 commits left, before and after nightly maintenance
   (`maintain_table`: compaction, vacuum with 168 h retention, checkpoint). Median of 9.
   -> ratio_query_compaction = before / after (goal >= 5).

Last stdout line: one JSON object ("ratio" is the compaction speedup; both named ratios
are included). Progress goes to stderr.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
from deltalake import write_deltalake

from v6.core.marketdata.futures_collection import (
    last_stored_bars,
    prepare_batch,
    write_collection,
)
from v6.core.store import UTC_US, DeltaStore
from v6.core.store.maintenance import maintain_table

SERIES = [("ES", "ESH6", 6830.0), ("NQ", "NQH6", 25010.0), ("RTY", "RTYH6", 2500.0)]
SESSIONS = 21
SESSION_MIN = 23 * 60
RUN_MIN = 60
START = date(2026, 3, 2)
CAP = timedelta(hours=48)
QUERY_REPEATS = 9


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sessions() -> list[date]:
    days = [START + timedelta(days=i) for i in range(60)]
    return [d for d in days if d.weekday() < 5][:SESSIONS]


def synth_month(seed: int = 7) -> pl.DataFrame:
    """All bars of the month: each session opens 23:00 UTC the day before and runs 23 h."""
    rng = np.random.default_rng(seed)
    frames = []
    for symbol, contract, start_px in SERIES:
        level = np.log(start_px)
        for day in sessions():
            open_ts = datetime(day.year, day.month, day.day, tzinfo=UTC) - timedelta(hours=1)
            steps = rng.normal(0.0, 4e-4, SESSION_MIN)
            close = np.exp(level + np.cumsum(steps))
            level = float(np.log(close[-1]))
            open_ = np.concatenate([[close[0]], close[:-1]])
            wiggle = np.abs(rng.normal(0.0, 2e-4, SESSION_MIN)) * close
            ts = pl.datetime_range(
                open_ts,
                open_ts + timedelta(minutes=SESSION_MIN - 1),
                "1m",
                eager=True,
                time_zone="UTC",
            ).cast(UTC_US)
            frames.append(
                pl.DataFrame(
                    {
                        "symbol": symbol,
                        "contract": contract,
                        "ts": ts,
                        "open": open_,
                        "high": np.maximum(open_, close) + wiggle,
                        "low": np.minimum(open_, close) - wiggle,
                        "close": close,
                        "volume": rng.integers(10, 2000, SESSION_MIN, dtype=np.int64),
                    }
                )
            )
    return pl.concat(frames).sort("ts", "symbol")


def batches(month: pl.DataFrame, minutes: int | None) -> list[pl.DataFrame]:
    """The month cut into collection runs of `minutes` of bars (all three futures each);
    `None` = one run per session."""
    if minutes is None:
        run = (pl.col("ts") + timedelta(hours=1)).dt.date()  # session opens 23:00 UTC
    else:
        run = (pl.col("ts") - pl.col("ts").min()).dt.total_minutes() // minutes
    keyed = month.with_columns(run.alias("_run"))
    return [g.drop("_run") for _, g in keyed.group_by("_run", maintain_order=True)]


def ingest_delta(root: Path, runs: list[pl.DataFrame], interval_min: int) -> dict[str, float]:
    """Every run through the collection write path; returns seconds by step."""
    store = DeltaStore(root)
    store.ensure("futures_bars")
    series = [(s, c) for s, c, _ in SERIES]
    lookup = write = 0.0
    for i, batch in enumerate(runs):
        newest = batch.get_column("ts").max()
        assert isinstance(newest, datetime)
        now = newest + timedelta(minutes=1, seconds=5)
        t0 = time.perf_counter()
        last = last_stored_bars(store, "futures_bars", series, now, CAP)
        t1 = time.perf_counter()
        prepared = prepare_batch(
            "future", batch, series, last, now, interval=timedelta(minutes=interval_min), cap=CAP
        )
        result = write_collection(store, futures=prepared)
        t2 = time.perf_counter()
        assert result.inserted("futures_bars") == batch.height, "every bar is new exactly once"
        lookup += t1 - t0
        write += t2 - t1
        if (i + 1) % 100 == 0:
            say(f"  delta runs: {i + 1}/{len(runs)}  merge {write:.1f}s  lookup {lookup:.1f}s")
    return {"lookup_s": lookup, "merge_s": write}


def ingest_plain_delta(root: Path, runs: list[pl.DataFrame]) -> float:
    """Floor for any Delta commit: a bare `write_deltalake` append, no checks, no merge."""
    uri = str(root)
    t0 = time.perf_counter()
    for batch in runs:
        write_deltalake(
            uri,
            batch.with_columns(pl.col("ts").dt.date().alias("date")),
            mode="append",
            partition_by=["date"],
        )
    return time.perf_counter() - t0


def ingest_parquet(root: Path, runs: list[pl.DataFrame]) -> float:
    root.mkdir(parents=True)
    t0 = time.perf_counter()
    for i, batch in enumerate(runs):
        batch.write_parquet(root / f"part-{i:05d}.parquet")
    return time.perf_counter() - t0


def daily_ohlcv(store: DeltaStore, first: date, last: date) -> pl.DataFrame:
    where = (pl.col("date") >= first) & (pl.col("date") <= last) & (pl.col("symbol") == "ES")
    return (
        store.read("futures_bars", where=where)
        .group_by("date")
        .agg(
            pl.col("open").sort_by("ts").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").sort_by("ts").last(),
            pl.col("volume").sum(),
            pl.len().alias("bars"),
        )
        .sort("date")
        .collect()
    )


def timed(fn: Callable[[], pl.DataFrame], repeats: int) -> tuple[float, pl.DataFrame]:
    times, out = [], pl.DataFrame()
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="v6-bench-store-"))
    try:
        month = synth_month()
        hourly = batches(month, RUN_MIN)
        say(
            f"synthesised {month.height:,} bars; {len(hourly)} hourly runs of "
            f"~{month.height // len(hourly)} rows"
        )

        say("ingest: plain parquet, one file per run")
        parquet_s = ingest_parquet(work / "parquet", hourly)
        say(f"  parquet {parquet_s:.3f}s")
        say("ingest: collection merge path, one commit per run")
        delta = ingest_delta(work / "delta", hourly, RUN_MIN)
        ratio_merge = delta["merge_s"] / parquet_s
        ratio_run = (delta["merge_s"] + delta["lookup_s"]) / parquet_s
        say(
            f"  merge {delta['merge_s']:.2f}s, lookup {delta['lookup_s']:.2f}s, "
            f"ratio merge/parquet {ratio_merge:.1f}x"
        )

        say("ingest: bare Delta append per run (floor of any Delta commit)")
        plain_delta_s = ingest_plain_delta(work / "plain-delta", hourly)
        say(f"  bare append {plain_delta_s:.2f}s = {plain_delta_s / parquet_s:.1f}x parquet")

        daily = batches(month, None)
        say(f"for scale: {len(daily)} session-sized runs of ~{month.height // len(daily)} rows")
        daily_parquet_s = ingest_parquet(work / "parquet-daily", daily)
        daily_delta = ingest_delta(work / "delta-daily", daily, SESSION_MIN)
        ratio_daily = daily_delta["merge_s"] / daily_parquet_s
        say(
            f"  merge {daily_delta['merge_s']:.2f}s vs parquet {daily_parquet_s:.3f}s "
            f"= {ratio_daily:.1f}x"
        )

        store = DeltaStore(work / "delta")
        days = month.select(pl.col("ts").dt.date().unique().sort()).to_series()
        first, last = days.min(), days.max()
        assert isinstance(first, date) and isinstance(last, date)
        say(f"query: daily OHLCV of ES, {first} .. {last} ({(last - first).days + 1} days)")
        files_before = store.stats("futures_bars").files
        q_before, res_before = timed(lambda: daily_ohlcv(store, first, last), QUERY_REPEATS)
        say(f"  before maintenance: {files_before} files, {q_before * 1000:.1f} ms")
        maint = maintain_table(
            store, "futures_bars", retention_hours=168, closed_before=last + timedelta(days=1)
        )
        q_after, res_after = timed(lambda: daily_ohlcv(store, first, last), QUERY_REPEATS)
        say(
            f"  maintenance {maint.seconds:.2f}s: files {maint.files_before} -> "
            f"{maint.files_after}; query {q_after * 1000:.1f} ms"
        )
        assert res_before.equals(res_after), "compaction must not change the answer"
        assert int(res_after["bars"].sum()) == month.filter(pl.col("symbol") == "ES").height
        ratio_query = q_before / q_after

        total = time.perf_counter() - t_start
        print(
            json.dumps(
                {
                    "ratio": round(ratio_query, 2),
                    "ratio_query_compaction": round(ratio_query, 2),
                    "ratio_merge_vs_parquet": round(ratio_merge, 2),
                    "ratio_run_path_vs_parquet": round(ratio_run, 2),
                    "ratio_merge_vs_parquet_session_batches": round(ratio_daily, 2),
                    "ratio_bare_delta_append_vs_parquet": round(plain_delta_s / parquet_s, 2),
                    "goal_merge_within_3x": ratio_merge <= 3.0,
                    "goal_compaction_5x": ratio_query >= 5.0,
                    "bars": month.height,
                    "runs": len(hourly),
                    "rows_per_run": month.height // len(hourly),
                    "merge_s": round(delta["merge_s"], 3),
                    "lookup_s": round(delta["lookup_s"], 3),
                    "parquet_s": round(parquet_s, 4),
                    "merge_ms_per_run": round(1000 * delta["merge_s"] / len(hourly), 2),
                    "parquet_ms_per_run": round(1000 * parquet_s / len(hourly), 3),
                    "query_before_ms": round(q_before * 1000, 2),
                    "query_after_ms": round(q_after * 1000, 2),
                    "files_before": maint.files_before,
                    "files_after": maint.files_after,
                    "maintenance_s": maint.seconds,
                    "seconds": round(total, 2),
                }
            )
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
