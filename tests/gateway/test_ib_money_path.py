"""IB's money-path habits on the wire, seen by unmodified ib_async (issue 17): BAG-level
executions, corrections, free-text orderRefs, cancels that lose to fills, per-day
executions, late commissions, clientId linger and foreign cancels, assignment and
exercise. Random habits are off here unless a test turns one on (or forces it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from gateway_world import make_exchange
from ib_async import IB, ComboLeg, LimitOrder, MarketOrder, Order, Trade
from ib_async import Contract as IBContract
from sim_orders import option, spread

from core.config import SimSettings
from core.domain import Contract
from core.sim.exchange import SimExchange, corrected_exec_id
from core.sim.gateway.requests import BAG_CON_ID
from core.sim.gateway.server import GatewayServer

pytestmark = pytest.mark.gateway

QUIET = SimSettings(
    correction_rate=0.0, late_commission_rate=0.0, cancel_fill_rate=0.0, client_id_linger_s=5.0
)


@pytest.fixture
def exchange() -> SimExchange:
    return make_exchange(sim=QUIET)


class Wall:
    """The gateway's pacing clock, moved by hand (clientId linger runs on it)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def wall() -> Wall:
    return Wall()


@pytest.fixture
async def gateway(exchange: SimExchange, wall: Wall) -> AsyncIterator[GatewayServer]:
    async with GatewayServer(exchange, pacing_clock=wall, realtime_data=True) as gw:
        yield gw
    assert gw.protocol_errors == [], gw.protocol_errors


async def connect(gw: GatewayServer, client_id: int) -> IB:
    ib = IB()
    await ib.connectAsync("127.0.0.1", gw.port, clientId=client_id, timeout=5)
    return ib


def answers(ib: IB) -> tuple[list[int], asyncio.Event]:
    """The error codes `ib` receives from now on (farm notices aside), and an event set by
    the first one."""
    codes: list[int] = []
    first = asyncio.Event()

    def seen(req_id: int, code: int, message: str, contract: object) -> None:
        if not 2100 <= code < 2200:
            codes.append(code)
            first.set()

    ib.errorEvent += seen
    return codes, first


async def positions(ib: IB) -> dict[int, float]:
    """Held positions by conId (a closing update racing the request reads as 0)."""
    return {p.contract.conId: p.position for p in await ib.reqPositionsAsync() if p.position}


def by_id(c: Contract) -> IBContract:
    return IBContract(conId=c.con_id, exchange="SMART")


async def settled(trade: Trade, *statuses: str) -> None:
    """Wait until the trade is done (or reaches one of `statuses`)."""
    while not (trade.isDone() or trade.orderStatus.status in statuses):
        await asyncio.wait_for(trade.statusEvent, 5)


async def until(condition: asyncio.Event) -> None:
    await asyncio.wait_for(condition.wait(), 5)


async def test_a_combo_fill_reports_each_leg_and_the_bag(
    gateway: GatewayServer, exchange: SimExchange
) -> None:
    ib = await connect(gateway, 1)
    try:
        bag, short, lng = spread(exchange.market)
        combo = IBContract(
            secType="BAG",
            symbol="SPY",
            exchange="SMART",
            currency="USD",
            comboLegs=[
                ComboLeg(conId=short.con_id, ratio=1, action="SELL", exchange="SMART"),
                ComboLeg(conId=lng.con_id, ratio=1, action="BUY", exchange="SMART"),
            ],
        )
        limit = round(exchange.quote(bag).ask, 2)
        trade = ib.placeOrder(combo, LimitOrder("BUY", 2, limit, orderRef="combo"))
        await settled(trade)
        assert trade.filled() == 2  # ib_async counts the BAG execution only
        (bag_fill,) = [f for f in trade.fills if f.contract.secType == "BAG"]
        assert bag_fill.contract.conId == BAG_CON_ID
        assert bag_fill.execution.shares == 2 and bag_fill.execution.side == "BOT"
        assert bag_fill.execution.price == pytest.approx(trade.orderStatus.avgFillPrice)
        legs = {f.contract.conId: f.execution for f in trade.fills if f.contract.secType == "OPT"}
        assert {k: (e.side, e.shares) for k, e in legs.items()} == {
            short.con_id: ("SLD", 2),
            lng.con_id: ("BOT", 2),
        }
        heads = {f.execution.execId.rpartition(".")[0] for f in trade.fills}
        assert len(heads) == 3  # no two of them look like corrections of each other
        day = await ib.reqExecutionsAsync()
        assert sorted(f.contract.secType for f in day) == ["BAG", "OPT", "OPT"]
    finally:
        ib.disconnect()


