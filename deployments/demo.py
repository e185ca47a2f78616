"""`v6 demo`: V6 end to end on the embedded defaults, in a few minutes.

Nothing is configured and nothing leaves this machine: the gateway simulator serves the
real TWS protocol on an ephemeral loopback port, every flow reaches it through the
production `IBBroker` + ib_async, flows run on Prefect's local API, and Delta tables
land under the configured storage root (`./data` by default). A simulated clock makes a
trading day take seconds: the demo advances it between flow runs the way the scheduler
would in real time.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import polars as pl
from prefect.client.schemas.objects import State
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from core.backtest.run import cycle_times
from core.broker.ib import IBBroker
from core.calendar import MarketCalendar
from core.clock import SimClock
from core.config import Settings
from core.domain.strategies import StrategyStatus
from core.domain.timezones import MARKET_TZ
from core.runtime import Runtime, use_runtime
from core.sim.exchange import SimExchange, build_exchange
from core.sim.gateway.client import simulator_broker_settings
from core.sim.gateway.server import GatewayServer
from core.store import DeltaStore, TableSpec
from deployments.installation import home_tag, tagged
from deployments.progress import bar_columns, cycle_bar
from flows.backtest import backtest
from flows.futures_collection import futures_collection
from flows.maintenance import maintenance
from flows.position_reconciliation import position_reconciliation
from flows.trading_cycle import trading_cycle
from flows.variance_analysis import variance_analysis

BACKTEST_SESSIONS = 10
DRILL_FOLLOW_UP_MIN = 10  # a cycle this long after the drill's trip, inside the cool-down


@dataclass
class RunLog:
    """Every flow run the demo made: name, market time, final state name and message."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, flow: str, at: datetime, state: State) -> State:
        self.rows.append(
            {
                "flow": flow,
                "at": at.astimezone(UTC),
                "state": state.name or str(state.type),
                "message": state.message,
            }
        )
        return state

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(self.rows, schema_overrides={"message": pl.String})


def demo_settings(settings: Settings, port: int) -> Settings:
    """The user's settings, pointed at the in-process gateway simulator (a paper port)."""
    broker = simulator_broker_settings(settings.broker, port)
    return settings.model_copy(update={"broker": broker})


