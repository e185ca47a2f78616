"""Benchmark: the vectorised exit-rules engine vs a per-strategy Python loop, same rules.

100,000 strategies (every strategy type; 85% a typical managed book, 15% rows with every
input clustered at its rule thresholds; 0.5% missing per input; remembered state for half of
them) are decided twice in one run:
- `core.rules.evaluate`: one polars pass producing the full audit row per strategy;
- `rules_reference.evaluate_loop` (beside this file): one dict per strategy, one function per rule,
  the way most bots do it, building the same audit record (it gets its rows as dicts,
  prepared outside the timing).
Both must agree on every strategy (`reference.compare`): action, urgency, rule, priority,
missing inputs, suppressed/disabled rules, reduced and DTE exactly; peak, target, IV/VIX
changes and effective inputs to 1e-9.

Timing, `timeit`-style: after a warm-up, --repeat rounds; in each the engine runs 5 times
back to back and the loop once (one 1.5 s call already averages its own noise); the best
time per call of each side is reported (the minimum is the least noisy estimate of the cost
itself; alternating rounds keep the shared machine's load alike for both); GC is off while
timing. Goal: ratio >= 50.

Usage: python benchmarks/rules.py [--n 100000] [--repeat 7] [--seed 6]
Progress goes to stderr; the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
import polars as pl
from rules_reference import compare, evaluate_loop

from core.config import RuleSettings
from core.domain.strategies import StrategyType
from core.domain.timezones import UTC_US
from core.rules import evaluate

NOW = datetime(2026, 3, 2, 20, 0, tzinfo=UTC)  # 15:00 New York: the pin-risk rule is live
TYPES = [t.value for t in StrategyType]
TYPE_SHARE = {"iron_condor": 0.35, "bull_put_spread": 0.2, "bear_call_spread": 0.2,
              "vertical": 0.05, "single": 0.15, "external": 0.05}  # fmt: skip
EDGE_SHARE = 0.15
REGIMES = ["crash", "high_vol", "normal", "low_vol", "trending", "range_bound", "unknown", None]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _edge(rng: np.random.Generator, n: int, edges: list[float], lo: float, hi: float) -> np.ndarray:
    """Half uniform in [lo, hi], half exactly at / just around the thresholds."""
    edge_vals = np.array([e + d for e in edges for d in (-0.01, 0.0, 0.01)])
    return np.where(rng.random(n) < 0.5, rng.uniform(lo, hi, n), rng.choice(edge_vals, n))


def _pick(
    edge: np.ndarray,
    typical: np.ndarray,
    is_edge: np.ndarray,
    rng: np.random.Generator,
    missing: float,
) -> np.ndarray:
    out = np.where(is_edge, edge, typical)
    out[rng.random(len(out)) < missing] = np.nan
    return out


def make_snapshot(n: int, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A book of n strategies: 85% typical (a managed book mostly holds), 15% edge rows with
    every input clustered at its rule thresholds (so every rule and tie is compared)."""
    rng = np.random.default_rng(seed)
    is_edge = rng.random(n) < EDGE_SHARE
    has_state = rng.random(n) < 0.5
    miss = 0.005

    def col(edges: list[float], lo: float, hi: float, typical: np.ndarray) -> np.ndarray:
        return _pick(_edge(rng, n, edges, lo, hi), typical, is_edge, rng, miss)

    dte = np.where(is_edge, rng.integers(0, 60, n), rng.integers(26, 61, n)).astype(np.float64)
    dte[rng.random(n) < miss] = np.nan
    entry_iv = rng.uniform(0.1, 0.4, n)
    iv_change = col([-30.0, 50.0], -60.0, 90.0, rng.normal(0.0, 12.0, n))
    entry_vix = rng.uniform(12, 25, n)
    vix = col([35.0], 10.0, 45.0, entry_vix + rng.normal(0.0, 1.5, n))
    snap = pl.DataFrame(
        {
            "strategy_id": [f"S{i:07d}" for i in range(n)],
            "strategy_type": rng.choice(TYPES, n, p=[TYPE_SHARE[t] for t in TYPES]),
            "underlying": rng.choice(["SPY", "QQQ", "IWM"], n),
            "regime": pl.Series(
                [REGIMES[i] for i in rng.integers(0, len(REGIMES), n)], dtype=pl.String
            ),
            "profit_pct": col(
                [-200, -50, 20, 40, 50, 80, 85, 90],
                -250.0,
                100.0,
                np.clip(rng.normal(10.0, 15.0, n), -150, 95),
            ),
            "dte": pl.Series(dte).cast(pl.Int64, strict=False),
            "net_delta": col([-0.4, -0.3, 0.3, 0.4], -0.6, 0.6, rng.normal(0.0, 0.08, n)),
            "net_gamma": col([-0.1, 0.1], -0.2, 0.2, rng.normal(0.0, 0.02, n)),
            "iv": entry_iv * (1 + iv_change / 100.0),
            # Entry IV comes from the state when remembered, else from the snapshot.
            "entry_iv": _pick(entry_iv, np.where(has_state, np.nan, entry_iv), is_edge, rng, miss),
            "iv_percentile": col([30.0], 0.0, 100.0, rng.uniform(30.0, 100.0, n)),
            "vix": vix,
            "entry_vix": entry_vix,
            "underlying_move_1h_pct": col([-3.0], -6.0, 3.0, rng.normal(0.0, 0.5, n)),
            # exposures: a typical strategy has none (+inf); edge rows sit at the thresholds
            "pin_distance_pct": col([1.0], 0.0, 3.0, np.full(n, np.inf)),
            "dividend_cushion": col([0.0], -0.5, 0.5, np.full(n, np.inf)),
            "dividend_days": col([5.0], 1.0, 10.0, np.full(n, np.inf)),
            "put_extrinsic": col([0.05], 0.0, 0.5, np.full(n, np.inf)),
        },
        strict=False,
    ).with_columns(pl.col("dte").fill_nan(None))
    # Remembered state for half the strategies.
    peak = np.where(
        is_edge,
        _edge(rng, n, [40.0, 50.0], -20.0, 95.0),
        np.clip(rng.normal(15.0, 10.0, n), -20, 95),
    )
    state = (
        pl.DataFrame(
            {
                "strategy_id": snap["strategy_id"],
                "peak_profit_pct": peak,
                "entry_iv": entry_iv,
                "entry_vix": np.where(rng.random(n) < 0.8, entry_vix, np.nan),
                "reduced": rng.random(n) < 0.3,
                "first_seen_at": [NOW] * n,
                "updated_at": [NOW] * n,
            },
            strict=False,
        )
        .with_columns(
            pl.col("first_seen_at", "updated_at").cast(UTC_US),
            pl.col("entry_vix").fill_nan(None),
        )
        .filter(pl.Series(has_state))
    )
    return snap, state


