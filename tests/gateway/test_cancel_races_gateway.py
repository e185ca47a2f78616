"""The order lifecycle against IB's cancel races and clientId rules (issue 17, V6 side),
over IBBroker + ib_async and the gateway simulator: a fill that beats a cancel is booked
once and the ladder goes on with the true remainder only; after a drop V6 takes its own
clientId back to cancel its resting order, or ends INTERRUPTED saying which id can."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from gateway_world import broker_settings, make_exchange

from core.broker.base import BrokerError
from core.broker.ib import IBBroker
from core.broker.ib import connection as ib_connection
from core.broker.sim import SimBroker
from core.config import Settings, SimSettings
from core.domain import Action, Contract, OrderRequest, OrderState, OrderStatus
from core.execution.executor import ComboExecutor
from core.execution.results import ExecStatus
from core.sim.exchange import SimExchange
from core.sim.gateway.server import GatewayServer
from core.store.memory import MemoryStore
from core.strategy.candidates import Candidate, build_candidates
from core.strategy.chain import snapshot_chain

pytestmark = pytest.mark.gateway

QUIET = SimSettings(
    correction_rate=0.0, late_commission_rate=0.0, cancel_fill_rate=0.0, client_id_linger_s=5.0
)
SETTINGS = Settings(
    sim=QUIET,
    strategies={
        "fill_timeout_s": 6.0,
        "reprice_steps": 2,
        "fill_poll_s": 1.0,
        "min_score": 0.0,
        "enabled": ["iron_condor"],
    },
)


class Wall:
    """The gateway's pacing clock, moved by hand (clientId linger runs on it)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class PartlyFirst:
    """Stands in for the exchange's cancel-race dice: the race fills one unit only."""

    def random(self) -> float:
        return 0.0

    def randint(self, low: int, high: int) -> int:
        return low


@pytest.fixture
def exchange() -> SimExchange:
    return make_exchange(sim=QUIET)


@pytest.fixture
def wall() -> Wall:
    return Wall()


@pytest.fixture
async def gateway(exchange: SimExchange, wall: Wall) -> AsyncIterator[GatewayServer]:
    async with GatewayServer(exchange, pacing_clock=wall, realtime_data=True) as gw:
        yield gw
    assert gw.protocol_errors == [], gw.protocol_errors


@pytest.fixture
async def broker(gateway: GatewayServer, exchange: SimExchange) -> AsyncIterator[IBBroker]:
    b = IBBroker(broker_settings(gateway), clock=exchange.market.clock)
    await b.connect()
    try:
        yield b
    finally:
        await b.disconnect()


async def candidate(exchange: SimExchange, quantity: int = 1) -> Candidate:
    sim = SimBroker(exchange)
    await sim.connect()
    now = exchange.market.clock.now()
    chain = await snapshot_chain(sim, "SPY", SETTINGS.strategies, now)
    cand = build_candidates(chain, now, SETTINGS).eligible[0]
    return cand.with_quantity(quantity) if quantity != 1 else cand


def executor(broker: IBBroker, gateway: GatewayServer, store: MemoryStore) -> ComboExecutor:
    async def wait(seconds: float) -> None:
        gateway.advance(timedelta(seconds=seconds))
        await asyncio.sleep(0)

    return ComboExecutor(
        broker, store, gateway.exchange.market.clock, SETTINGS,
        net_liquidation=SETTINGS.sim.net_liquidation, wait=wait,
    )  # fmt: skip


def orders(exchange: SimExchange) -> list[OrderState]:
    return sorted(exchange.open_orders() + exchange.completed_orders(), key=lambda o: o.order_id)


def positions(exchange: SimExchange) -> dict[int, int]:
    return {p.contract.con_id: p.quantity for p in exchange.positions()}


def booked_legs(store: MemoryStore) -> int:
    return int(store.read("fills").collect()["quantity"].abs().sum())


async def refused_326(broker: IBBroker) -> asyncio.Event:
    seen = asyncio.Event()
    broker.ib.errorEvent += lambda req_id, code, msg, contract: code == 326 and seen.set()
    return seen