class Demo:
    """One simulated world (exchange + gateway) driven through the real flows."""

    def __init__(
        self, settings: Settings, console: Console, days: int, cycle_minutes: int = 60
    ) -> None:
        self.settings = settings
        self.console = console
        self.days = days
        self.cycle_minutes = cycle_minutes
        self.drill_day: date | None = None  # the day the breaker drill runs (day 2)
        self.exchange: SimExchange = build_exchange(settings)
        clock = self.exchange.market.clock
        if not isinstance(clock, SimClock):
            raise TypeError("the demo needs the simulator's SimClock")
        self.clock = clock
        self.calendar = MarketCalendar(settings.schedules)
        self.store = DeltaStore.from_settings(settings)
        self.log = RunLog()
        self.gateway: GatewayServer | None = None

    async def run(self) -> None:
        async with GatewayServer(
            self.exchange,
            host="127.0.0.1",
            port=0,
            market_data_lines=self.settings.broker.market_data_lines,
            # the demo compresses a day into seconds: pace history requests in market time
            pacing_clock=lambda: self.clock.now().timestamp(),
            realtime_data=True,  # the demo trades on live data (demo_settings)
        ) as gateway:
            self.gateway = gateway
            settings = demo_settings(self.settings, gateway.port)
            runtime = Runtime(
                settings=settings,
                store=self.store,
                clock=self.clock,
                broker_factory=lambda: IBBroker(settings.broker, clock=self.clock),
            )
            self.console.print(
                f"gateway simulator on 127.0.0.1:{gateway.port}, simulated market from "
                f"{self.clock.now().astimezone(MARKET_TZ):%Y-%m-%d %H:%M} New York"
            )
            with use_runtime(runtime), tagged(self.settings):
                await self._days(runtime)

    async def _days(self, runtime: Runtime) -> None:
        first = self.clock.now().astimezone(MARKET_TZ).date()
        sessions = self.calendar.trading_days(first, self.days)
        self.drill_day = sessions[1] if len(sessions) > 1 else sessions[0]
        steps = [(self.clock.now(), "backtest", self._backtest)]
        steps += [step for day in sessions for step in self._plan(day)]
        with Progress(*bar_columns(), console=self.console) as progress:
            bar = progress.add_task("simulating", total=len(steps), unit="flow runs")
            # the backtest step's cycles get a row of their own under the flow-run bar
            runtime.backtest_progress = cycle_bar(progress, "backtest")
            for when, label, run in steps:
                self._advance_to(when)
                progress.update(
                    bar, description=f"{when.astimezone(MARKET_TZ):%a %m-%d %H:%M} {label}"
                )
                self.log.add(label, when, await run())
                progress.advance(bar)

    def _plan(self, day: date) -> list[tuple[datetime, str, Callable[[], Awaitable[State]]]]:
        """The day as the deployments would run it, in market time."""
        open_, close = self.calendar.session_bounds(day)

        def at(t: time) -> datetime:
            return datetime.combine(day, t, MARKET_TZ)

        plan: list[tuple[datetime, str, Callable[[], Awaitable[State]]]] = [
            (open_ + timedelta(minutes=1), "futures_collection", self._collect),
            (open_ + timedelta(hours=2, minutes=2), "position_reconciliation", self._reconcile),
            (close + timedelta(minutes=5), "futures_collection", self._collect),
            (at(time(17, 15)), "maintenance", self._maintain),
            (at(time(18, 30)), "variance_analysis", self._analyse),
        ]
        cycles = cycle_times(self.calendar, day, timedelta(minutes=self.cycle_minutes))
        for i, t in enumerate(cycles):
            if day == self.drill_day and i == 1:
                plan.append((t, "trading_cycle", self._cycle_with_bad_greeks))
                # the scheduler's next tick (every 5 min in production) lands while the
                # breaker is open: exits only (or CircuitOpen without reducing mode)
                if self.cycle_minutes > DRILL_FOLLOW_UP_MIN:
                    follow_up = t + timedelta(minutes=DRILL_FOLLOW_UP_MIN)
                    plan.append((follow_up, "trading_cycle", self._cycle))
            else:
                plan.append((t, "trading_cycle", self._cycle))
        return sorted(plan, key=lambda step: step[0])

    def _advance_to(self, when: datetime) -> None:
        assert self.gateway is not None
        now = self.clock.now()
        if when > now:
            self.gateway.advance(when - now)

    async def _backtest(self) -> State:
        """The historical side for tonight's variance analysis: V6's own cycle over the
        sessions before the demo's first day (one cycle a session keeps it short)."""
        first = self.clock.now().astimezone(MARKET_TZ).date()
        start = self.calendar.sessions_before(first, BACKTEST_SESSIONS)[0]
        return await backtest(
            days=BACKTEST_SESSIONS, start=start, cycle_minutes=390, return_state=True
        )

    async def _cycle(self) -> State:
        return await trading_cycle(return_state=True)

    async def _cycle_with_bad_greeks(self) -> State:
        """Breaker drill: the gateway sends NaN greeks for one cycle; the rules cannot decide
        (NO_DATA), the data-quality rate trips the breaker, the next cycle runs exits only
        (ExitsOnly; CircuitOpen without reducing mode), and a half-open probe after the
        cool-down closes it again."""
        assert self.gateway is not None
        self.gateway.nan_greeks(True)
        try:
            return await trading_cycle(return_state=True)
        finally:
            self.gateway.nan_greeks(False)

    async def _collect(self) -> State:
        return await futures_collection(return_state=True)

    async def _reconcile(self) -> State:
        return await position_reconciliation(return_state=True)

    async def _maintain(self) -> State:
        return await maintenance(return_state=True)

    async def _analyse(self) -> State:
        return await variance_analysis(return_state=True)


def quiet_prefect_console() -> None:
    """Keep the terminal for the demo's progress: Prefect's console handler (on the root
    logger, where flow and task run logs propagate) shows warnings only. Run logs still
    reach the API in full, so the Prefect UI shows everything."""
    from prefect.logging.configuration import setup_logging
    from prefect.logging.handlers import PrefectConsoleHandler

    setup_logging()  # idempotent; make sure the handlers exist before adjusting them
    loggers = [logging.getLogger()] + [
        logging.getLogger(name)
        for name in list(logging.root.manager.loggerDict)
        if name == "prefect" or name.startswith("prefect.")
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, PrefectConsoleHandler):
                handler.setLevel(logging.WARNING)


def run_demo(settings: Settings, console: Console, days: int = 3, cycle_minutes: int = 60) -> None:
    quiet_prefect_console()
    console.rule("[bold]V6 demo")
    console.print(
        f"storage: [bold]{settings.storage.root}[/bold]   "
        f"universe: {', '.join(settings.universe.underlyings)} / "
        f"{', '.join(settings.universe.futures)}   simulated days: {days}"
    )
    store = DeltaStore.from_settings(settings)
    store.ensure_all()
    checked = self_check(store.registry, console)
    console.print(f"[green]✓[/green] {checked} Delta tables ready; write/read-back verified")
    if not settings.sim.regimes and days >= 3:  # end the demo on a crash day: exits at work
        last = MarketCalendar(settings.schedules).trading_days(
            date.fromisoformat(settings.sim.start), days
        )[-1]
        settings = settings.model_copy(
            update={"sim": settings.sim.model_copy(update={"regimes": {last.isoformat(): "crash"}})}
        )
    demo = Demo(settings, console, days, cycle_minutes)
    asyncio.run(demo.run())
    print_summary(demo, console)