async def test_a_correction_replaces_a_fill_with_the_next_exec_id(
    gateway: GatewayServer, exchange: SimExchange
) -> None:
    ib = await connect(gateway, 1)
    try:
        put = option(exchange.market, 25, 1.0, "P")
        exchange.faults.correct_next_execution = True
        trade = ib.placeOrder(by_id(put), MarketOrder("BUY", 2, orderRef="corr"))
        await settled(trade)
        wrong, right = trade.fills  # ib_async keeps both: the client must replace
        assert right.execution.execId == corrected_exec_id(wrong.execution.execId)
        assert (
            wrong.execution.execId.rpartition(".")[0] == right.execution.execId.rpartition(".")[0]
        )
        assert right.execution.shares == trade.orderStatus.filled == 2
        assert right.commissionReport.commission == pytest.approx(1.30)
        assert wrong.commissionReport.execId == ""  # the commission comes with the correction
        again = await ib.reqExecutionsAsync()
        assert [f.execution.execId for f in again] == [f.execution.execId for f in trade.fills]
    finally:
        ib.disconnect()


async def test_an_existing_order_ref_is_accepted(
    gateway: GatewayServer, exchange: SimExchange
) -> None:
    ib = await connect(gateway, 1)
    try:
        put = by_id(option(exchange.market, 25, 1.0, "P"))
        first = ib.placeOrder(put, LimitOrder("BUY", 1, 0.05, orderRef="same-ref"))
        second = ib.placeOrder(put, LimitOrder("BUY", 1, 0.05, orderRef="same-ref"))
        await settled(first, "Submitted")
        await settled(second, "Submitted")
        assert first.orderStatus.status == second.orderStatus.status == "Submitted"
        assert first.order.permId != second.order.permId
        live = await ib.reqAllOpenOrdersAsync()
        assert sorted(t.order.orderRef for t in live) == ["same-ref", "same-ref"]
    finally:
        ib.disconnect()


async def test_a_cancel_racing_a_fill_ends_filled_with_161(
    gateway: GatewayServer, exchange: SimExchange
) -> None:
    ib = await connect(gateway, 1)
    errors, answered = answers(ib)
    try:
        put = option(exchange.market, 25, 1.0, "P")
        limit = round(exchange.quote(put).bid - 0.10, 2)
        trade = ib.placeOrder(by_id(put), LimitOrder("BUY", 1, limit, orderRef="race"))
        await settled(trade, "Submitted")
        exchange.faults.fill_on_next_cancel = True
        ib.cancelOrder(trade.order)
        await settled(trade)
        await until(answered)
        assert errors == [161] and trade.orderStatus.status == "Filled"
        (fill,) = trade.fills
        assert fill.execution.price == pytest.approx(limit)
        assert await positions(ib) == {put.con_id: 1}
    finally:
        ib.disconnect()


async def test_a_partly_filled_race_confirms_cancelled_for_the_rest(
    gateway: GatewayServer, exchange: SimExchange
) -> None:
    ib = await connect(gateway, 1)
    try:
        put = option(exchange.market, 25, 1.0, "P")
        limit = round(exchange.quote(put).bid - 0.10, 2)
        outcomes: set[str] = set()
        for i in range(8):
            trade = ib.placeOrder(by_id(put), LimitOrder("BUY", 3, limit, orderRef=f"p{i}"))
            await settled(trade, "Submitted")
            exchange.faults.fill_on_next_cancel = True
            ib.cancelOrder(trade.order)
            await settled(trade)
            status = trade.orderStatus
            assert status.filled == sum(f.execution.shares for f in trade.fills) > 0
            if status.status == "Cancelled":
                assert 0 < status.filled < 3 and status.remaining == 3 - status.filled
            else:
                assert status.status == "Filled" and status.filled == 3
            outcomes.add(status.status)
        assert outcomes == {"Filled", "Cancelled"}
    finally:
        ib.disconnect()


async def test_executions_are_today_only_and_commissions_may_come_late(
    gateway: GatewayServer, exchange: SimExchange
) -> None:
    late_s = exchange.habits.late_commission_s
    ib = await connect(gateway, 1)
    reported = asyncio.Event()
    ib.commissionReportEvent += lambda *_: reported.set()
    try:
        put = option(exchange.market, 25, 1.0, "P")
        gateway.faults.late_commission_next = 1
        trade = ib.placeOrder(by_id(put), MarketOrder("BUY", 1, orderRef="late"))
        await settled(trade)
        (fill,) = trade.fills
        assert fill.commissionReport.execId == "" and not reported.is_set()
        gateway.advance(timedelta(seconds=late_s / 2))
        assert fill.commissionReport.execId == ""  # not yet
        gateway.advance(timedelta(seconds=late_s))
        await until(reported)
        assert fill.commissionReport.commission == pytest.approx(0.65)
        gateway.advance(timedelta(days=1))  # the next session
        assert await ib.reqExecutionsAsync() == []  # yesterday's are gone
        assert await positions(ib) == {put.con_id: 1}  # the position is what remains
    finally:
        ib.disconnect()


