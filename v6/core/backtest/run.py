"""Run the trading cycle over simulated sessions on a fast clock.

The backtest is not a model of V6: it is V6. Each simulated cycle is the same
`run_trading_cycle` the flow runs (breaker gate, reconcile, rules, exits, entries,
limits), against a SimBroker over a seeded simulated market, on a scratch Delta book.
Only the results leave the scratch book: closed trades and entry predictions, tagged
with the run id and the configuration hash, land in `backtest_trades` and
`backtest_predictions` of the target store.
"""

from __future__ import annotations

import inspect
import logging
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from v6.core.backtest.export import config_hash, export_run
from v6.core.broker.sim import SimBroker
from v6.core.calendar import MarketCalendar
from v6.core.clock import SimClock
from v6.core.config import Settings
from v6.core.cycle.run import run_trading_cycle
from v6.core.runtime import Runtime
from v6.core.sim.exchange import build_exchange
from v6.core.store.delta import DeltaStore

log = logging.getLogger(__name__)

# Called after each cycle with (done, total, market time); may be a coroutine function.
Progress = Callable[[int, int, datetime], Awaitable[None] | None]


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
) -> BacktestResult:
    """Simulate `days` sessions from `start` (default: the simulator's start) and export."""
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    if cycle_minutes < 5:
        raise ValueError(f"cycle_minutes must be >= 5 (the live cadence), got {cycle_minutes}")
    overrides: dict[str, object] = {}
    if seed is not None:
        overrides["seed"] = seed
    if start is not None:
        overrides["start"] = start.isoformat()
    sim = settings.sim.model_copy(update=overrides)
    settings = settings.model_copy(update={"sim": sim})
    run_id = run_id or f"bt-{datetime.now(UTC):%Y%m%d%H%M%S}-{uuid.uuid4().hex[:6]}"
    fingerprint = config_hash(settings)
    exchange = build_exchange(settings)
    clock = exchange.market.clock
    if not isinstance(clock, SimClock):
        raise TypeError("a backtest needs the simulator's SimClock")
    calendar = MarketCalendar(settings.schedules)
    sessions = calendar.trading_days(clock.now().date(), days)
    every = timedelta(minutes=cycle_minutes)
    plan = [t for day in sessions for t in cycle_times(calendar, day, every)]

    scratch = Path(tempfile.mkdtemp(prefix=f"v6-{run_id}-"))
    outcomes: Counter[str] = Counter()
    began = time.perf_counter()
    try:
        book = DeltaStore(scratch)
        runtime = Runtime(
            settings=settings,
            store=book,
            clock=clock,
            broker_factory=lambda: SimBroker(exchange),
        )
        for i, at in enumerate(plan):
            if at > clock.now():
                clock.set(at)
            run = await run_trading_cycle(runtime, f"{run_id}-{at:%Y%m%d%H%M}")
            outcomes[run.outcome.name] += 1
            if progress is not None:
                pending = progress(i + 1, len(plan), at)
                if inspect.isawaitable(pending):
                    await pending
        # Let the last session settle (expiries, resting orders) before valuing the book.
        clock.set(max(clock.now(), calendar.session_bounds(sessions[-1])[1]))
        exchange.on_clock()
        trades, predictions = export_run(
            book, target, run_id=run_id, run_at=datetime.now(UTC), config=fingerprint
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    wall = time.perf_counter() - began
    result = BacktestResult(
        run_id=run_id,
        config_hash=fingerprint,
        first_day=sessions[0],
        last_day=sessions[-1],
        sessions=len(sessions),
        cycles=len(plan),
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