def interleaved(fns: dict[str, tuple[Callable[[], object], int]], rounds: int) -> dict[str, float]:
    """Best time per call of each function over `rounds`; within a round each function runs
    `number` times back to back (as `timeit` does: a 30 ms call otherwise measures the cache
    misses and page faults left by the 1.5 s of dict churn before it, not its own cost), and
    the functions alternate so both see the same machine load (this box is shared). GC is
    off while timing (after a full collection), as in `timeit`: otherwise whichever side
    triggers a collection pays for traversing the ~250k dicts the loop keeps alive."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, (fn, number) in fns.items():
            gc.collect()
            gc.disable()
            try:
                for _ in range(number):
                    t0 = time.perf_counter()
                    fn()
                    best[name] = min(best[name], time.perf_counter() - t0)
            finally:
                gc.enable()
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--seed", type=int, default=6)
    args = ap.parse_args()
    settings = RuleSettings()

    snap, state = make_snapshot(args.n, args.seed)
    rows = snap.to_dicts()
    mem = {r["strategy_id"]: r for r in state.to_dicts()}
    log(f"{args.n:,} strategies, {state.height:,} with remembered state")

    decided = evaluate(snap, settings, state, NOW)  # the compared results; also the warm-up
    looped = evaluate_loop(rows, settings, mem, now=NOW)
    best = interleaved(
        {
            "vectorised": (lambda: evaluate(snap, settings, state, NOW), 5),
            "loop": (lambda: evaluate_loop(rows, settings, mem, now=NOW), 1),
        },
        args.repeat,
    )
    vec_s, loop_s = best["vectorised"], best["loop"]
    log(
        f"vectorised: {vec_s * 1000:.1f} ms, python loop: {loop_s * 1000:.1f} ms "
        f"(best of {args.repeat} rounds)"
    )

    diff = compare(decided, looped)
    identical = decided.height == len(looped) == args.n and diff.is_empty()
    if not identical:
        log(f"MISMATCH on {diff.height} strategies, e.g.:\n{diff.head(5)}")
    a = decided
    counts = dict(a.group_by("action").len().sort("action").iter_rows())
    log(f"actions: {counts}")
    ratio = loop_s / vec_s
    log(f"ratio {ratio:.1f}x (goal >= 50x), identical={identical}")
    print(
        json.dumps(
            {
                "benchmark": "rules",
                "n": args.n,
                "vectorised_s": round(vec_s, 4),
                "loop_s": round(loop_s, 4),
                "ratio": round(ratio, 1),
                "identical": identical,
                "mismatches": diff.height,
                "actions": counts,
                "goal_ratio": 50,
                "timing": f"best per call, {args.repeat} interleaved rounds (engine x5, loop x1)",
            }
        )
    )


if __name__ == "__main__":
    main()
