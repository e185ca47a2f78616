"""IBBroker reads IB's money-path habits right (issue 17), through unmodified ib_async
over the gateway simulator: BAG-level executions, corrections, late commissions, and
execution reports it cannot book (kept as breaks, never a crash)."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import timedelta

import pytest
from gateway_world import broker_settings, make_exchange
from ib_async import Contract as IBContract
from ib_async import Fill
from sim_orders import spread

from core.broker.ib import IBBroker
from core.domain import Action, OrderRequest, OrderStatus, OrderType, SecType
from core.sim.exchange import SimExchange
from core.sim.gateway.server import GatewayServer

pytestmark = pytest.mark.gateway
MKT = OrderType.MKT


@pytest.fixture
def exchange() -> SimExchange:
    """Random habits off: each test forces the one it is about."""
    return make_exchange(
        sim={"correction_rate": 0.0, "late_commission_rate": 0.0, "cancel_fill_rate": 0.0}
    )


async def test_a_combo_s_bag_execution_is_the_order_fill_and_never_a_leg(
    broker: IBBroker, exchange: SimExchange, gateway: GatewayServer
) -> None:
    bag, short, long = spread(exchange.market)
    state = await broker.place_order(OrderRequest(bag, Action.BUY, 2, MKT, order_ref="combo"))
    assert state.status is OrderStatus.FILLED and state.filled == 2
    execs = await broker.executions()
    assert sorted((e.contract.con_id, e.side, e.quantity) for e in execs) == sorted(
        [(short.con_id, Action.SELL, 2), (long.con_id, Action.BUY, 2)]
    )
    assert all(e.contract.sec_type is SecType.OPT for e in execs)
    await broker.disconnect()
    await broker.connect()  # recovering the day's executions reads the BAG one too
    assert len(broker.execution_journal()) == 2 and broker.execution_breaks() == []
    other = IBBroker(broker_settings(gateway), clock=exchange.market.clock)
    await other.connect()
    try:
        found = await other.find_order("combo")  # another client: completed orders, fills
        assert found is not None and found.status is OrderStatus.FILLED
        assert found.filled == 2 and found.quantity == 2  # units, not legs x units
        sim = exchange.find_order("combo")
        assert sim is not None and found.avg_fill_price == pytest.approx(sim.avg_fill_price)
    finally:
        await other.disconnect()


async def test_a_correction_replaces_the_fill_it_corrects(
    broker: IBBroker, exchange: SimExchange
) -> None:
    _, _, long = spread(exchange.market)
    seen = []
    broker.add_execution_listener(seen.append)
    exchange.faults.correct_next_execution = True
    state = await broker.place_order(OrderRequest(long, Action.BUY, 2, MKT, order_ref="corr"))
    assert state.filled == 2
    (booked,) = exchange.executions()
    (e,) = await broker.executions()
    assert e.exec_id == booked.exec_id and e.exec_id.endswith(".02")
    assert (e.quantity, e.price, e.commission) == (2, booked.price, booked.commission)
    assert [x.exec_id for x in broker.execution_journal()] == [booked.exec_id]
    assert seen[-1].exec_id == booked.exec_id  # listeners hear the correction
    await broker.disconnect()
    await broker.connect()  # both versions come back with the day's executions
    assert [x.exec_id for x in broker.execution_journal()] == [booked.exec_id]
    found = await broker.find_order("corr")
    assert found is not None and found.filled == 2


async def test_a_late_commission_fills_in_the_execution(
    broker: IBBroker, exchange: SimExchange, gateway: GatewayServer
) -> None:
    _, _, long = spread(exchange.market)
    seen = []
    broker.add_execution_listener(seen.append)
    gateway.faults.late_commission_next = 1
    await broker.place_order(OrderRequest(long, Action.BUY, 1, MKT, order_ref="late"))
    (e,) = await broker.executions()
    assert math.isnan(e.commission)
    gateway.advance(timedelta(seconds=exchange.habits.late_commission_s + 1))
    (e,) = await broker.executions()
    assert e.commission == pytest.approx(0.65)
    assert [x.commission for x in broker.execution_journal()] == [pytest.approx(0.65)]
    assert len(seen) == 1  # the same execution, not a second one


async def test_a_late_commission_after_a_reconnect_fills_in_the_journal(
    broker: IBBroker, exchange: SimExchange, gateway: GatewayServer
) -> None:
    _, _, long = spread(exchange.market)
    gateway.faults.late_commission_next = 1
    await broker.place_order(OrderRequest(long, Action.BUY, 1, MKT, order_ref="gone"))
    assert math.isnan(broker.execution_journal()[0].commission)
    await broker.disconnect()
    gateway.advance(timedelta(seconds=exchange.habits.late_commission_s + 1))
    await broker.connect()
    assert [x.commission for x in broker.execution_journal()] == [pytest.approx(0.65)]


async def test_reports_it_cannot_book_are_breaks_with_their_raw_fields(
    broker: IBBroker, exchange: SimExchange
) -> None:
    _, _, long = spread(exchange.market)
    await broker.place_order(OrderRequest(long, Action.BUY, 1, MKT, order_ref="ok"))
    ib = broker.ib
    (fill,) = ib.fills()
    (trade,) = ib.trades()
    # the same execId again with another quantity, and an execution of an unknown kind
    other = replace(fill.execution, shares=5.0)
    odd = replace(fill.execution, execId="ffff.0001.0101.01")
    ib.execDetailsEvent.emit(trade, Fill(fill.contract, other, fill.commissionReport, fill.time))
    weird = IBContract(secType="XYZ", conId=99, symbol="??")
    ib.execDetailsEvent.emit(trade, Fill(weird, odd, fill.commissionReport, fill.time))
    breaks = broker.execution_breaks()
    assert [b.raw["execId"] for b in breaks] == [fill.execution.execId, "ffff.0001.0101.01"]
    assert "other content" in breaks[0].reason and breaks[0].raw["shares"] == 5.0
    assert "unreadable" in breaks[1].reason and breaks[1].raw["secType"] == "XYZ"
    (e,) = await broker.executions()  # the first report stands; nothing crashed
    assert e.quantity == 1
