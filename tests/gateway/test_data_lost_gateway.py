"""IB 1101 ("connectivity restored - data lost") and 1102 ("data maintained") through
IBBroker + ib_async over TCP. The simulator really drops every subscription on 1101, so
only a re-request brings the account summary and the market-data lines back."""

from __future__ import annotations

import asyncio

import pytest

from core.broker.ib import IBBroker
from core.domain import Action, Contract, OrderRequest, OrderType
from core.sim.exchange import SimExchange
from core.sim.gateway.server import GatewayServer

pytestmark = pytest.mark.gateway


def buy_spy(ex: SimExchange, ref: str) -> None:
    """An order placed by someone else (the exchange directly): cash and net liq move."""
    spy = ex.qualify(Contract.stock("SPY"))
    assert spy is not None
    ex.place_order(OrderRequest(spy, Action.BUY, 100, OrderType.MKT, order_ref=ref))


async def test_1101_requests_the_account_summary_again(
    broker: IBBroker, gateway: GatewayServer, exchange: SimExchange
) -> None:
    before = await broker.account_summary()
    subscribed = gateway.request_counts["reqAccountSummary"]
    gateway.connectivity_lost()
    gateway.connectivity_restored(data_kept=False)  # IB dropped the subscription
    await broker.current_time()  # the 1101 has arrived
    assert broker.data_lost == 1
    buy_spy(exchange, "ext:1")
    truth = exchange.account_summary()
    assert truth.net_liquidation != before.net_liquidation  # commission paid
    after = await broker.account_summary()
    assert after.net_liquidation == truth.net_liquidation  # not frozen at `before`
    assert gateway.request_counts["reqAccountSummary"] == subscribed + 1


async def test_1102_keeps_the_subscription(
    broker: IBBroker, gateway: GatewayServer, exchange: SimExchange
) -> None:
    await broker.account_summary()
    subscribed = gateway.request_counts["reqAccountSummary"]
    gateway.connectivity_lost()
    gateway.connectivity_restored(data_kept=True)
    await broker.current_time()
    buy_spy(exchange, "ext:2")
    after = await broker.account_summary()
    assert after.net_liquidation == exchange.account_summary().net_liquidation
    # ib_async itself subscribes once more on 1102 (IB._onError); V6 adds nothing
    assert gateway.request_counts["reqAccountSummary"] == subscribed + 1
    assert broker.data_lost == 0


async def test_a_quote_in_flight_requests_its_line_again_after_1101(
    broker: IBBroker, gateway: GatewayServer, exchange: SimExchange
) -> None:
    spy = exchange.qualify(Contract.stock("SPY"))
    assert spy is not None
    gateway.silence_market_data()  # the line is taken, no tick comes yet
    task = asyncio.create_task(broker.quotes([spy]))
    async with asyncio.timeout(5):
        while gateway.active_lines() == 0:  # yield until the request has arrived
            await asyncio.sleep(0)
    gateway.silence_market_data(False)
    gateway.connectivity_restored(data_kept=False)  # the line is gone, nothing will tick
    assert gateway.active_lines() == 0
    (q,) = await task
    assert q.bid == exchange.quote(spy).bid and not q.unavailable  # the re-request answered
    assert gateway.request_counts["reqMktData"] == 2
    await broker.current_time()  # the cancel has reached the gateway
    assert gateway.active_lines() == 0  # and it was cancelled at the end
