"""The simulator works for any ib_async program, not just IBBroker: a plain script-style
client (and two at once) using the ordinary async API."""

from __future__ import annotations

import asyncio
from datetime import UTC, timedelta

import pytest
from gateway_world import broker_settings
from ib_async import IB, LimitOrder, MarketOrder, Option, Stock

from core.config import Settings
from core.sim.exchange import SimExchange
from core.sim.gateway.server import GatewayServer, run_gateway

pytestmark = pytest.mark.gateway


async def test_plain_ib_async_script(gateway: GatewayServer, exchange: SimExchange) -> None:
    ib = IB()
    await ib.connectAsync("127.0.0.1", gateway.port, clientId=1, timeout=5)
    try:
        assert ib.managedAccounts() == ["DU1234567"]
        assert await ib.reqCurrentTimeAsync() == exchange.market.clock.now()

        spy = Stock("SPY", "SMART", "USD")
        assert await ib.qualifyContractsAsync(spy) == [spy] and spy.conId == 756733
        (chain,) = await ib.reqSecDefOptParamsAsync("SPY", "", "STK", spy.conId)
        expiry = chain.expirations[4]
        strike = min(chain.strikes, key=lambda k: abs(k - 650))
        opt = Option("SPY", expiry, strike, "P", "SMART")
        assert (await ib.qualifyContractsAsync(opt))[0] is opt and opt.conId > 0
        assert await ib.qualifyContractsAsync(Option("SPY", expiry, 651.37, "P", "SMART")) == [None]

        stock_t, opt_t = await ib.reqTickersAsync(spy, opt)  # snapshots: tickSnapshotEnd
        assert 0 < stock_t.bid < stock_t.ask and stock_t.volume > 0
        assert opt_t.modelGreeks is not None and opt_t.modelGreeks.delta < 0
        assert opt_t.modelGreeks.undPrice == stock_t.last

        bars = await ib.reqHistoricalDataAsync(spy, "", "1800 S", "1 min", "TRADES", False, 2)
        assert len(bars) == 30 and bars[-1].date.tzinfo is not None

        live = ib.reqMktData(spy)  # a stream: updates when the simulated clock moves
        await asyncio.wait_for(live.updateEvent, 5)
        first_time = exchange.market.clock.now()
        gateway.advance(timedelta(minutes=1))
        await asyncio.wait_for(live.updateEvent, 5)
        assert exchange.market.clock.now() > first_time and live.bid > 0
        ib.cancelMktData(spy)

        trade = ib.placeOrder(opt, MarketOrder("BUY", 1, orderRef="script-1"))
        await asyncio.wait_for(trade.filledEvent, 5)
        assert trade.orderStatus.status == "Filled" and trade.orderStatus.filled == 1
        assert trade.fills[0].commissionReport.commission == 0.65  # reported with the fill

        positions = await ib.reqPositionsAsync()
        assert [(p.contract.conId, p.position) for p in positions] == [(opt.conId, 1.0)]
        fills = await ib.reqExecutionsAsync()
        assert [f.execution.orderRef for f in fills] == ["script-1"]
        assert fills[0].execution.time.tzinfo == UTC

        resting = ib.placeOrder(opt, LimitOrder("BUY", 1, 0.05, orderRef="script-2"))
        await asyncio.wait_for(resting.statusEvent, 5)
        assert resting.orderStatus.status == "Submitted"
        ib.cancelOrder(resting.order)
        await asyncio.wait_for(resting.cancelledEvent, 5)
        assert resting.orderStatus.status == "Cancelled"

        margin = await ib.whatIfOrderAsync(opt, LimitOrder("BUY", 2, 1.0))
        # a long option needs no margin (Reg-T); its premium leaves equity with loan
        assert float(margin.initMarginChange) == 0.0
        assert float(margin.equityWithLoanChange) == -2 * 1.0 * 100

        summary = {v.tag: v.value for v in await ib.accountSummaryAsync()}
        assert float(summary["NetLiquidation"]) == exchange.account_summary().net_liquidation
        completed = await ib.reqCompletedOrdersAsync(False)
        assert {t.order.orderRef for t in completed} == {"script-1", "script-2"}
    finally:
        ib.disconnect()
    assert gateway.protocol_errors == [] and gateway.unsupported == []


async def test_two_clients_have_their_own_ids_and_fills(
    gateway: GatewayServer, exchange: SimExchange
) -> None:
    a, b = IB(), IB()
    await a.connectAsync("127.0.0.1", gateway.port, clientId=1, timeout=5)
    await b.connectAsync("127.0.0.1", gateway.port, clientId=2, timeout=5)
    try:
        spy_a, spy_b = Stock("SPY", "SMART", "USD"), Stock("SPY", "SMART", "USD")
        await a.qualifyContractsAsync(spy_a)
        await b.qualifyContractsAsync(spy_b)
        ta = a.placeOrder(spy_a, MarketOrder("BUY", 10, orderRef="from-a"))
        tb = b.placeOrder(spy_b, MarketOrder("BUY", 5, orderRef="from-b"))
        assert ta.order.orderId == tb.order.orderId  # each client numbers its own orders
        await asyncio.gather(
            asyncio.wait_for(ta.filledEvent, 5), asyncio.wait_for(tb.filledEvent, 5)
        )
        assert [f.execution.orderRef for f in a.fills()] == ["from-a"]
        assert [f.execution.orderRef for f in b.fills()] == ["from-b"]
        (pos,) = await b.reqPositionsAsync()
        assert pos.position == 15
        resting = a.placeOrder(spy_a, LimitOrder("BUY", 1, 1.0, orderRef="a-rest"))
        await asyncio.wait_for(resting.statusEvent, 5)
        seen_by_b = await b.reqAllOpenOrdersAsync()
        assert [t.order.orderRef for t in seen_by_b] == ["a-rest"]
        assert [t.order.clientId for t in seen_by_b] == [1]
    finally:
        a.disconnect()
        b.disconnect()


async def test_same_client_id_twice_gets_326(gateway: GatewayServer) -> None:
    first, second = IB(), IB()
    errors: list[int] = []
    second.errorEvent += lambda req_id, code, msg, contract: errors.append(code)
    await first.connectAsync("127.0.0.1", gateway.port, clientId=5, timeout=5)
    try:
        with pytest.raises(TimeoutError):  # ib_async only times out; the code tells why
            await second.connectAsync("127.0.0.1", gateway.port, clientId=5, timeout=1)
        assert 326 in errors
        assert gateway.client_ids() == [5]
    finally:
        first.disconnect()
        second.disconnect()


async def test_run_gateway_entry_point_serves_in_real_time() -> None:
    ready: asyncio.Future[GatewayServer] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_gateway("127.0.0.1", 0, Settings(), speed=60.0, tick_s=0.05, on_ready=ready.set_result)
    )
    try:
        gw = await asyncio.wait_for(ready, 10)
        ib = IB()
        settings = broker_settings(gw)
        await ib.connectAsync(settings.host, settings.port, clientId=3, timeout=5)
        try:
            t1 = await ib.reqCurrentTimeAsync()
            await asyncio.wait_for(gw.ticked.wait(), 5)
            gw.ticked.clear()
            await asyncio.wait_for(gw.ticked.wait(), 5)
            t2 = await ib.reqCurrentTimeAsync()
            assert t2 > t1  # the simulated clock moves on its own
        finally:
            ib.disconnect()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