def print_summary(demo: Demo, console: Console) -> None:
    runs = demo.log.frame()
    table = Table(title="flow runs by final state")
    for col in ("flow", "state", "runs"):
        table.add_column(col)
    counts = runs.group_by("flow", "state").len().sort("flow", "state")
    for flow, state, n in counts.iter_rows():
        table.add_row(flow, state, str(n))
    console.print(table)

    store = demo.store
    strategies = store.read("strategies").collect()
    trades = store.read("trades").collect()
    realised = float(trades.get_column("pnl").sum()) if trades.height else 0.0
    account = demo.exchange.account_summary()
    start_cash = demo.settings.sim.net_liquidation
    transitions = store.read("risk_state").collect().sort("seq")
    reports = sorted(Path(demo.settings.storage.reports_dir).glob("variance-*.html"))

    by_type = Table(title="strategies by type")
    for col in ("type", "opened", "closed", "realised P&L (USD)"):
        by_type.add_column(col)
    counts_by_type = (
        strategies.group_by("strategy_type")
        .agg(
            opened=pl.col("opened_at").is_not_null().sum(),
            closed=(pl.col("status") == StrategyStatus.CLOSED.value).sum(),
        )
        .join(
            trades.group_by("strategy_type").agg(pl.col("pnl").sum()),
            on="strategy_type",
            how="left",
        )
        .with_columns(pl.col("pnl").fill_null(0.0))
        .sort("strategy_type")
    )
    for kind, n_open, n_closed, value in counts_by_type.iter_rows():
        by_type.add_row(kind, str(n_open), str(n_closed), f"{value:,.2f}")
    if counts_by_type.height:
        console.print(by_type)
    opened, closed = (int(counts_by_type.get_column(c).sum()) for c in ("opened", "closed"))

    facts = Table(title="what V6 did", show_header=False)
    facts.add_column("what")
    facts.add_column("value")
    facts.add_row("strategies opened / closed", f"{opened} / {closed}")
    facts.add_row("realised P&L (closed trades)", f"{realised:,.2f} USD")
    facts.add_row(
        "net liquidation", f"{account.net_liquidation:,.2f} USD (start {start_cash:,.2f})"
    )
    for row in transitions.iter_rows(named=True):
        facts.add_row(
            f"breaker {row['from_state']} -> {row['to_state']}",
            f"{row['ts'].astimezone(MARKET_TZ):%a %m-%d %H:%M}: {str(row['reason'])[:90]}",
        )
    backtests = store.read("backtest_predictions").select("run_id").unique().collect()
    historical = store.read("backtest_trades").collect()
    facts.add_row(
        "backtest (historical side)",
        f"{backtests.height} run(s): {historical.height} closed trade(s) to compare against",
    )
    if reports:
        facts.add_row("variance report", str(reports[-1].resolve()))
    console.print(facts)
    console.rule("[bold]done")
    console.print(_where_the_runs_are(home_tag(demo.settings)), soft_wrap=True)
    console.print("`v6 tables` lists what was stored; `v6 status` shows positions and breaker.")


def _where_the_runs_are(tag: str) -> str:
    """Where to look at the demo's runs: the Prefect server it ran against, or (when it ran
    on this command's temporary API, gone by now) the database a `prefect server start`
    with the same PREFECT_HOME will show."""
    from prefect.settings import get_current_settings

    from deployments.local_api import temporary_api_url

    settings = get_current_settings()
    if settings.api.url and settings.api.url != temporary_api_url():
        ui = settings.ui_url or settings.api.url.removesuffix("/api")
        return f"The demo's runs are on the Prefect server {ui}: open {ui}/runs, filter by {tag}."
    db = settings.server.database.connection_url
    where = _without_password(db.get_secret_value()) if db else "Prefect's local database"
    return (
        f"The demo's runs are in {where}, tagged {tag}: `prefect server start` "
        "(same PREFECT_HOME), open http://127.0.0.1:4200/runs and filter by that tag."
    )


def _without_password(url: str) -> str:
    """A database URL fit to print: any password replaced by ***."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if not parts.password:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def self_check(registry: Mapping[str, TableSpec], console: Console) -> int:
    """Write each table's example record to a scratch store and read it back unchanged.

    A scratch root keeps example records out of the real book."""
    scratch = tempfile.mkdtemp(prefix="v6-selfcheck-")
    try:
        store = DeltaStore(scratch, registry=registry)
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("write/read-back check", total=len(registry))
            for name, spec in registry.items():
                if spec.example is None:
                    raise RuntimeError(f"table {name} has no example record to self-check with")
                example = spec.example()
                if spec.keys:
                    store.merge(name, example)
                else:
                    store.append(name, example)
                back = store.read(name).collect()
                want = example.select(spec.schema.names())
                if not back.select(want.columns).sort(want.columns).equals(want.sort(want.columns)):
                    raise RuntimeError(f"table {name}: read-back differs from what was written")
                progress.advance(task)
        return len(registry)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
