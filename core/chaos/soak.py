"""`v6 chaos`: the full trading cycle over many simulated days while faults rain down.

The world is the demo's: a SimExchange behind the gateway simulator on loopback, the
production `IBBroker` + ib_async (with two fault hooks, see `faults.ChaosIBBroker`), a
Delta store on disk and a SimClock the soak moves between cycles. Each cycle is
`run_trading_cycle` under the cycle lease, the exact composition the Prefect flow runs
(the flow only wraps each step in a task), so a clean soak says the flow's code path
survives the faults. Wrong state that reads fine (a lost or rolled-back table, an absurd
or undecodable position, another cycle running) is armed by `fail_closed`.

After every cycle the invariants run; the first violation stops the soak with the seed
(replay it with `v6 chaos --seed S`). After each session the nightly maintenance runs on
the same tables, as in production. The report counts faults injected and fired, checks
run, breaker trips and recoveries, restarts and the wall time per simulated day.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from core.backtest.run import cycle_times
from core.calendar import MarketCalendar
from core.chaos import invariants as inv
from core.chaos.fail_closed import FAIL_CLOSED_FAULTS, arm_fail_closed, failed_closed, restore
from core.chaos.faults import (
    CONFLICT_RUN_ID,
    CONFLICT_TABLE,
    ORDER_FAULTS,
    Armed,
    ChaosIBBroker,
    ConcurrentWriter,
    Hooks,
    ProcessKilled,
    arm,
    fired_after_cycle,
)
from core.chaos.scheduler import CYCLE_KINDS, FaultKind, FaultPlan, plan_faults
from core.clock import SimClock
from core.config import Settings
from core.cycle.context import Step
from core.cycle.lease import SKIPPED, hold_cycle_lease
from core.cycle.run import RECONCILE, CycleRun, run_trading_cycle
from core.domain import OrderState
from core.domain.order_refs import parse_order_ref
from core.domain.timezones import MARKET_TZ
from core.risk.breaker import Breaker, BreakerState
from core.runtime import Runtime
from core.sim.exchange import SimExchange, build_exchange
from core.sim.gateway.client import simulator_broker_settings
from core.sim.gateway.server import GatewayServer
from core.store.delta import DeltaStore
from core.store.maintenance import maintain

log = logging.getLogger(f"v6.{__name__}")

Progress = Callable[[int, int, datetime, str], Awaitable[None] | None]
WRITER_ROUNDS = 20


class ChaosViolation(AssertionError):
    """An invariant failed; the message names the seed, the cycle and the violation."""


@dataclass
class ChaosReport:
    seed: int
    days: int
    cycles: int = 0
    first_day: date | None = None
    last_day: date | None = None
    crash_day: date | None = None
    planned: Counter[str] = field(default_factory=Counter)
    fired: Counter[str] = field(default_factory=Counter)
    handled: Counter[str] = field(default_factory=Counter)  # fired, then invariants held
    checks: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    trips: int = 0
    trip_reasons: Counter[str] = field(default_factory=Counter)
    recoveries: int = 0
    restarts: int = 0
    maintenance_runs: int = 0
    conflict_rows: int = 0
    orders: int = 0
    wall_s: float = 0.0
    violation: str | None = None

    @property
    def ok(self) -> bool:
        return self.violation is None

    @property
    def seconds_per_day(self) -> float:
        return self.wall_s / self.days if self.days else float("nan")

    def lines(self) -> list[str]:
        """The report as plain text (the CLI prints it; the closing note quotes it)."""
        out = [
            f"chaos seed={self.seed} days={self.days} ({self.first_day}..{self.last_day}, "
            f"crash day {self.crash_day}) cycles={self.cycles} orders={self.orders}",
            f"result: {'CLEAN' if self.ok else 'VIOLATION: ' + str(self.violation)}",
            f"wall {self.wall_s:.1f}s, {self.seconds_per_day:.2f}s per simulated day",
            f"breaker: {self.trips} trip(s), {self.recoveries} recovery(ies); "
            f"restarts after kill: {self.restarts}; concurrent-writer rows: {self.conflict_rows}; "
            f"nightly maintenance runs: {self.maintenance_runs}",
            "trip reasons: " + ", ".join(f"{k}={v}" for k, v in self.trip_reasons.most_common()),
            "outcomes: " + ", ".join(f"{k}={v}" for k, v in sorted(self.outcomes.items())),
            "faults (planned/fired/handled):",
        ]
        for kind in FaultKind:
            k = kind.value
            out.append(
                f"  {k:<24} {self.planned[k]:>3} / {self.fired[k]:>3} / {self.handled[k]:>3}"
            )
        out.append("invariant checks run:")
        out += [f"  {k:<24} {v:>5}" for k, v in sorted(self.checks.items())]
        return out


def chaos_settings(
    base: Settings, root: Path, port: int | None, seed: int, crash: date | None
) -> Settings:
    """The user's settings pointed at the gateway simulator (once its `port` is known), a
    scratch store and a seed."""
    broker = (
        base.broker
        if port is None
        else simulator_broker_settings(base.broker, port, request_timeout_s=5.0)
    )
    regimes = dict(base.sim.regimes)
    if crash is not None:
        regimes[crash.isoformat()] = "crash"
    sim = base.sim.model_copy(update={"seed": seed, "regimes": regimes})
    storage = base.storage.model_copy(update={"root": str(root)})
    return base.model_copy(update={"broker": broker, "sim": sim, "storage": storage})


class Soak:
    """One seeded world and its fault plan; `run()` drives every cycle and checks."""

    def __init__(
        self,
        settings: Settings,
        *,
        days: int,
        seed: int,
        cycle_minutes: int,
        root: Path,
        rate: float,
        progress: Progress | None,
        kinds: tuple[FaultKind, ...] = CYCLE_KINDS,
    ) -> None:
        if days < 1:
            raise ValueError(f"chaos: days must be >= 1, got {days}")
        if cycle_minutes < 5:
            raise ValueError(f"chaos: cycle_minutes must be >= 5, got {cycle_minutes}")
        self.calendar = MarketCalendar(settings.schedules)
        start = date.fromisoformat(settings.sim.start)
        self.sessions = self.calendar.trading_days(start, days)
        every = timedelta(minutes=cycle_minutes)
        self.times = [t for d in self.sessions for t in cycle_times(self.calendar, d, every)]
        self.plan: FaultPlan = plan_faults(
            seed, len(self.times), len(self.sessions), rate=rate, kinds=kinds
        )
        crash = self.sessions[self.plan.crash_session or 0]
        self.base = settings
        self.root = root
        self.seed = seed
        self.crash = crash
        self.progress = progress
        self.report = ChaosReport(seed=seed, days=days, crash_day=crash)
        self.report.first_day, self.report.last_day = self.sessions[0], self.sessions[-1]
        self.report.planned = self.plan.counts()
        self.checks = inv.Checks()
        self.seen_orders: set[int] = set()
        self.day_orders: dict[date, list[OrderState]] = {}
        self.exchange: SimExchange | None = None
        self.last_outcome = ""
        self.writers = 0
        self.trip_watch: inv.TripWatch | None = None

    # ------------------------------------------------------------------ world
    def _runtime(self, settings: Settings, clock: SimClock, hooks: Hooks) -> Runtime:
        def factory() -> ChaosIBBroker:
            b = ChaosIBBroker(settings.broker, clock=clock)
            b.hooks = hooks
            hooks.brokers_built += 1
            return b

        # A fresh store object per runtime: a restart shares only what is on disk.
        return Runtime(settings, DeltaStore.from_settings(settings), clock, factory)

    async def run(self) -> ChaosReport:
        began = time.perf_counter()
        probe = chaos_settings(self.base, self.root, None, self.seed, self.crash)
        exchange = build_exchange(probe)
        self.exchange = exchange
        clock = exchange.market.clock
        if not isinstance(clock, SimClock):
            raise TypeError("chaos needs the simulator's SimClock")
        lines = probe.broker.market_data_lines
        # IB paces historical requests in real time; a soak compresses time, so the
        # simulator paces on the clock the system lives on, or a fast soak trips over
        # pacing no live cadence could reach (injected violations still fire).
        async with GatewayServer(
            exchange,
            host="127.0.0.1",
            port=0,
            market_data_lines=lines,
            pacing_clock=lambda: clock.now().timestamp(),
            realtime_data=True,  # the soak trades: a live subscription (chaos_settings)
        ) as gw:
            settings = chaos_settings(self.base, self.root, gw.port, self.seed, self.crash)
            hooks = Hooks(gateway=gw)
            rt = self._runtime(settings, clock, hooks)
            armed = Armed()
            try:
                for i, at in enumerate(self.times):
                    if at > clock.now():
                        gw.advance(at - clock.now())
                    rt = await self._cycle(i, at, rt, settings, clock, gw, exchange, hooks, armed)
                    if self.progress is not None:
                        label = f"{self.last_outcome} {','.join(self.plan.at(i))}"
                        pending = self.progress(i + 1, len(self.times), at, label)
                        if inspect.isawaitable(pending):
                            await pending
                self._check("tables_valid", inv.tables_valid(rt.store), "end of soak")
            except ChaosViolation as exc:
                self.report.violation = str(exc)
            finally:
                self.report.checks = self.checks.runs
                self.report.fired = Counter(armed.fired)
                self.report.wall_s = time.perf_counter() - began
            if gw.protocol_errors and self.report.ok:
                self.report.violation = f"seed {self.seed}: gateway protocol errors: " + str(
                    gw.protocol_errors[:3]
                )
        return self.report

    # ------------------------------------------------------------------ one cycle
    async def _cycle(
        self,
        i: int,
        at: datetime,
        rt: Runtime,
        settings: Settings,
        clock: SimClock,
        gw: GatewayServer,
        ex: SimExchange,
        hooks: Hooks,
        armed: Armed,
    ) -> Runtime:
        kinds = set(self.plan.at(i))
        for k in kinds:
            arm(k, gw, ex, hooks)
        armed.pending |= kinds & ORDER_FAULTS
        writer: ConcurrentWriter | None = None
        if FaultKind.COMMIT_CONFLICT in kinds:
            writer = ConcurrentWriter(str(Path(settings.storage.root)), f"{i:05d}", WRITER_ROUNDS)
            await writer.start()
        if at.date() == self.crash and FaultKind.CRASH_DAY.value not in armed.fired:
            armed.fire(FaultKind.CRASH_DAY)  # the session's first cycle runs in the crash
        ttl = timedelta(seconds=settings.cycle.lease_ttl_s)
        tampered = [
            arm_fail_closed(k, rt.store, gw, ex, brokers_built=hooks.brokers_built, lease_ttl=ttl)
            for k in kinds & FAIL_CLOSED_FAULTS
        ]
        run_id = f"chaos-{self.seed}-{i:05d}-{at:%Y%m%d%H%M}"
        reset = FaultKind.RESET_WINDOW in kinds
        cycle_rt = self._in_planned_window(settings, clock, hooks, at) if reset else rt
        reconciled: list[str] = []
        run: CycleRun | None = None
        try:
            # through the lease, as the flow runs it: one cycle per home at a time
            async with hold_cycle_lease(rt.store, run_id, ttl) as busy:
                if busy is None:
                    wrap = self._wrap(rt, ex, reconciled, run_id)
                    run = await run_trading_cycle(cycle_rt, run_id, wrap=wrap)
            self.last_outcome = SKIPPED if run is None else run.outcome.name
            self.report.outcomes[self.last_outcome] += 1
        except ProcessKilled as exc:
            log.warning("chaos %s: %s; restarting on the same store", run_id, exc)
            self.report.outcomes["Killed"] += 1
            self.last_outcome = "Killed"
            self.report.restarts += 1
            rt = self._runtime(settings, clock, hooks)  # the restart: new objects, same disk
        except (KeyboardInterrupt, asyncio.CancelledError):
            raise
        except BaseException as exc:  # e.g. a Rust panic: it escapes the cycle's `except`
            self._fail(run_id, [f"the cycle escaped with {type(exc).__name__}: {exc}"])
        if writer is not None:
            code = await writer.join()
            rows = (
                rt.store.read(CONFLICT_TABLE, columns=["evaluation_id"])
                .filter(pl.col("evaluation_id").str.starts_with(CONFLICT_RUN_ID))
                .collect()
                .height
            )
            self.report.conflict_rows = rows
            self.writers += 1
            problems = [] if code == 0 else [f"concurrent writer exited with {code}"]
            if rows != self.writers * WRITER_ROUNDS:
                problems.append(
                    f"{CONFLICT_TABLE} holds {rows} concurrent-writer rows, expected "
                    f"{self.writers * WRITER_ROUNDS}: a commit was lost"
                )
            self._check("concurrent_writer", problems, run_id)
        for t in tampered:
            restore(t, rt.store, gw, ttl)
        if reset:
            await gw.come_up()
            self._check("reset_window_held", inv.reset_window_held(run), run_id)
        if reconciled:
            self._fail(run_id, reconciled)
        quoted = run is not None and run.report is not None and "market-data" in run.report.steps
        fired_now = [
            k
            for k in ((kinds - FAIL_CLOSED_FAULTS) | (armed.pending & ORDER_FAULTS))
            if fired_after_cycle(k, gw, ex, hooks, settings.broker.market_data_lines, quoted)
        ]
        fired_now += [t.kind for t in tampered if t.fired(run)]  # checked below
        for k in fired_now:
            armed.fire(k)
        new_orders = self._invariants(i, at, rt, run, ex, run_id, settings)
        breaker = Breaker(rt.store, settings.breaker, rt.clock)
        for t in (t for t in tampered if t.fired(run)):
            problems = failed_closed(t, run, rt.store, breaker, new_orders, hooks.brokers_built)
            self._check("failed_closed", problems, run_id)
        for k in fired_now:
            self.report.handled[k.value] += 1
        last_of_day = i + 1 == len(self.times) or self.times[i + 1].date() != at.date()
        if last_of_day and at.date() == self.crash:
            self.report.handled[FaultKind.CRASH_DAY.value] += 1  # the whole session held
        self.report.cycles += 1
        return rt

    def _in_planned_window(
        self, settings: Settings, clock: SimClock, hooks: Hooks, at: datetime
    ) -> Runtime:
        """A runtime whose planned outage window holds `at` (the soak's cycles run in market
        hours; IB's nightly window does not): the reset-window fault's cycle runs on it."""
        local = at.astimezone(MARKET_TZ)
        window = {
            "planned_outage_start": (local - timedelta(minutes=30)).time(),
            "planned_outage_end": (local + timedelta(minutes=30)).time(),
        }
        broker = settings.broker.model_copy(update=window)
        return self._runtime(settings.model_copy(update={"broker": broker}), clock, hooks)

    def _wrap(
        self, rt: Runtime, ex: SimExchange, out: list[str], run_id: str
    ) -> Callable[[str, Step], Step]:
        """Check book == broker right after reconciliation (before anything trades)."""

        def wrap(name: str, step: Step) -> Step:
            if name != RECONCILE:
                return step

            async def checked(*args: Any, **kwargs: Any) -> Any:
                result = await step(*args, **kwargs)
                if result.unresolved_breaks == 0:
                    self.checks.ran("book_matches_broker")
                    out.extend(inv.book_matches_broker(rt.store, ex))
                else:  # the disagreement is recorded as a break, and the breaker trips on it
                    self.checks.ran("book_break_recorded")
                return result

            return checked

        return wrap

    def _invariants(
        self,
        i: int,
        at: datetime,
        rt: Runtime,
        run: CycleRun | None,
        ex: SimExchange,
        run_id: str,
        settings: Settings,
    ) -> int:
        """Run the invariants after cycle `i`; returns how many orders it sent."""
        new = [
            o
            for o in ex.open_orders() + ex.completed_orders()
            if o.order_id not in self.seen_orders and parse_order_ref(o.order_ref) is not None
        ]
        self.seen_orders |= {o.order_id for o in new}
        self.report.orders += len(new)
        day = at.date()
        self.day_orders.setdefault(day, []).extend(new)
        store = rt.store
        self._check("exec_id_once", inv.exec_ids_unique(store), run_id)
        self._check("no_half_open", inv.no_half_open(store, ex), run_id)
        self._check("order_caps", inv.orders_within_caps(new, ex, settings, store), run_id)
        self._check("day_caps", inv.day_caps(self.day_orders[day], ex), run_id)
        if run is not None:
            refs = [o.order_ref for o in new]
            self._check("no_entry_while_open", inv.no_entry_while_open(run, refs, store), run_id)
            if run.transition is not None:
                t = run.transition
                if t.is_trip:
                    self.report.trips += 1
                    self.report.trip_reasons[t.trigger] += 1
                elif t.to_state is BreakerState.CLOSED:
                    self.report.recoveries += 1
            if run.health is not None:
                watch = self._watch(settings)
                conditions = watch.conditions(at, run.health)
                breaker = Breaker(store, settings.breaker, rt.clock)
                self._check("breaker_trips", inv.breaker_tripped(conditions, breaker, run), run_id)
                if run.transition is not None and run.transition.is_trip:
                    watch.reset_streak()
        last_of_day = i + 1 == len(self.times) or self.times[i + 1].date() != day
        if last_of_day:
            self._nightly(store, settings, rt.clock.now().date(), run_id)
            self._check("tables_valid", inv.tables_valid(store), run_id)
        return len(new)

    def _nightly(self, store: DeltaStore, settings: Settings, today: date, run_id: str) -> None:
        """The maintenance flow's work after the session, as production runs it nightly
        (compact closed partitions, checkpoint, vacuum): without it a long soak measures a
        store no deployment would have. A table it cannot maintain is a violation."""
        results = maintain(
            store,
            retention_hours=settings.storage.vacuum_retention_hours,
            closed_before=today,
            enforce_retention=False,
        )
        self.report.maintenance_runs += 1
        failed = results.filter(pl.col("error").is_not_null())
        self._check(
            "maintenance_ok",
            [
                f"nightly maintenance of {t} failed: {e}"
                for t, e in failed.select("table", "error").iter_rows()
            ],
            run_id,
        )

    def _watch(self, settings: Settings) -> inv.TripWatch:
        if self.trip_watch is None:
            self.trip_watch = inv.TripWatch(settings)
        return self.trip_watch

    def _check(self, name: str, violations: list[str], run_id: str) -> None:
        self.checks.ran(name)
        if violations:
            self._fail(run_id, violations)

    def _fail(self, run_id: str, violations: list[str]) -> None:
        raise ChaosViolation(
            f"seed {self.seed}, cycle {run_id}: {violations[0]}"
            + (f" (+{len(violations) - 1} more)" if len(violations) > 1 else "")
        )


async def run_chaos(
    settings: Settings,
    *,
    days: int,
    seed: int,
    cycle_minutes: int = 120,
    rate: float = 0.3,
    root: Path | None = None,
    progress: Progress | None = None,
    kinds: tuple[FaultKind, ...] = CYCLE_KINDS,
) -> ChaosReport:
    """Soak `days` sessions under seeded faults; the report says whether it stayed clean.

    `root` keeps the soak's Delta tables (for a post-mortem); by default a scratch
    directory is used and removed afterwards. `kinds`: the per-cycle faults to draw.
    """
    scratch = root is None
    where = Path(tempfile.mkdtemp(prefix=f"v6-chaos-{seed}-")) if root is None else root
    try:
        soak = Soak(
            settings,
            days=days,
            seed=seed,
            cycle_minutes=cycle_minutes,
            root=where,
            rate=rate,
            progress=progress,
            kinds=kinds,
        )
        return await soak.run()
    finally:
        if scratch:
            shutil.rmtree(where, ignore_errors=True)
