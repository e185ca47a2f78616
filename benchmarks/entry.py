"""Benchmark: one trading cycle's entry planning over simulated chain snapshots.

Snapshots the expiry nearest target DTE for every configured underlying from the market
simulator (SimBroker, strikes within `chain_strike_band_pct` of spot), then times
`plan_entries` (prepare chain, skew fit per expiry, strike selection, three structures,
scoring, every portfolio limit) against an empty book. Reports the best of --repeat runs
(the machine is shared; the minimum is the least noisy estimate). Goal: well under a second
per cycle, so entry planning is never what makes a 5-minute cycle late.

Usage: python benchmarks/entry.py [--repeat 20]
Progress goes to stderr; the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import polars as pl

from core.broker.sim import SimBroker
from core.config import Settings
from core.domain import AccountSummary
from core.risk.limits import Book
from core.strategy.chain import snapshot_chain
from core.strategy.pipeline import plan_entries


async def snapshots(settings: Settings) -> tuple[pl.DataFrame, SimBroker]:
    broker = SimBroker.from_settings(settings)
    await broker.connect()
    now = broker.clock.now()
    frames = [
        await snapshot_chain(broker, u, settings.strategies, now)
        for u in settings.universe.underlyings
    ]
    return pl.concat(frames), broker


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    settings = Settings()
    chain, broker = asyncio.run(snapshots(settings))
    now = broker.clock.now()
    account = AccountSummary("DU0000001", 100_000.0, 200_000.0, 100_000.0, 0.0)
    print(
        f"chain rows: {chain.height} over {chain['underlying'].n_unique()} underlyings",
        file=sys.stderr,
    )
    plan = plan_entries(chain, Book.empty(), account, settings, None, None, now)  # warm-up
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        plan = plan_entries(chain, Book.empty(), account, settings, None, None, now)
        times.append(time.perf_counter() - t0)
    print(
        json.dumps(
            {
                "seconds": round(min(times), 4),
                "median_seconds": round(sorted(times)[len(times) // 2], 4),
                "chain_rows": chain.height,
                "candidates": plan.candidates.frame.height,
                "accepted": len(plan.accepted),
            }
        )
    )


if __name__ == "__main__":
    main()
