"""The trading_cycle flow on lost or rolled-back tables (Prefect harness, IBBroker over the
gateway simulator): it places no order and does not even connect; a lost book table trips
the breaker (data_quality); a rolled-back `risk_state` cannot be written, so the run ends
BreakerUnavailable; once the table is back, the breaker decides again."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from gateway_world import broker_settings, make_exchange
from prefect.states import State

from core.broker.ib import IBBroker
from core.config import Settings
from core.risk.breaker import Breaker, BreakerState
from core.runtime import Runtime, use_runtime
from core.sim.exchange import SimExchange
from core.sim.gateway.server import GatewayServer
from core.store import DeltaStore
from flows.trading_cycle import trading_cycle

pytestmark = pytest.mark.gateway


class World:
    def __init__(self, exchange: SimExchange, gateway: GatewayServer, root: Path) -> None:
        self.exchange, self.gateway, self.root = exchange, gateway, root
        self.brokers = 0
        self.settings = Settings(
            storage={"root": str(root)},
            broker=broker_settings(gateway, reconnect_max_attempts=2, max_messages_per_s=0),
            universe={"underlyings": ["SPY"]},
            strategies={"enabled": ["iron_condor"], "min_score": 0.0, "fill_timeout_s": 6.0,
                        "chain_strike_band_pct": 8.0, "reprice_steps": 2, "fill_poll_s": 1.0},
            breaker={"reducing_mode": False},
        )  # fmt: skip

    async def run(self) -> State:
        def factory() -> IBBroker:
            self.brokers += 1
            return IBBroker(self.settings.broker, clock=self.exchange.market.clock)

        rt = Runtime(
            self.settings, DeltaStore(self.root), self.exchange.market.clock, factory
        )  # a fresh process's objects: only the manifest remembers
        with use_runtime(rt):
            state = await trading_cycle(guard=False, return_state=True)
        assert isinstance(state, State)
        return state

    def orders(self) -> int:
        return len(self.exchange.open_orders() + self.exchange.completed_orders())

    def breaker(self) -> Breaker:
        return Breaker(DeltaStore(self.root), self.settings.breaker, self.exchange.market.clock)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    exchange = make_exchange()
    gateway = GatewayServer(exchange, realtime_data=True)
    await gateway.start()
    try:
        yield World(exchange, gateway, tmp_path / "data")
    finally:
        await gateway.close()


async def test_lost_book_table_trips_the_breaker_and_places_no_order(world: World) -> None:
    state = await world.run()
    assert state.name == "Completed" and world.orders() > 0, state.message
    brokers, orders = world.brokers, world.orders()
    shutil.rmtree(world.root / "strategies" / "_delta_log")

    state = await world.run()
    assert state.is_failed() and state.name == "StoreCorrupt", (state.name, state.message)
    message = str(state.message)
    assert "table strategies" in message and "v6 store repair strategies" in message
    assert "breaker tripped (data_quality)" in message
    assert world.brokers == brokers and world.orders() == orders
    status = world.breaker().status()
    assert status.state is BreakerState.OPEN and status.trigger == "data_quality"

    state = await world.run()  # still lost: still refused, tripped only once
    assert state.name == "StoreCorrupt" and "breaker tripped" not in str(state.message)
    assert world.brokers == brokers and world.orders() == orders
    assert len(world.breaker().status().transitions) == 1


async def test_rolled_back_risk_state_is_refused_until_restored(world: World) -> None:
    world.breaker().trip("drill", "alice")
    log = world.root / "risk_state" / "_delta_log"
    trip = sorted(log.glob("*.json"))[-1]
    backup = world.root.parent / trip.name
    shutil.move(trip, backup)  # the tripped breaker would now read CLOSED

    state = await world.run()
    assert state.is_failed() and state.name == "BreakerUnavailable", (state.name, state.message)
    assert "table risk_state" in str(state.message) and "rolled back" in str(state.message)
    assert world.brokers == 0 and world.orders() == 0

    shutil.move(backup, trip)  # restored from backup: the breaker's own verdict again
    state = await world.run()
    assert state.is_cancelled() and state.name == "CircuitOpen", (state.name, state.message)
    assert world.brokers == 0 and world.orders() == 0
