"""`run_cycle` / `run_trading_cycle` without Prefect (the composition backtests and chaos runs
use), over a SimBroker and a temp Delta store: what stops a cycle, what it tells the breaker,
and the exits it works (close, reduce half, roll)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.exceptions import PanicException

from core.broker.base import BrokerError
from core.broker.sim import SimBroker
from core.clock import SimClock
from core.config import Settings
from core.cycle import CycleContext, run_cycle, run_trading_cycle
from core.cycle.broker import CycleBroker, cycle_registry
from core.cycle.context import Step
from core.cycle.report import ExitOrder
from core.cycle.run import EXIT_RULES
from core.cycle.steps import execute_exits, exit_rules, market_data
from core.domain import Action, Contract, OrderRequest, OrderType
from core.domain.order_refs import make_order_ref
from core.execution.executor import ComboExecutor
from core.execution.results import ExecStatus
from core.risk.breaker import Breaker, Gate, GateMode
from core.runtime import Runtime
from core.sim.exchange import SimExchange, build_exchange
from core.store import DeltaStore
from core.strategy.candidates import build_candidates
from core.strategy.chain import snapshot_chain

BASE: dict[str, Any] = {
    "universe": {"underlyings": ["SPY"]},
    "strategies": {"enabled": ["iron_condor"], "min_score": 0.0, "chain_strike_band_pct": 8.0},
    "breaker": {"reducing_mode": False},
}


class World:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.exchange: SimExchange = build_exchange(Settings())
        self.exchange.market.clock.advance(timedelta(hours=1))
        self.brokers: list[SimBroker] = []

    @property
    def clock(self) -> SimClock:
        clock = self.exchange.market.clock
        assert isinstance(clock, SimClock)
        return clock

    def settings(self, **over: dict[str, Any]) -> Settings:
        values = {k: {**v, **over.get(k, {})} for k, v in BASE.items()}
        values |= {k: v for k, v in over.items() if k not in BASE}
        return Settings(storage={"root": str(self.root)}, **values)

    def runtime(self, **over: dict[str, Any]) -> Runtime:
        settings = self.settings(**over)

        def factory() -> SimBroker:
            b = SimBroker(self.exchange)
            self.brokers.append(b)
            return b

        return Runtime(settings, DeltaStore(self.root), self.clock, factory)

    async def open_condor(self, quantity: int = 1, **strategies: Any) -> str:
        settings = self.settings(strategies=strategies)
        sim = SimBroker(self.exchange)
        await sim.connect()
        now = self.clock.now()
        chain = await snapshot_chain(sim, "SPY", settings.strategies, now)
        cand = build_candidates(chain, now, settings).eligible[0]
        ex = ComboExecutor(
            sim, DeltaStore(self.root), self.clock, settings,
            net_liquidation=settings.sim.net_liquidation,
        )  # fmt: skip
        result = await ex.execute_entry(cand.with_quantity(quantity))
        assert result.status is ExecStatus.FILLED
        return result.strategy_id


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path / "data")


async def test_a_failing_step_stops_the_cycle_and_tells_the_breaker(world: World) -> None:
    rt = world.runtime(cycle={"read_retries": 0})
    original = rt.broker_factory
    assert original is not None

    def refusing() -> SimBroker:
        b = original()
        b.connect_failures = 5  # the gateway refuses every connect
        return b

    rt.broker_factory = refusing
    run = await run_trading_cycle(rt, "fails")
    assert run.report is not None and run.report.failure is not None
    assert run.report.failure.startswith("reconcile: BrokerError")
    assert run.report.steps == ["reconcile", "summarise"]
    assert run.health is not None and not run.health.ok
    assert run.health.disconnected_s > 0  # never got through
    assert run.outcome.name == "Failed"
    stored = DeltaStore(world.root).read("cycle_health").collect()
    assert stored.get_column("ok").to_list() == [False]


async def test_a_rust_panic_in_a_step_fails_the_cycle_instead_of_the_process(
    world: World,
) -> None:
    """polars/deltalake panics are BaseExceptions; the cycle must still fail and record."""

    def wrap(name: str, step: Step) -> Step:
        if name != EXIT_RULES:
            return step

        async def panicking(*_: object) -> object:
            raise PanicException("called `Option::unwrap()` on a `None` value")

        return panicking

    run = await run_trading_cycle(world.runtime(), "panics", wrap=wrap)
    assert run.report is not None
    assert run.report.failure is not None
    assert run.report.failure.startswith("exit-rules: PanicException")
    assert run.report.steps[-1] == "summarise"
    assert run.health is not None and not run.health.ok
    assert DeltaStore(world.root).read("cycle_health").collect().get_column("ok").to_list() == [
        False
    ]


async def test_unresolved_break_blocks_entries_but_not_the_rules(world: World) -> None:
    await world.open_condor()
    stock = world.exchange.qualify(Contract.stock("SPY"))
    assert stock is not None
    ghost = make_order_ref("ic-SPY-20260302-ghost", 0, None)
    world.exchange.place_order(OrderRequest(stock, Action.BUY, 5, OrderType.MKT, order_ref=ghost))
    run = await run_trading_cycle(world.runtime(), "breaks")
    assert run.report is not None
    assert run.report.entries_skipped and "unresolved" in run.report.entries_skipped
    assert "exit-rules" in run.report.steps and "entry-candidates" not in run.report.steps
    assert run.health is not None and run.health.unresolved_breaks == 1
    assert run.outcome.name == "CircuitTripped"


async def test_an_open_breaker_never_builds_a_broker(world: World) -> None:
    rt = world.runtime()
    Breaker(rt.store, rt.settings.breaker, rt.clock).trip("drill", "alice")
    run = await run_trading_cycle(rt, "blocked")
    assert run.gate.mode is GateMode.OPEN_BLOCKED and run.outcome.name == "CircuitOpen"
    assert run.report is None and world.brokers == []


async def test_daily_pnl_is_measured_from_the_first_cycle_of_the_day(world: World) -> None:
    first = await run_trading_cycle(world.runtime(), "first")  # opens a condor
    assert first.report is not None and first.report.entries is not None
    assert first.report.entries.results and first.report.entries.results[0].filled == 1
    assert first.health is not None and first.health.daily_pnl < 0  # commissions, spread
    world.clock.advance(timedelta(minutes=5))
    second = await run_trading_cycle(world.runtime(), "second")
    baseline = DeltaStore(world.root).read("account_daily").collect()
    assert baseline.height == 1 and baseline.get_column("run_id").item() == "first"
    assert second.health is not None and second.report is not None
    assert second.report.summary is not None
    start = baseline.get_column("start_net_liq").item()
    assert second.health.daily_pnl == pytest.approx(second.report.summary.net_liq - start)


async def test_close_reduce_and_roll_are_worked_as_combos(world: World) -> None:
    closing = await world.open_condor()
    reducing = await world.open_condor(quantity=4, target_dte=38, dte_min=30, dte_max=40)
    rolling = await world.open_condor(
        target_dte=25, dte_min=20, dte_max=25, min_credit_to_width=0.0
    )
    rt = world.runtime()
    ctx = CycleContext.create(
        rt.settings, rt.store, rt.clock, SimBroker(world.exchange), "exits",
        Gate(GateMode.NORMAL, None, "test"),
    )  # fmt: skip
    await ctx.broker.connect()
    ctx.net_liquidation = rt.settings.sim.net_liquidation  # the reconcile step's reading
    view = await market_data(ctx)
    rules = await exit_rules(ctx, view)
    assert rules.run is not None and rules.data_points == 3
    # what the rules would decide on a bad day: one of each action
    forced = rules.run.decisions.with_columns(
        action=pl.col("strategy_id").replace_strict(
            {closing: "CLOSE", reducing: "REDUCE", rolling: "ROLL"}, default="HOLD"
        ),
        urgency=pl.lit("normal"),
    )
    rules = replace(rules, run=replace(rules.run, decisions=forced))
    exits = await execute_exits(ctx, rules, view)

    done: dict[str, ExitOrder] = {o.strategy_id: o for o in exits.orders}
    assert set(done) == {closing, reducing, rolling} and not exits.problems
    assert all(o.result is not None and o.result.status is ExecStatus.FILLED for o in done.values())
    held = ctx.book().leg_positions().filter(pl.col("quantity") != 0)
    units = dict(held.group_by("strategy_id").agg(pl.col("quantity").abs().max()).iter_rows())
    assert closing not in units  # flat
    assert units[reducing] == 2  # half of 4
    rolled = held.filter(pl.col("strategy_id") == rolling)  # same strategy, new legs
    assert rolled.height == 4
    assert (rolled.get_column("expiry").min() - world.clock.now().date()).days > 30


async def test_cycle_broker_reports_how_long_the_line_was_down(world: World) -> None:
    settings = world.settings()
    inner = SimBroker(world.exchange)
    earlier = world.clock.now()
    broker = CycleBroker(
        inner, cycle_registry(settings, "t"), world.clock, last_connected_at=earlier
    )
    await broker.connect()
    await broker.positions()
    assert broker.disconnected_s() == 0.0
    inner.drop_connection()
    world.clock.advance(timedelta(minutes=10))
    with pytest.raises(BrokerError):
        await broker.positions()
    assert broker.disconnected_s() == pytest.approx(600.0, abs=1.0)
    await broker.connect()
    await broker.positions()
    assert broker.disconnected_s() == 0.0  # came back within the cycle
    never = CycleBroker(SimBroker(world.exchange), cycle_registry(settings, "u"), world.clock,
                        last_connected_at=earlier)  # fmt: skip
    assert never.disconnected_s() == pytest.approx(600.0, abs=1.0)  # since the last cycle


async def test_quotes_go_through_the_line_budget_in_batches(world: World) -> None:
    settings = world.settings(broker={"market_data_lines": 7, "market_data_snapshot_reserve": 1})
    inner = SimBroker(world.exchange)
    sizes: list[int] = []
    quotes = inner.quotes

    async def counting(contracts: Any) -> Any:
        sizes.append(len(contracts))
        return await quotes(contracts)

    inner.quotes = counting  # type: ignore[method-assign]
    broker = CycleBroker(inner, cycle_registry(settings, "q"), world.clock)
    await broker.connect()
    chain = world.exchange.option_chains("SPY")[0]
    wanted = [Contract.option("SPY", chain.expirations[2], k, "P") for k in chain.strikes[:20]]
    got = await broker.quotes(wanted)
    assert [q.contract.strike for q in got] == [c.strike for c in wanted]
    assert max(sizes) <= 7 and sum(sizes) == 20
    assert broker.registry.pool.in_use() == 0  # every line given back


def test_context_needs_a_run_id(world: World) -> None:
    rt = world.runtime()
    with pytest.raises(ValueError, match="run_id"):
        CycleContext.create(
            rt.settings, rt.store, rt.clock, SimBroker(world.exchange), " ",
            Gate(GateMode.NORMAL, None, "x"),
        )  # fmt: skip


async def test_run_cycle_refuses_a_gate_that_forbids_the_broker(world: World) -> None:
    rt = world.runtime()
    ctx = CycleContext.create(
        rt.settings, rt.store, rt.clock, SimBroker(world.exchange), "x",
        Gate(GateMode.OPEN_BLOCKED, None, "open"),
    )  # fmt: skip
    with pytest.raises(ValueError, match="forbids"):
        await run_cycle(ctx)


async def test_frozen_quotes_are_missing_data_not_prices(world: World) -> None:
    await world.open_condor()
    world.exchange.faults.stale_quotes = True
    run = await run_trading_cycle(world.runtime(strategies={"enabled": []}), "stale")
    assert run.report is not None and run.report.rules is not None
    assert run.report.market is not None
    assert run.report.market.legs.get_column("stale").all()
    assert run.report.market.legs.get_column("mid").is_nan().all()
    assert run.health is not None
    assert (run.health.data_quality_failures, run.health.data_points) == (1, 1)
