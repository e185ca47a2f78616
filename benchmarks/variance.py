"""Variance-analysis benchmark: 1,000,000 closed trades (200k live + 800k historical),
and the speed of the backtest that produces the historical side.

Runs the full nightly analysis (everything but the HTML report: Welch/KS/chi-square per
cell, bootstrap CIs, Holm, drift flags, strategy-type weights) and reports its wall time.
Goal: < 5 s on the reference machine.

Then runs the backtest (V6's own trading cycle over the simulated market, default
Settings: SPY/QQQ/IWM) for `--backtest-sessions` sessions at `--cycle-minutes` and reports
simulated sessions per second. Goal: >= 0.42 (a 252-session year in < 10 minutes).

Usage: python benchmarks/variance.py [--backtest-sessions 20] [--cycle-minutes 60]
Progress goes to stderr; the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime

from core.analysis.synthetic import synthetic_trades
from core.analysis.variance import analyse
from core.analysis.weights import update_weights
from core.backtest.run import run_backtest
from core.config import AnalysisSettings, Settings
from core.store import DeltaStore

N_LIVE = 200_000
N_HIST = 800_000
GOAL_S = 5.0
GOAL_SESSIONS_PER_S = 0.42  # 252 sessions in < 10 minutes


@dataclass(frozen=True)
class BacktestSpeed:
    sessions: int
    cycles: int
    seconds: float
    trades: int
    predictions: int
    outcomes: dict[str, int]

    @property
    def sessions_per_second(self) -> float:
        return self.sessions / self.seconds


def measure_backtest(sessions: int, cycle_minutes: int) -> BacktestSpeed:
    """Wall time of one whole run (set-up, cycles, export) into a scratch target store."""
    root = tempfile.mkdtemp(prefix="v6-bench-backtest-")

    def progress(done: int, total: int, at: datetime) -> None:
        if done % max(1, total // 10) == 0 or done == total:  # ~10 lines a run
            print(f"backtest: cycle {done}/{total} at {at:%Y-%m-%d %H:%M}Z", file=sys.stderr)

    try:
        t0 = time.perf_counter()
        result = asyncio.run(
            run_backtest(
                Settings(),
                DeltaStore(root),
                days=sessions,
                cycle_minutes=cycle_minutes,
                progress=progress,
                run_id="bench",
            )
        )
        seconds = time.perf_counter() - t0
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return BacktestSpeed(
        result.sessions,
        result.cycles,
        seconds,
        result.trades,
        result.predictions,
        result.outcomes,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backtest-sessions",
        type=int,
        default=20,
        help="simulated sessions for the backtest speed (0 skips it; default 20)",
    )
    parser.add_argument(
        "--cycle-minutes", type=int, default=60, help="backtest cycle spacing (default 60)"
    )
    args = parser.parse_args()
    if args.backtest_sessions < 0:
        parser.error(f"--backtest-sessions must be >= 0, got {args.backtest_sessions}")
    settings = AnalysisSettings()
    t0 = time.perf_counter()
    live, live_pred = synthetic_trades(N_LIVE, seed=1, pnl_pct_shift=-3.0)
    hist, hist_pred = synthetic_trades(N_HIST, seed=2, source="backtest", days=720)
    synth_s = time.perf_counter() - t0

    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        report = analyse(
            live,
            hist,
            live_pred,
            hist_pred,
            settings=settings,
            run_date=date(2026, 3, 31),
            computed_at=datetime(2026, 3, 31, 22, 30, tzinfo=UTC),
            hist_run_id="BT-SYNTH",
        )
        weights = update_weights(
            report.results,
            {},
            settings=settings,
            run_date=report.run_date,
            as_of=datetime(2026, 3, 31, 22, 30, tzinfo=UTC),
        )
        runs.append(time.perf_counter() - t0)
    median = sorted(runs)[len(runs) // 2]  # median of 3 (first run included: it is cold)
    print(f"synthesised {N_LIVE + N_HIST:,} trades in {synth_s:.2f} s")
    print(f"analysis runs (s): {', '.join(f'{r:.2f}' for r in runs)}")
    print(
        f"result rows: {report.results.height}, drift flags: {report.drifts.height}, "
        f"weights: {dict(zip(weights['strategy_type'], weights['weight'], strict=True))}"
    )
    backtest: dict[str, object] = {
        "backtest_days_per_second": None,
        "backtest_sessions": 0,
        "backtest_cycles": 0,
        "backtest_seconds": None,
        "backtest_meets_goal": None,
    }
    if args.backtest_sessions:
        speed = measure_backtest(args.backtest_sessions, args.cycle_minutes)
        rate = speed.sessions_per_second
        print(
            f"backtest: {speed.sessions} sessions, {speed.cycles} cycles in {speed.seconds:.1f} s "
            f"= {rate:.3f} sessions/s ({252 / rate / 60:.1f} min per 252-session year); "
            f"{speed.trades} trades, {speed.predictions} predictions, {speed.outcomes}"
        )
        backtest = {
            "backtest_days_per_second": round(rate, 3),
            "backtest_sessions": speed.sessions,
            "backtest_cycles": speed.cycles,
            "backtest_seconds": round(speed.seconds, 2),
            "backtest_meets_goal": rate >= GOAL_SESSIONS_PER_S,
            "backtest_cycle_minutes": args.cycle_minutes,
            "backtest_goal_days_per_second": GOAL_SESSIONS_PER_S,
            "backtest_trades": speed.trades,
        }
    print(
        json.dumps(
            {
                "benchmark": "variance",
                "trades": N_LIVE + N_HIST,
                "n_live": N_LIVE,
                "n_hist": N_HIST,
                "seconds": round(median, 3),
                "seconds_runs": [round(r, 3) for r in runs],
                "goal_seconds": GOAL_S,
                "meets_goal": median < GOAL_S,
                "result_rows": report.results.height,
                "drift_flags": report.drifts.height,
                **backtest,
                "machine": f"{platform.machine()} {platform.python_version()}",
            }
        )
    )


if __name__ == "__main__":
    main()