async def test_a_late_commission_arrives_after_a_reconnect(
    gateway: GatewayServer, exchange: SimExchange
) -> None:
    ib = await connect(gateway, 1)
    put = option(exchange.market, 25, 1.0, "P")
    gateway.faults.late_commission_next = 1
    trade = ib.placeOrder(by_id(put), MarketOrder("BUY", 1, orderRef="gone"))
    await settled(trade)
    assert trade.fills[0].commissionReport.execId == ""
    ib.disconnect()
    gateway.advance(timedelta(seconds=exchange.habits.late_commission_s + 1))
    again = await connect(gateway, 1)  # a clean disconnect frees the id at once
    try:
        (fill,) = again.fills()  # ib_async asks for the day's executions on connect
        assert fill.commissionReport.commission == pytest.approx(0.65)
    finally:
        again.disconnect()


async def test_a_dropped_client_id_stays_taken_for_a_while(
    gateway: GatewayServer, exchange: SimExchange, wall: Wall
) -> None:
    ib = await connect(gateway, 7)
    gone = asyncio.Event()
    ib.disconnectedEvent += gone.set
    assert gateway.drop_connections(7) == 1
    await until(gone)
    errors: list[int] = []
    retry = IB()
    retry.errorEvent += lambda req_id, code, msg, contract: errors.append(code)
    with pytest.raises(TimeoutError):  # ib_async only times out; 326 says why
        await retry.connectAsync("127.0.0.1", gateway.port, clientId=7, timeout=1)
    retry.disconnect()
    assert errors == [326]
    other = await connect(gateway, 8)  # another id is free
    other.disconnect()
    wall.t += exchange.habits.client_id_linger_s
    back = await connect(gateway, 7)
    back.disconnect()
    gateway.faults.hold_next_client_id = True  # chaos: the next connect finds a ghost
    ghost = IB()
    with pytest.raises(TimeoutError):
        await ghost.connectAsync("127.0.0.1", gateway.port, clientId=9, timeout=1)
    ghost.disconnect()
    assert not gateway.faults.hold_next_client_id


async def test_only_the_placing_client_can_cancel_an_order(
    gateway: GatewayServer, exchange: SimExchange
) -> None:
    a = await connect(gateway, 1)
    b = await connect(gateway, 2)
    errors, refused = answers(b)
    master = await connect(gateway, 0)
    try:
        put = by_id(option(exchange.market, 25, 1.0, "P"))
        mine = a.placeOrder(put, LimitOrder("BUY", 1, 0.05, orderRef="a-1"))
        theirs = a.placeOrder(put, LimitOrder("BUY", 1, 0.05, orderRef="a-2"))
        await settled(theirs, "Submitted")
        b.cancelOrder(Order(orderId=mine.order.orderId, clientId=2))
        await until(refused)
        assert errors == [10147]  # B's orderId space has no such order
        assert {o.order_ref for o in exchange.open_orders()} == {"a-1", "a-2"}
        master.cancelOrder(Order(orderId=mine.order.orderId, clientId=0))
        await settled(mine)
        b.reqGlobalCancel()
        await settled(theirs)
        assert exchange.open_orders() == []
    finally:
        for ib in (a, b, master):
            ib.disconnect()


async def test_assignment_and_exercise_show_as_position_changes_only(
    gateway: GatewayServer, exchange: SimExchange
) -> None:
    ib = await connect(gateway, 1)
    try:
        m = exchange.market
        put = option(m, 25, 1.0, "P")
        expiry = m.expirations("SPY")[0]
        call = m.qualify(Contract.option("SPY", expiry, round(m.price("SPY")) - 10, "C"))
        spy = m.qualify(Contract.stock("SPY"))
        assert call is not None and spy is not None and put.strike is not None
        sold = ib.placeOrder(by_id(put), MarketOrder("SELL", 1, orderRef="short-put"))
        bought = ib.placeOrder(by_id(call), MarketOrder("BUY", 1, orderRef="long-call"))
        await settled(sold)
        await settled(bought)
        exchange.faults.assign_next = True
        gateway.advance(timedelta(minutes=1))
        assert await positions(ib) == {call.con_id: 1, spy.con_id: 100}  # the put: stock
        assert exchange.positions()[0].avg_cost == put.strike  # bought at the strike
        refs = [f.execution.orderRef for f in await ib.reqExecutionsAsync()]
        assert sorted(refs) == ["long-call", "short-put"]  # no execution for the assignment
        gateway.advance(m.calendar.rth_close(expiry) + timedelta(minutes=5) - gateway.now)
        assert await positions(ib) == {spy.con_id: 200}  # exercised by exception: +100
        assert await ib.reqExecutionsAsync() == []  # nothing traded today
    finally:
        ib.disconnect()
