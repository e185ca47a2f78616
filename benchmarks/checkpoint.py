"""Checkpoint interval late in a simulated day: what a commit and a read cost after
hundreds of commits, for several `delta.checkpointInterval` values.

One table per interval (`orders`, the book table the executor writes most), written
through the real store path (`DeltaStore.append`, validation included) one small batch
per commit, like a busy trading day: COMMITS commits of 3 rows each. The intervals are
interleaved commit by commit so machine load hits all of them alike. Measured over the
last LATE commits: the median append and the median open+read of the whole table
(`DeltaStore.read(...).collect()`, what a cycle's book read costs).

A fresh table says nothing here: with 5 commits every interval reads the same log. Late
in the day, between two checkpoints a snapshot load replays up to `interval` JSON
commits, so a short interval makes every open cheaper and costs one checkpoint write
(a parquet of the live file list) every `interval` commits.

Last stdout line: one JSON object; "best_interval" is the interval with the lowest
append + read median. `python benchmarks/checkpoint.py [COMMITS]`.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from core.store import DeltaStore

INTERVALS = (10, 20, 50, 100)
COMMITS = int(sys.argv[1]) if len(sys.argv) > 1 else 400
LATE = 60
T0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def batch(i: int) -> pl.DataFrame:
    n = 3
    return pl.DataFrame(
        {
            "order_ref": [f"V6-{i:05d}-{k}" for k in range(n)],
            "strategy_id": [f"S{i % 40:03d}"] * n,
            "order_id": [i * 10 + k for k in range(n)],
            "perm_id": [1_000_000 + i * 10 + k for k in range(n)],
            "con_id": [500 + k for k in range(n)],
            "action": ["BUY", "SELL", "BUY"],
            "quantity": [1, 2, 1],
            "filled": [0, 2, 1],
            "status": ["SUBMITTED", "FILLED", "FILLED"],
            "avg_fill_price": [None, 1.25, 0.8],
            "limit_price": [1.3, 1.25, 0.8],
            "message": [""] * n,
            "updated_at": [T0 + timedelta(seconds=i * 30 + k) for k in range(n)],
        },
        schema_overrides={"updated_at": pl.Datetime("us", "UTC")},
    )


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="v6-bench-checkpoint-"))
    try:
        stores = {n: DeltaStore(work / f"i{n}", checkpoint_interval=n) for n in INTERVALS}
        append: dict[int, list[float]] = {n: [] for n in INTERVALS}
        read: dict[int, list[float]] = {n: [] for n in INTERVALS}
        for i in range(COMMITS):
            frame = batch(i)
            for n, store in stores.items():
                t0 = time.perf_counter()
                store.append("orders", frame)
                t1 = time.perf_counter()
                if i >= COMMITS - LATE:
                    rows = store.read("orders").collect().height
                    t2 = time.perf_counter()
                    assert rows == 3 * (i + 1)
                    append[n].append(t1 - t0)
                    read[n].append(t2 - t1)
            if i % 100 == 99:
                say(f"{i + 1} commits (load {os.getloadavg()[0]:.2f})")
        out = {
            n: {
                "append_ms": round(1000 * statistics.median(append[n]), 2),
                "read_ms": round(1000 * statistics.median(read[n]), 2),
            }
            for n in INTERVALS
        }
        for n, v in out.items():
            say(f"interval {n:>3}: append {v['append_ms']} ms, read {v['read_ms']} ms")
        best = min(out, key=lambda n: out[n]["append_ms"] + out[n]["read_ms"])
        print(
            json.dumps(
                {
                    "commits": COMMITS,
                    "late_commits_measured": LATE,
                    "by_interval": {str(n): v for n, v in out.items()},
                    "best_interval": best,
                    "load_end": round(os.getloadavg()[0], 2),
                }
            )
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
