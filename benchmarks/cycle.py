"""Benchmark: one trading cycle with 50 open strategies on 3 underlyings, through the Prefect
flow and without it.

World (built once, untimed, then copied for every run so each starts from the same state:
the Delta directory and a deep copy of the simulated exchange): the market simulator on
2026-03-02, a SimBroker, and 50 strategies (iron condors, bull put and bear call spreads on
SPY, QQQ and IWM at 30-58 DTE) opened through the ComboExecutor, so the book, the broker
and the exchange agree; the day's IV history is already backfilled (the day's first cycle
does that). The cycle runs an hour later: reconcile 50 strategies, quote every held leg +
underlyings + VIX within the line budget, bars, regimes, exit rules for 50 strategies
(nothing fires an hour after entry), entry candidates on 3 chains (~800 options) and the
portfolio limits (which refuse them: 50 open > max_open_strategies 20), summary, breaker
record. That is the typical cycle: most of a day's 78 cycles trade nothing.
`--busy`: limits that admit an entry per underlying (3 combo entries, each laddered
from mid toward natural by the executor).

Timed rounds (after a warm-up of each kind), alternating:
- plain: `run_trading_cycle(..., wrap=identity)`, the same composition without Prefect;
- flow: `trading_cycle(return_state=True)` on a local ephemeral Prefect API
  (`prefect_test_harness`: a temporary SQLite server process, started before any timing).
seconds / plain_seconds are the best of --repeat rounds (the machine is shared; the
minimum is the least noisy estimate); prefect_share = (flow - plain) / flow on those.
cpu_* are this process's CPU seconds (the API server runs in another process): on a loaded
machine they show the in-process cost without the wait for a CPU. tasks = task runs the
API recorded for the last flow run.

Usage: python benchmarks/cycle.py [--strategies 50] [--seed 7] [--repeat 7] [--busy]
Progress goes to stderr; the last stdout line is one JSON object. Goals: seconds < 3,
prefect_share < 0.30.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import copyreg
import hashlib
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
os.environ.setdefault("PREFECT_TASKS_DEFAULT_NO_CACHE", "true")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="v6-bench-prefect-"))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import polars as pl

from core.broker.sim import SimBroker
from core.config import Settings
from core.cycle import identity, run_trading_cycle
from core.domain.strategies import StrategyStatus
from core.execution.executor import ComboExecutor
from core.marketdata.iv_history import backfill_iv_history
from core.runtime import Runtime, use_runtime
from core.sim.exchange import SimExchange, build_exchange
from core.store import DeltaStore
from core.store.memory import MemoryStore
from core.strategy.candidates import Candidate, build_candidates
from core.strategy.chain import snapshot_chain

BOOK_TABLES = ("strategies", "legs", "order_intents", "orders", "fills", "predictions")
TARGETS = (30, 34, 38, 42, 50, 54, 58)  # opened at; none at the cycle's own 45-DTE expiry
STRUCTURES = ("iron_condor", "bull_put_spread", "bear_call_spread")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def settings_for(root: Path, seed: int) -> Settings:
    return Settings(storage={"root": str(root)}, sim={"seed": seed, "net_liquidation": 2_000_000.0})


def opening_settings(settings: Settings) -> Settings:
    """How the book was built: no score or credit floor, so every pick fills by natural."""
    st = settings.strategies.model_copy(update={"min_score": 0.0, "min_credit_to_width": 0.0})
    return settings.model_copy(update={"strategies": st})


async def pick_candidates(settings: Settings, exchange: SimExchange, n: int) -> list[Candidate]:
    """n distinct strategies: every structure at several expiries on every underlying."""
    broker = SimBroker(exchange)
    await broker.connect()
    now = exchange.market.clock.now()
    picked: dict[str, Candidate] = {}
    for target in TARGETS:
        st = settings.strategies.model_copy(
            update={"target_dte": target, "dte_min": target - 6, "dte_max": target + 6,
                    "min_score": 0.0, "min_credit_to_width": 0.0}
        )  # fmt: skip
        s = settings.model_copy(update={"strategies": st})
        for und in settings.universe.underlyings:
            chain = await snapshot_chain(broker, und, st, now)
            for cand in build_candidates(chain, now, s).eligible:
                if cand.strategy_type in STRUCTURES and cand.strategy_id not in picked:
                    picked[cand.strategy_id] = cand
    ordered = sorted(picked.values(), key=lambda c: (c.expiry, c.underlying, c.strategy_type))
    if not ordered:
        raise SystemExit("no candidates in the simulated chains")
    day = now.date()
    # beyond the distinct structures, the same ones again as further strategies (new ids)
    return [
        ordered[i % len(ordered)].with_nonce(i // len(ordered), day)
        if i >= len(ordered)
        else ordered[i]
        for i in range(n)
    ]


def build_world(root: Path, seed: int, n: int) -> tuple[Runtime, SimExchange]:
    """A store and an exchange holding the same n open strategies (see the module doc)."""
    settings = settings_for(root, seed)
    exchange = build_exchange(settings)
    exchange.market.clock.advance(timedelta(hours=1))
    cands = asyncio.run(pick_candidates(settings, exchange, n))
    mem = MemoryStore()

    async def open_all() -> None:
        broker = SimBroker(exchange)
        await broker.connect()
        ex = ComboExecutor(
            broker, mem, exchange.market.clock, opening_settings(settings),
            net_liquidation=settings.sim.net_liquidation,
        )  # fmt: skip
        for cand in cands:
            await ex.execute_entry(cand)

    asyncio.run(open_all())
    store = DeltaStore.from_settings(settings)
    for name in BOOK_TABLES:
        frame = mem.tables.get(name)
        if frame is not None and frame.height:
            store.merge(name, frame)
    exchange.market.clock.advance(timedelta(hours=1))  # the cycle runs an hour later

    async def iv_history() -> None:  # what the day's first cycle backfilled
        broker = SimBroker(exchange)
        await broker.connect()
        await backfill_iv_history(
            broker, store, settings.universe.underlyings, exchange.market.clock.now(),
            days=settings.analysis.iv_history_days,
        )  # fmt: skip

    asyncio.run(iv_history())
    rt = Runtime(settings, store, exchange.market.clock, lambda: SimBroker(exchange))
    opened = mem.tables["strategies"].filter(pl.col("status") == StrategyStatus.OPEN.value).height
    log(f"world: {opened} open strategies, {len(exchange.positions())} broker positions")
    return rt, exchange


# SimExchange guards its state with an RLock; a copy of the world gets a fresh one.
copyreg.pickle(type(threading.RLock()), lambda _lock: (threading.RLock, ()))


BUSY_LIMITS = {"max_open_strategies": 100, "max_new_strategies_per_day": 100,
               "max_concentration_pct": 100.0, "max_correlated_exposure_pct": 100.0,
               "max_portfolio_delta": 1000.0, "max_underlying_delta": 1000.0}  # fmt: skip


def clone_world(rt: Runtime, exchange: SimExchange, root: Path, *, busy: bool = False) -> Runtime:
    """An identical, independent copy: the Delta directory and the whole simulated exchange
    (market, clock, account, orders), so every timed cycle starts from the same state.
    `busy`: limits that let this cycle open a strategy on every underlying."""
    shutil.copytree(rt.settings.storage.root, root)
    ex = copy.deepcopy(exchange)
    storage = rt.settings.storage.model_copy(update={"root": str(root)})
    update: dict[str, Any] = {"storage": storage}
    if busy:
        update["limits"] = rt.settings.limits.model_copy(update=BUSY_LIMITS)
    settings = rt.settings.model_copy(update=update)
    return Runtime(settings, DeltaStore.from_settings(settings), ex.market.clock,
                   lambda: SimBroker(ex))  # fmt: skip


def book_digest(store: DeltaStore) -> dict[str, str]:
    """sha256 per table of the book after the cycle (rows sorted, as CSV) and of its
    decisions: two code versions that trade and book alike print the same digests."""
    out = {}
    for name in (*BOOK_TABLES, "decisions"):
        frame = store.read(name).collect()
        frame = frame.drop([c for c in frame.columns if c == "run_id"])  # differs per round
        csv = frame.sort(frame.columns, nulls_last=True).write_csv()
        out[name] = hashlib.sha256(csv.encode()).hexdigest()[:12]
    return out


@contextmanager
def ephemeral_prefect() -> Iterator[None]:
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with (
        prefect_test_harness(server_startup_timeout=90),
        temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
    ):
        yield


async def count_tasks(flow_run_id: Any) -> int:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async with get_client() as client:
        runs = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return len(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strategies", type=int, default=50)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=7, help="timed rounds (plain + flow each)")
    ap.add_argument(
        "--busy", action="store_true", help="limits let the cycle enter on every underlying"
    )
    args = ap.parse_args()
    logging.getLogger("v6").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning)
    base = Path(tempfile.mkdtemp(prefix="v6-bench-cycle-"))
    t0 = time.perf_counter()
    rt0, ex0 = build_world(base / "world", args.seed, args.strategies)
    log(f"built the world in {time.perf_counter() - t0:.1f}s")

    from flows.trading_cycle import trading_cycle

    plain_times: list[float] = []
    flow_times: list[float] = []
    plain_cpu: list[float] = []
    flow_cpu: list[float] = []
    digests: set[str] = set()
    with ephemeral_prefect():
        log("prefect: local ephemeral API (prefect_test_harness, temporary SQLite server)")
        with use_runtime(clone_world(rt0, ex0, base / "warm-flow", busy=args.busy)):
            warm = asyncio.run(trading_cycle(guard=False, return_state=True))
        asyncio.run(
            run_trading_cycle(clone_world(rt0, ex0, base / "warm-plain", busy=args.busy), "warm")
        )
        log(f"warm-up: {warm.name}")
        for i in range(args.repeat):
            rt = clone_world(rt0, ex0, base / f"plain-{i}", busy=args.busy)
            t, c = time.perf_counter(), time.process_time()
            run = asyncio.run(run_trading_cycle(rt, f"bench-plain-{i}", wrap=identity))
            plain_times.append(time.perf_counter() - t)
            plain_cpu.append(time.process_time() - c)
            digests.add(json.dumps(book_digest(rt.store), sort_keys=True))
            rt = clone_world(rt0, ex0, base / f"flow-{i}", busy=args.busy)
            with use_runtime(rt):
                t, c = time.perf_counter(), time.process_time()
                state = asyncio.run(trading_cycle(guard=False, return_state=True))
                flow_times.append(time.perf_counter() - t)
                flow_cpu.append(time.process_time() - c)
            log(
                f"round {i}: plain {plain_times[-1]:.3f}s (cpu {plain_cpu[-1]:.3f}), "
                f"flow {flow_times[-1]:.3f}s (cpu {flow_cpu[-1]:.3f}) {state.name}"
            )
        tasks = asyncio.run(count_tasks(state.state_details.flow_run_id))
    summary = run.summary()
    log(f"cycle: {summary}")
    plain_s, flow_s = min(plain_times), min(flow_times)
    share = (flow_s - plain_s) / flow_s if flow_s > 0 else 0.0
    cpu_plain, cpu_flow = min(plain_cpu), min(flow_cpu)
    print(
        json.dumps(
            {
                "seconds": round(flow_s, 3),
                "plain_seconds": round(plain_s, 3),
                "prefect_share": round(share, 3),
                "tasks": tasks,
                "strategies": args.strategies,
                "underlyings": len(rt0.settings.universe.underlyings),
                "median_seconds": round(statistics.median(flow_times), 3),
                "median_plain_seconds": round(statistics.median(plain_times), 3),
                "cpu_seconds": round(cpu_flow, 3),
                "plain_cpu_seconds": round(cpu_plain, 3),
                "prefect_cpu_share": round((cpu_flow - cpu_plain) / cpu_flow, 3),
                "state": state.name,
                "decisions": summary.get("decisions"),
                "orders": summary.get("orders"),
                "filled": summary.get("filled"),
                "busy": args.busy,
                "book_digest": [json.loads(d) for d in sorted(digests)],
                "prefect": "ephemeral (prefect_test_harness)",
            }
        )
    )


if __name__ == "__main__":
    main()
