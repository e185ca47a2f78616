"""Reconciliation over the production path: IBBroker + unmodified ib_async against the
gateway simulator on loopback, with the faults a live gateway produces. After one
reconciliation the book equals the broker, with the right breaks and no duplicate fill."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest
from reconcile_world import OVERLAP, SimWorld, make_exchange, rich_settings

from core.broker.base import BrokerError, ErrorClass
from core.broker.ib import IBBroker
from core.domain import Contract
from core.reconcile import BrokerFrames, ReconcileResult, reconcile
from core.sim.exchange import SimExchange
from core.sim.gateway.server import GatewayServer
from core.store.memory import MemoryStore

pytestmark = pytest.mark.gateway


@pytest.fixture
def exchange() -> SimExchange:
    """A funded account (naked short options need margin), an hour into the session."""
    return make_exchange(rich_settings())


@pytest.fixture
def world(exchange: SimExchange) -> SimWorld:
    return SimWorld(exchange, MemoryStore())


async def reconcile_over_the_wire(world: SimWorld, broker: IBBroker) -> ReconcileResult:
    last = world.book.last_reconciled_at()
    since = None if last is None else last - OVERLAP
    for attempt in range(3):  # what the flow's fetch task does: retry after a reconnect
        try:
            frames = BrokerFrames.from_domain(
                await broker.positions(),
                await broker.executions(since),
                await broker.open_orders(),
            )
            break
        except BrokerError as exc:
            if exc.kind is not ErrorClass.CONNECTIVITY or attempt == 2:
                raise
            await broker.wait_connected(timeout=10)
    world.runs += 1
    result = reconcile(
        world.book.frames(),
        frames,
        as_of=world.clock.now(),
        run_id=f"gw{world.runs}",
        account=broker.account,
    )
    world.book.apply(result)
    return result


def kinds(result: ReconcileResult) -> dict[str, int]:
    return dict(result.breaks.group_by("kind").len().iter_rows())


async def test_faults_over_the_wire_then_one_reconciliation(
    world: SimWorld, broker: IBBroker, gateway: GatewayServer, exchange: SimExchange
) -> None:
    pool = world.pool
    stock = exchange.qualify(Contract.stock("SPY"))
    assert stock is not None
    # 1. crash between order and record: intent written, order sent and filled, nothing booked
    lost = world.v6_single(pool[0], -2)
    assert (await broker.place_order(lost)).filled == 2
    # 2. the gateway reports an execution twice; the cycle books what it was told
    exchange.faults.duplicate_next_execution = True
    vertical = world.v6_vertical(pool[2], pool[0], 1)
    await broker.place_order(vertical)
    await broker.current_time()  # a round trip: every execDetails pushed so far is in
    told = [e for e in broker.execution_journal() if e.order_ref == vertical.order_ref]
    world.book.record_fills(told + told)
    # 3. fills while V6 is disconnected
    exchange.faults.delay_fills_s = 30
    late = world.v6_single(pool[5], 1)
    await broker.place_order(late)
    exchange.faults.delay_fills_s = 0
    gateway.drop_connections()
    gateway.advance(timedelta(minutes=1))  # the order fills with nobody listening
    await broker.wait_connected(timeout=10)
    # 4. a trade made in TWS, 5. an early assignment of the short put
    world.external(pool[7], 3)
    world.assign(pool[0], 1, stock)

    result = await reconcile_over_the_wire(world, broker)

    assert kinds(result) == {"missing_fill": 2, "external_fill": 1, "assignment": 1}
    assert result.unresolved_breaks == 0 and result.urgent_breaks == 1
    assert world.book_equals(await broker.positions())
    assert world.exec_ids_unique()
    booked = set(world.book.fills().get_column("exec_id"))
    assert {e.exec_id for e in exchange.executions()} <= booked
    # the assignment put stock into the strategy that was short the put
    stock_leg = world.book.leg_positions().filter(pl.col("con_id") == stock.con_id)
    assert stock_leg.get_column("quantity").to_list() == [100]
    # a second reconciliation finds nothing
    again = await reconcile_over_the_wire(world, broker)
    assert again.breaks.is_empty() and again.fills.is_empty()


async def test_expiry_over_the_wire(
    world: SimWorld, broker: IBBroker, gateway: GatewayServer
) -> None:
    """IB at expiry: the option in the money is exercised by exception (stock at the
    strike appears, no execution), the one out of the money just disappears. A long put
    and a long call at one strike: exactly one of each outcome."""
    put, call = world.pool[0], world.pool[1]  # nearest weekly expiry, one strike
    assert (put.strike, put.expiry) == (call.strike, call.expiry)
    for leg in (put, call):
        order = world.v6_single(leg, 1)
        await broker.place_order(order)
        await broker.current_time()
        world.book.record_fills(
            [e for e in broker.execution_journal() if e.order_ref == order.order_ref]
        )
    assert (await reconcile_over_the_wire(world, broker)).breaks.is_empty()

    gateway.advance(timedelta(days=7))  # expires and settles at the close
    await broker.current_time()
    settled = {d.option.con_id: d for d in world.exchange.deliveries()}
    assert sorted(d.kind.value for d in settled.values()) == ["exercise", "expired"]
    exercised = next(d for d in settled.values() if d.kind.value == "exercise")
    result = await reconcile_over_the_wire(world, broker)

    assert kinds(result) == {"missing_position": 1, "exercise": 1}
    by_kind = {r["kind"]: r for r in result.breaks.iter_rows(named=True)}
    assert by_kind["missing_position"]["resolution"] == "closed_expired"
    closed = world.book.legs().filter(pl.col("close_reason") == "expired")
    assert closed.height == 1 and closed.row(0, named=True)["con_id"] != exercised.option.con_id
    # the exercised option's shares are in the book, as the broker holds them
    assert exercised.stock is not None
    stock_leg = world.book.leg_positions().filter(pl.col("con_id") == exercised.stock.con_id)
    assert stock_leg.get_column("quantity").to_list() == [exercised.shares]
    assert world.book_equals(await broker.positions()) and world.exec_ids_unique()
