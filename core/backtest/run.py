"""Run the trading cycle over simulated sessions on a fast clock.

The backtest is not a model of V6: it is V6. Each simulated cycle is the same
`run_trading_cycle` the flow runs (breaker gate, reconcile, rules, exits, entries,
limits), against a SimBroker over a seeded simulated market, on a scratch book.
Only the results leave the scratch book: closed trades and entry predictions, tagged
with the run id and the configuration hash, land in `backtest_trades` and
`backtest_predictions` of the target store.

The scratch book is a `MemoryStore`: Delta's merge semantics and validation without a
table open, commit or merge plan per write (most of a cycle's wall time against a Delta
scratch book, for data thrown away after the run). Schema and keys are checked at each
write; the pandera value checks run in bulk once a session (`defer_value_checks`), so a
batch live would refuse fails the whole run before anything is exported, where live
would have failed that cycle. The run's storage root is the store's `memory://` URI, so
nothing the cycle keeps beside the tables (the account-wide market-data line pool) is
shared with live processes on this host, and no other process can change a run's course.
"""

from __future__ import annotations

import inspect
import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import cast

from core.backtest.export import config_hash, export_run
from core.broker.sim import SimBroker
from core.calendar import MarketCalendar
from core.clock import SimClock
from core.config import Settings
from core.cycle.run import run_trading_cycle
from core.runtime import CycleProgress, Runtime
from core.sim.exchange import build_exchange
from core.store.delta import DeltaStore
from core.store.memory import MemoryStore

log = logging.getLogger(f"v6.{__name__}")

# Called after each cycle with (done, total, market time); may be a coroutine function.
Progress = CycleProgress


@dataclass(frozen=True)
class BacktestResult:
    run_id: str
    config_hash: str
    first_day: date
    last_day: date
    sessions: int
    cycles: int
    trades: int
    predictions: int
    wall_seconds: float
    outcomes: dict[str, int] = field(default_factory=dict)

    @property
    def days_per_second(self) -> float:
        return self.sessions / self.wall_seconds if self.wall_seconds > 0 else float("nan")


def cycle_times(calendar: MarketCalendar, day: date, every: timedelta) -> list[datetime]:
    """Cycle start times in one session: from 5 minutes after the open, every `every`,
    ending at least 10 minutes before the close (early closes included)."""
    open_, close = calendar.session_bounds(day)
    t, out = open_ + timedelta(minutes=5), []
    while t <= close - timedelta(minutes=10):
        out.append(t)
        t += every
    return out


async def run_backtest(
    settings: Settings,
    target: DeltaStore,
    *,
    days: int,
    start: date | None = None,
    seed: int | None = None,
    cycle_minutes: int = 60,
    progress: Progress | None = None,
    run_id: str | None = None,
    scratch: DeltaStore | MemoryStore | None = None,
) -> BacktestResult:
    """Simulate `days` sessions from `start` (default: the simulator's start) and export.

    `scratch` is the book the cycles run on: by default a fresh `MemoryStore` (deferred
    value checks); an empty DeltaStore in a scratch directory gives the same results,
    slowly (the parity test runs both)."""
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    if cycle_minutes < 5:
        raise ValueError(f"cycle_minutes must be >= 5 (the live cadence), got {cycle_minutes}")
    overrides: dict[str, object] = {}
    if seed is not None:
        overrides["seed"] = seed
    if start is not None:
        overrides["start"] = start.isoformat()
    run_id = run_id or f"bt-{datetime.now(UTC):%Y%m%d%H%M%S}-{uuid.uuid4().hex[:6]}"
    book = scratch or MemoryStore(f"memory://v6-{run_id}", defer_value_checks=True)
    sim = settings.sim.model_copy(update=overrides)
    storage = settings.storage.model_copy(update={"root": book.root})
    settings = settings.model_copy(update={"sim": sim, "storage": storage})
    fingerprint = config_hash(settings)
    exchange = build_exchange(settings)
    clock = exchange.market.clock
    if not isinstance(clock, SimClock):
        raise TypeError("a backtest needs the simulator's SimClock")
    calendar = MarketCalendar(settings.schedules)
    sessions = calendar.trading_days(clock.now().date(), days)
    every = timedelta(minutes=cycle_minutes)
    days_plan = [cycle_times(calendar, day, every) for day in sessions]
    total = sum(len(times) for times in days_plan)

    outcomes: Counter[str] = Counter()
    began = time.perf_counter()
    runtime = Runtime(
        settings=settings,
        # MemoryStore implements DeltaStore's API (tests/core/store/test_memory_store.py
        # holds the two to the same results); Runtime is typed on the Delta store.
        store=cast(DeltaStore, book),
        clock=clock,
        broker_factory=lambda: SimBroker(exchange),
    )
    done = 0
    for times in days_plan:
        for at in times:
            if at > clock.now():
                clock.set(at)
            run = await run_trading_cycle(runtime, f"{run_id}-{at:%Y%m%d%H%M}")
            outcomes[run.outcome.name] += 1
            done += 1
            if progress is not None:
                pending = progress(done, total, at)
                if inspect.isawaitable(pending):
                    await pending
        _validate(book)
    # Let the last session settle (expiries, resting orders) before valuing the book.
    clock.set(max(clock.now(), calendar.session_bounds(sessions[-1])[1]))
    exchange.on_clock()
    _validate(book)
    trades, predictions = export_run(
        book, target, run_id=run_id, run_at=datetime.now(UTC), config=fingerprint
    )
    wall = time.perf_counter() - began
    result = BacktestResult(
        run_id=run_id,
        config_hash=fingerprint,
        first_day=sessions[0],
        last_day=sessions[-1],
        sessions=len(sessions),
        cycles=total,
        trades=trades,
        predictions=predictions,
        wall_seconds=wall,
        outcomes=dict(outcomes),
    )
    log.info(
        "backtest %s: %d sessions, %d cycles, %d trades in %.1fs (%.2f days/s)",
        run_id, result.sessions, result.cycles, trades, wall, result.days_per_second,
    )  # fmt: skip
    return result


def _validate(book: DeltaStore | MemoryStore) -> None:
    """The session's deferred value checks, in bulk: a batch live would have refused fails
    the run here (SchemaViolation), before anything is exported."""
    if isinstance(book, MemoryStore):
        book.validate_pending()
