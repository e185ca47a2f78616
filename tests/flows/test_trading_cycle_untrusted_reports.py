"""The trading_cycle flow over the production broker path (IBBroker + unmodified ib_async
against the gateway simulator) when the broker's own position report is wrong: an absurd
position (1e15 contracts at avgCost 1e300), or a position message ib_async cannot decode
(it logs "Error handling fields" and drops it). Either way the cycle places no order, books
nothing, and trips the breaker on data_quality."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import polars as pl
import pytest
from gateway_world import broker_settings, make_exchange
from prefect.states import State

from core.broker.ib import IBBroker
from core.broker.sim import SimBroker
from core.config import Settings
from core.execution.executor import ComboExecutor
from core.execution.results import ExecStatus
from core.risk.breaker import Breaker, BreakerState
from core.runtime import Runtime, use_runtime
from core.sim.exchange import SimExchange
from core.sim.gateway.server import GatewayServer
from core.store import DeltaStore
from core.strategy.candidates import build_candidates
from core.strategy.chain import snapshot_chain
from flows.trading_cycle import trading_cycle

pytestmark = pytest.mark.gateway


class World:
    def __init__(self, exchange: SimExchange, gateway: GatewayServer, root: Path) -> None:
        self.exchange, self.gateway, self.root = exchange, gateway, root

    def settings(self) -> Settings:
        return Settings(
            storage={"root": str(self.root)},
            broker=broker_settings(self.gateway, reconnect_max_attempts=2, max_messages_per_s=0),
            universe={"underlyings": ["SPY"]},
            strategies={"enabled": ["iron_condor"], "min_score": 0.0, "chain_strike_band_pct": 8.0},
            cycle={"read_retries": 1, "retry_backoff_s": 0.01},
            breaker={"reducing_mode": False},
        )

    def store(self) -> DeltaStore:
        return DeltaStore(str(self.root))

    async def run(self) -> State:
        settings = self.settings()
        clock = self.exchange.market.clock
        rt = Runtime(settings, self.store(), clock, lambda: IBBroker(settings.broker, clock=clock))
        with use_runtime(rt):
            state = await trading_cycle(guard=False, return_state=True)
        assert isinstance(state, State)
        return state

    async def open_position(self) -> None:
        """An iron condor opened V6's way (book first, one combo), straight on the exchange."""
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
        assert (await ex.execute_entry(cand)).status is ExecStatus.FILLED

    def orders(self) -> int:
        return len(self.exchange.open_orders() + self.exchange.completed_orders())


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


@pytest.mark.parametrize(
    ("position", "avg_cost", "kind"),
    [
        ("1e15", "1e300", "absurd_report"),  # a corrupted report: absurd numbers
        ("1e15x", "0", "missing_position"),  # undecodable: ib_async drops it, the leg vanishes
    ],
)
async def test_an_untrusted_position_report_trips_the_breaker_and_places_nothing(
    world: World, position: str, avg_cost: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    await world.open_position()
    store = world.store()
    fills, legs = store.read("fills").collect(), store.read("legs").collect()
    orders = world.orders()
    short = next(p for p in world.exchange.positions() if p.quantity < 0)
    world.gateway.report_position(short.contract.con_id, position, avg_cost)

    state = await world.run()
    dropped = "Error handling fields" in caplog.text
    assert dropped is (kind == "missing_position")  # the decoder really dropped it
    assert state.is_failed() and state.name == "CircuitTripped", (state.name, state.message)
    assert "data_quality" in str(state.message)
    assert world.orders() == orders  # not one order, not even an exit
    assert store.read("fills").collect().equals(fills)  # nothing booked
    assert store.read("legs").collect().sort("leg_id").equals(legs.sort("leg_id"))
    assert store.read("strategies").collect().filter(pl.col("origin") == "external").is_empty()
    breaks = store.read("reconciliation_breaks").collect()
    assert breaks.select("kind", "resolved", "con_id").rows() == [
        (kind, False, short.contract.con_id)
    ]
    health = store.read("cycle_health").collect().row(0, named=True)
    assert not health["ok"] and "cannot trust" in health["failure"]
    assert health["data_quality_failures"] == health["data_points"] == 1
    settings = world.settings()
    assert Breaker(store, settings.breaker).state() is BreakerState.OPEN
