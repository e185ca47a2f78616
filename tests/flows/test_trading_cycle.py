"""The trading_cycle flow on the Prefect test harness, over the production broker path:
IBBroker + unmodified ib_async against the gateway simulator on loopback, a temp Delta
store, simulated time. Every breaker condition trips within one cycle and ends the run in
CircuitTripped; the runs after it are CircuitOpen without touching the broker; exits-only,
the half-open probe, a restart and an unreadable state behave as the breaker promises."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from gateway_world import broker_settings, make_exchange
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.states import State

from core.broker.ib import IBBroker
from core.broker.sim import SimBroker
from core.config import Settings
from core.domain import Action, Contract, OrderRequest, OrderState, OrderType, Right
from core.domain.order_refs import make_order_ref
from core.execution.executor import ComboExecutor
from core.execution.results import ExecStatus
from core.risk.breaker import Breaker, BreakerState
from core.runtime import Runtime, use_runtime
from core.sim.exchange import SimExchange
from core.sim.gateway.server import GatewayServer
from core.store import DeltaStore
from core.strategy.candidates import build_candidates
from core.strategy.chain import snapshot_chain
from deployments.automations import AUTOMATION_NAME, TRIP_EVENT, ensure_pause_on_trip
from flows.trading_cycle import trading_cycle
from tasks.cycle import SUMMARY_KEY

pytestmark = pytest.mark.gateway

CLIENT_IDS = tuple(range(100, 110))  # broker_settings' clientId range

BASE: dict[str, Any] = {
    "universe": {"underlyings": ["SPY"]},
    "strategies": {
        "enabled": ["iron_condor"],
        "min_score": 0.0,
        "chain_strike_band_pct": 8.0,
        "fill_timeout_s": 6.0,
        "reprice_steps": 2,
        "fill_poll_s": 1.0,
    },
    "cycle": {"read_retries": 1, "retry_backoff_s": 0.01},
    "breaker": {"reducing_mode": False},
}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = {**out.get(k, {}), **v} if isinstance(v, dict) else v
    return out


@dataclass
class World:
    """One simulated exchange behind one gateway, one store directory; every `runtime()`
    is a fresh set of objects on them (what a new flow-run process would build)."""

    exchange: SimExchange
    gateway: GatewayServer
    root: Path
    brokers: int = 0  # IBBrokers the runs created (a run that must not touch the broker: 0)
    broker_cls: type[IBBroker] = IBBroker
    overrides: dict[str, Any] = field(default_factory=dict)

    def settings(self, **overrides: Any) -> Settings:
        values = _merge(_merge(BASE, self.overrides), overrides)
        return Settings(
            storage={"root": str(self.root)},
            broker=broker_settings(self.gateway, reconnect_max_attempts=2, max_messages_per_s=0),
            **values,
        )

    def runtime(self, **overrides: Any) -> Runtime:
        settings = self.settings(**overrides)

        def factory() -> IBBroker:
            self.brokers += 1
            b = self.broker_cls(settings.broker, clock=self.exchange.market.clock)
            return b

        return Runtime(
            settings, DeltaStore.from_settings(settings), self.exchange.market.clock, factory
        )

    async def run(self, **overrides: Any) -> State:
        with use_runtime(self.runtime(**overrides)):
            state = await trading_cycle(guard=False, return_state=True)
        assert isinstance(state, State)
        return state

    def breaker(self, **overrides: Any) -> Breaker:
        rt = self.runtime(**overrides)
        return Breaker(rt.store, rt.settings.breaker, rt.clock)

    def store(self) -> DeltaStore:
        return DeltaStore(self.root)

    def orders(self) -> list[OrderState]:
        return self.exchange.open_orders() + self.exchange.completed_orders()

    def later(self, minutes: float = 5) -> None:
        self.exchange.market.clock.advance(timedelta(minutes=minutes))

    async def open_position(self) -> str:
        """An iron condor opened V6's way (book first, one combo), straight on the exchange:
        the setup for exit tests, without spending a flow run on it."""
        settings = self.settings()
        sim = SimBroker(self.exchange)
        await sim.connect()
        now = self.exchange.market.clock.now()
        chain = await snapshot_chain(sim, "SPY", settings.strategies, now)
        cand = build_candidates(chain, now, settings).eligible[0]
        ex = ComboExecutor(
            sim, self.store(), self.exchange.market.clock, settings,
            net_liquidation=settings.sim.net_liquidation,
        )  # fmt: skip
        result = await ex.execute_entry(cand)
        assert result.status is ExecStatus.FILLED
        return result.strategy_id

    def intents(self) -> pl.DataFrame:
        return self.store().read("order_intents").collect()

    def health(self) -> pl.DataFrame:
        return self.store().read("cycle_health").collect().sort("ts")


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    exchange = make_exchange()
    gateway = GatewayServer(exchange, realtime_data=True)
    await gateway.start()
    try:
        yield World(exchange, gateway, tmp_path / "data")
    finally:
        await gateway.close()
    assert gateway.protocol_errors == [], gateway.protocol_errors


def tripped(state: State, condition: str) -> None:
    assert state.is_failed(), (state.name, state.message)
    assert state.name == "CircuitTripped", (state.name, state.message)
    assert condition in str(state.message), state.message


async def assert_open_and_untouched(world: World, **overrides: Any) -> None:
    """The next run is CircuitOpen: no broker built, no order sent, nothing recorded."""
    brokers, orders, rows = world.brokers, len(world.orders()), world.health().height
    state = await world.run(**overrides)
    assert state.is_cancelled() and state.name == "CircuitOpen", (state.name, state.message)
    assert world.brokers == brokers
    assert len(world.orders()) == orders
    assert world.health().height == rows


# -- a normal cycle -------------------------------------------------------------------------


async def test_normal_cycle_reconciles_decides_and_enters(world: World) -> None:
    with use_runtime(world.runtime()):
        state = await trading_cycle(return_state=True)  # the run guard passes: market open

    assert state.is_completed() and state.name == "Completed", state.message
    summary = await state.result()
    assert summary["outcome"] == "Completed" and summary["failure"] is None
    assert summary["steps"][:2] == ["reconcile", "market-data"]
    assert "entry-candidates" in summary["steps"] and summary["filled"] == 1
    strategies = world.store().read("strategies").collect()
    assert strategies.get_column("status").to_list() == ["OPEN"]
    assert {p.contract.con_id for p in world.exchange.positions()} == set(
        world.store().read("legs").collect().get_column("con_id").to_list()
    )
    bag_orders = [o for o in world.orders() if o.contract.sec_type.value == "BAG"]
    assert bag_orders and all(o.order_ref.startswith("v6:") for o in bag_orders)
    health = world.health()
    assert health.height == 1 and health.get_column("ok").item()
    assert health.get_column("disconnected_s").item() == 0.0
    assert world.brokers == 1 and world.gateway.client_ids() == []  # disconnected after

    # the next cycle decides the strategy it opened, with every rule input present
    world.later()
    state = await world.run()
    assert state.name == "Completed"
    decisions = world.store().read("decisions").collect()
    assert decisions.height == 1 and decisions.get_column("action").item() == "HOLD"
    assert decisions.get_column("missing_inputs").item() is None
    async with get_client() as client:
        arts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[SUMMARY_KEY]))
        )
    assert arts and "Circuit breaker" in str(arts[0].data)


async def test_closed_market_stands_down_before_the_breaker(world: World) -> None:
    world.later(12 * 60)  # 22:30 ET
    with use_runtime(world.runtime()):
        state = await trading_cycle(return_state=True)
    assert state.is_completed() and state.name == "MarketClosed"
    assert world.brokers == 0 and world.health().height == 0


# -- each trip condition, then CircuitOpen ---------------------------------------------------


async def test_consecutive_failures_trip_then_the_broker_is_left_alone(world: World) -> None:
    world.gateway.claim_client_id(*CLIENT_IDS)  # every connect answers 326: the cycle fails
    first = await world.run(breaker={"consecutive_failures": 2})
    assert first.is_failed() and first.name == "Failed"
    assert "reconcile" in str(first.message) and "clientId" in str(first.message)
    second = await world.run(breaker={"consecutive_failures": 2})
    tripped(second, "consecutive_failures")
    world.gateway.release_client_id(*CLIENT_IDS)
    await assert_open_and_untouched(world, breaker={"consecutive_failures": 2})


async def test_daily_loss_trips_within_the_cycle(world: World) -> None:
    store = world.store()
    start = world.exchange.account_summary().net_liquidation
    day = world.exchange.market.clock.now().date()
    store.merge(  # the first cycle of the day recorded the account at 100,000
        "account_daily",
        pl.DataFrame(
            {
                "date": [day],
                "account": [world.exchange.account],
                "start_net_liq": [start],
                "start_ts": [world.exchange.market.clock.now() - timedelta(hours=1)],
                "run_id": ["earlier"],
            },
            schema=store.spec("account_daily").schema,
        ),
        update=False,
    )
    # then a trade in TWS lost money: deep in-the-money calls bought at the ask
    expiry = world.exchange.option_chains("SPY")[0].expirations[3]
    deep = world.exchange.qualify(Contract.option("SPY", expiry, 600.0, Right.CALL))
    assert deep is not None
    world.exchange.place_order(OrderRequest(deep, Action.BUY, 5, OrderType.MKT, order_ref="tws-1"))
    loss_pct = (start - world.exchange.account_summary().net_liquidation) * 100 / start
    assert loss_pct > 0

    state = await world.run(breaker={"daily_loss_pct": loss_pct / 2})
    tripped(state, "daily_loss")
    assert world.health().get_column("daily_pnl").item() < 0
    await assert_open_and_untouched(world)


async def test_order_rejections_trip(world: World) -> None:
    world.gateway.reject_next_order(10)
    state = await world.run(
        breaker={"max_rejections_per_hour": 1},
        strategies={
            "enabled": ["iron_condor", "bull_put_spread"],
            "entries_per_underlying": 2,
            "min_credit_to_width": 0.05,
        },
    )
    tripped(state, "rejections")
    assert world.health().get_column("rejections").item() == 2
    assert world.store().read("strategies").collect().get_column("status").unique().to_list() == [
        "CANCELLED"
    ]
    await assert_open_and_untouched(world)


class DroppedGateway(IBBroker):
    """The gateway goes away mid-cycle (first bars request) and refuses every reconnect."""

    gateway: GatewayServer

    async def historical_bars(self, *args: Any, **kwargs: Any) -> Any:
        if not self.gateway.faults.claimed_client_ids:
            self.gateway.claim_client_id(*CLIENT_IDS)
            self.gateway.drop_connections()
        return await super().historical_bars(*args, **kwargs)


async def test_disconnect_longer_than_the_limit_trips(world: World) -> None:
    DroppedGateway.gateway = world.gateway
    world.broker_cls = DroppedGateway
    state = await world.run(breaker={"max_disconnect_s": 0.05})
    tripped(state, "disconnected")
    row = world.health().row(0, named=True)
    assert not row["ok"] and row["disconnected_s"] > 0.05
    assert "market-data" in row["failure"]
    world.gateway.release_client_id(*CLIENT_IDS)
    await assert_open_and_untouched(world)


async def test_unresolved_reconciliation_break_trips(world: World) -> None:
    stock = world.exchange.qualify(Contract.stock("SPY"))
    assert stock is not None
    ghost = make_order_ref("ic-SPY-20260302-ghost", 0, None)  # a V6 ref naming no strategy
    world.exchange.place_order(OrderRequest(stock, Action.BUY, 10, OrderType.MKT, order_ref=ghost))
    state = await world.run()
    tripped(state, "unresolved_breaks")
    assert world.health().get_column("unresolved_breaks").item() == 1
    assert [o.order_ref for o in world.orders()] == [ghost]  # no new risk on a broken book
    await assert_open_and_untouched(world)


async def test_nan_greeks_trip_the_data_quality_condition(world: World) -> None:
    await world.open_position()
    world.gateway.nan_greeks(True)
    state = await world.run()
    tripped(state, "data_quality")
    row = world.health().row(0, named=True)
    assert row["data_quality_failures"] == row["data_points"] == 1
    decisions = world.store().read("decisions").collect()
    assert decisions.get_column("action").to_list() == ["NO_DATA"]
    await assert_open_and_untouched(world)


# -- OPEN in reducing mode, the half-open probe, restarts, an unreadable state ----------------


async def test_exits_only_mode_closes_and_opens_nothing(world: World) -> None:
    sid = await world.open_position()
    world.breaker(breaker={"reducing_mode": True}).trip("drill", "alice")
    sent = {o.order_ref for o in world.orders()}
    state = await world.run(breaker={"reducing_mode": True}, rules={"stop_loss_pct": 0.5})
    assert state.is_completed() and state.name == "ExitsOnly", (state.name, state.message)
    summary = await state.result()
    assert "entry-candidates" not in summary["steps"]
    new = world.intents().filter(~pl.col("order_ref").is_in(list(sent)))
    assert new.height >= 1 and set(new.get_column("purpose")) == {"close"}
    assert set(new.get_column("strategy_id")) == {sid}
    assert world.exchange.positions() == []  # the stop-loss exit went through
    assert world.breaker().state() is BreakerState.OPEN


async def test_half_open_probe_closes_the_breaker(world: World) -> None:
    await world.open_position()
    world.breaker().trip("drill", "alice")
    state = await world.run(breaker={"cooldown_minutes": 0})
    assert state.is_completed() and state.name == "HalfOpenProbe", (state.name, state.message)
    summary = await state.result()
    assert "entry-candidates" not in summary["steps"]  # the probe runs with entries disabled
    assert world.breaker().state() is BreakerState.CLOSED
    assert world.store().read("strategies").collect().height == 1  # nothing new opened
    world.later()
    assert (await world.run()).name == "Completed"


async def test_failing_probe_reopens_the_breaker(world: World) -> None:
    world.breaker().trip("drill", "alice")
    world.gateway.claim_client_id(*CLIENT_IDS)
    state = await world.run(breaker={"cooldown_minutes": 0})
    tripped(state, "probe")
    status = world.breaker().status()
    assert status.state is BreakerState.OPEN and status.trigger == "probe_failure"


async def test_breaker_state_survives_a_restart(world: World) -> None:
    Breaker(DeltaStore(world.root), Settings().breaker).trip("drill", "alice")
    # a new process: new store, breaker and runtime objects on the same directory
    assert Breaker(DeltaStore(world.root), Settings().breaker).state() is BreakerState.OPEN
    await assert_open_and_untouched(world)


async def test_unreadable_breaker_state_blocks_trading(world: World) -> None:
    world.breaker().trip("drill", "alice")
    world.breaker().reset("drill over", "alice")
    shutil.rmtree(world.root / "risk_state" / "_delta_log")  # data files left, log gone
    state = await world.run()
    assert state.is_failed() and state.name == "BreakerUnavailable", (state.name, state.message)
    assert "risk_state" in str(state.message)
    assert world.brokers == 0 and world.orders() == []


async def test_pause_on_trip_automation_is_installed_once() -> None:
    first = await ensure_pause_on_trip()
    second = await ensure_pause_on_trip()  # idempotent: replaced, not duplicated
    async with get_client() as client:
        found = await client.read_automations_by_name(AUTOMATION_NAME)
    assert [a.id for a in found] == [second] and first != second
    auto = found[0]
    assert auto.trigger.expect == {TRIP_EVENT}  # type: ignore[union-attr]
    assert [type(a).__name__ for a in auto.actions] == ["PauseDeployment"]


# -- assignment ------------------------------------------------------------------------------


async def test_assigned_stock_is_closed_by_the_next_cycle(world: World) -> None:
    """IB assigns a short leg of an open iron condor: positions change, no execution. The
    next cycle books the assignment (the stock goes into the strategy), then the
    `delivered_stock` rule closes the strategy: the stock as its own order, then the three
    option legs left as one combo. The account ends flat, the book agrees."""
    sid = await world.open_position()
    legs_before = {p.contract.con_id for p in world.exchange.positions()}
    world.exchange.faults.assign_next = True
    world.later()
    world.exchange.on_clock()  # what the gateway does on its next tick
    held = {p.contract.sec_type.value: p for p in world.exchange.positions()}
    assert "STK" in held and len(world.exchange.positions()) == 4  # stock + 3 options

    state = await world.run(
        rules={"stop_loss_pct": 999.0}, limits={"max_new_strategies_per_day": 1}
    )  # the day's one entry is the condor: nothing new opens beside the exit
    assert state.is_completed(), (state.name, state.message)
    breaks = world.store().read("reconciliation_breaks").collect()
    assert breaks.get_column("kind").to_list() == ["assignment"]
    decisions = world.store().read("decisions").collect()
    row = decisions.row(0, named=True)
    assert (row["strategy_id"], row["rule"], row["action"]) == (sid, "delivered_stock", "CLOSE")
    closes = world.intents().filter(pl.col("purpose") == "close")
    assert closes.height == 2  # one stock order, one combo for the options
    stock_orders = [o for o in world.orders() if o.contract.sec_type.value == "STK"]
    assert len(stock_orders) == 1 and stock_orders[0].order_ref.startswith("v6:")
    assert stock_orders[0].action.value == ("SELL" if held["STK"].quantity > 0 else "BUY")
    assert world.exchange.positions() == []
    strategy = world.store().read("strategies").collect().row(0, named=True)
    assert strategy["status"] == "CLOSED"
    legs = world.store().read("legs").collect()
    assert set(legs.get_column("con_id")) == legs_before | {held["STK"].contract.con_id}


async def test_delivered_stock_is_kept_when_its_rule_is_disabled(world: World) -> None:
    await world.open_position()
    world.exchange.faults.assign_next = True
    world.later()
    world.exchange.on_clock()
    state = await world.run(rules={"disabled": ["delivered_stock"], "stop_loss_pct": 999.0})
    assert state.is_completed(), (state.name, state.message)
    assert not [o for o in world.orders() if o.contract.sec_type.value == "STK"]
    assert "STK" in {p.contract.sec_type.value for p in world.exchange.positions()}


async def test_entry_over_the_what_if_margin_limit_is_refused_with_its_reason(
    world: World,
) -> None:
    """IB's what-if on the exact BAG entry order, through IBBroker and ib_async: a condor
    needs one side's width x 100 of initial margin (Reg-T), more than 0.1 % of the account."""
    state = await world.run(limits={"max_margin_pct": 0.1})
    assert state.name == "Completed", state.message
    summary = await state.result()
    assert summary["entries"] >= 1 and summary["filled"] == 0 and summary["orders"] == 0
    (blocked, *_) = summary["entries_blocked"]
    assert "post-trade initial margin" in blocked and "limits.max_margin_pct" in blocked
    assert not [o for o in world.orders() if o.contract.sec_type.value == "BAG"]
    assert world.intents().is_empty()
    statuses = world.store().read("strategies").collect().get_column("status").to_list()
    assert statuses and set(statuses) == {"CANCELLED"}