async def test_a_fill_after_the_cancel_is_booked_once_and_the_ladder_stops(
    broker: IBBroker, exchange: SimExchange, gateway: GatewayServer
) -> None:
    cand = await candidate(exchange)
    gateway.delay_fills(100_000)  # nothing fills while the order rests
    exchange.faults.fill_on_next_cancel = True  # the first cancel loses to a full fill
    store = MemoryStore()
    result = await executor(broker, gateway, store).execute_entry(cand)
    assert result.status is ExecStatus.FILLED and result.filled == 1
    (only,) = orders(exchange)  # no next price step went out
    assert only.status is OrderStatus.FILLED
    assert positions(exchange) == {leg.contract.con_id: leg.ratio for leg in cand.legs}
    assert booked_legs(store) == 4  # each leg once
    assert store.read("orders").collect()["status"].to_list()[-1] == "FILLED"


async def test_a_partial_fill_after_the_cancel_leaves_only_the_true_remainder(
    broker: IBBroker, exchange: SimExchange, gateway: GatewayServer
) -> None:
    cand = await candidate(exchange, quantity=3)
    gateway.delay_fills(100_000)
    exchange.faults.fill_on_next_cancel = True
    exchange._rng_cancel = PartlyFirst()  # type: ignore[assignment]  # 1 of 3 fills
    store = MemoryStore()
    await executor(broker, gateway, store).execute_entry(cand)
    first, *rest = orders(exchange)
    assert first.status is OrderStatus.CANCELLED and first.filled == 1
    assert rest and rest[0].quantity == 2  # the next step asks for the rest, not all 3
    filled = sum(o.filled for o in orders(exchange))
    assert filled <= 3
    assert positions(exchange) == {leg.contract.con_id: filled * leg.ratio for leg in cand.legs}
    assert booked_legs(store) == 4 * filled


async def test_a_reconnect_takes_its_client_id_back_and_cancels_its_order(
    broker: IBBroker, exchange: SimExchange, gateway: GatewayServer, wall: Wall
) -> None:
    expiry = exchange.market.clock.now().date() + timedelta(days=25)
    (put,) = await broker.qualify([Contract.option("SPY", expiry, 500.0, "P")])
    assert put is not None
    gateway.delay_fills(100_000)  # it rests
    resting = await broker.place_order(
        OrderRequest(put, Action.BUY, 1, limit_price=0.05, order_ref="resting")
    )
    own = broker.client_id
    refused = await refused_326(broker)
    gateway.drop_connections()
    await asyncio.wait_for(refused.wait(), 5)  # the old id is still taken at first
    wall.t += exchange.habits.client_id_linger_s  # ... and frees up
    await broker.wait_connected(10)
    assert broker.client_id == own
    done = await broker.cancel_order(resting.order_id)
    assert done.status is OrderStatus.CANCELLED
    assert exchange.open_orders() == []


async def test_when_the_old_client_id_stays_taken_the_entry_says_which_id_can_cancel(
    broker: IBBroker,
    exchange: SimExchange,
    gateway: GatewayServer,
    wall: Wall,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ib_connection, "CLIENT_ID_RECLAIM_S", 0.2)
    cand = await candidate(exchange)
    gateway.delay_fills(100_000)
    store = MemoryStore()
    own = broker.client_id
    gateway.drop_on_next_order()  # the order reaches the exchange, the ack is lost
    result = await executor(broker, gateway, store).execute_entry(cand)
    assert broker.client_id != own  # fell back to another id
    assert result.status is ExecStatus.INTERRUPTED
    assert f"placed under clientId {own}" in result.message
    (resting,) = exchange.open_orders()  # left live, nothing sent beside it
    with pytest.raises(BrokerError):
        await broker.cancel_order(resting.order_id)
    await broker.disconnect()
    wall.t += exchange.habits.client_id_linger_s
    later = IBBroker(broker_settings(gateway), clock=exchange.market.clock)
    await later.connect()  # the lowest free id: the old one again
    try:
        assert later.client_id == own
        again = await executor(later, gateway, store).execute_entry(cand)
        assert again.status is ExecStatus.CANCELLED  # the resting order settled, not doubled
        assert exchange.open_orders() == []
        refs = [o.order_ref for o in orders(exchange)]
        assert len(refs) == len(set(refs))
    finally:
        await later.disconnect()
