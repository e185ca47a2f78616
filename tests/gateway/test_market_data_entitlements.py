"""Delayed data and market-data entitlements as IB answers them, through IBBroker +
ib_async over TCP: a paper account without subscriptions gets delayed ticks (type 3, the
price of 15 minutes ago) for a delayed request and 354 for a live one; entitlement errors
(10090, 10168, 10197) give quotes flagged with the reason and its fix, never zeros."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import pytest
from gateway_world import broker_settings, same

from core.broker.ib import IBBroker
from core.broker.ib.convert import DELAYED_AGE_S, to_ib_contract
from core.config import MarketDataType
from core.domain import Contract, SecType
from core.sim.exchange import SimExchange
from core.sim.gateway.server import DELAYED_BY, GatewayServer

pytestmark = pytest.mark.gateway


def an_option(ex: SimExchange) -> Contract:
    chain = ex.option_chains("SPY")[0]
    spot = ex.market.price("SPY")
    k = min(chain.strikes, key=lambda x: abs(x - spot * 0.97))
    c = ex.qualify(Contract.option("SPY", chain.expirations[3], k, "P"))
    assert c is not None
    return c


@pytest.fixture
async def paper_gateway(exchange: SimExchange) -> AsyncIterator[GatewayServer]:
    """A gateway for an account without real-time subscriptions (IB's paper default)."""
    async with GatewayServer(exchange) as gw:
        yield gw
    assert gw.protocol_errors == [], gw.protocol_errors


async def _connect(gw: GatewayServer, ex: SimExchange, md: MarketDataType) -> IBBroker:
    b = IBBroker(
        broker_settings(gw, market_data_type=md, snapshot_timeout_s=1.0),
        clock=ex.market.clock,
    )
    await b.connect()
    return b


async def test_delayed_request_gets_the_price_of_fifteen_minutes_ago(
    paper_gateway: GatewayServer, exchange: SimExchange
) -> None:
    opt = an_option(exchange)
    spy = exchange.qualify(Contract.stock("SPY"))
    assert spy is not None
    b = await _connect(paper_gateway, exchange, MarketDataType.DELAYED)
    try:
        q_opt, q_spy = await b.quotes([opt, spy])
        then = exchange.market.clock.now() - DELAYED_BY
        past_opt, past_spy = exchange.quotes([opt, spy], then)
        now_spy = exchange.quote(spy)
        assert past_spy.mid != now_spy.mid  # the market moved: the test can tell them apart
        for got, past in ((q_opt, past_opt), (q_spy, past_spy)):
            assert got.delayed and got.age_s == DELAYED_AGE_S and not got.stale
            assert not got.unavailable
            assert (got.bid, got.ask, got.last) == (past.bid, past.ask, past.last)
        assert q_opt.has_greeks  # IB computes model greeks on delayed data (tick 83)
        assert q_opt.delta == pytest.approx(past_opt.delta)
        raw = b.ib.ticker(to_ib_contract(opt))
        assert raw is not None and raw.marketDataType == 3
        await b.current_time()  # the cancels have reached the gateway
        assert paper_gateway.active_lines() == 0
    finally:
        await b.disconnect()


async def test_live_request_without_a_subscription_is_354_flagged_never_zero(
    paper_gateway: GatewayServer, exchange: SimExchange
) -> None:
    opt = an_option(exchange)
    b = await _connect(paper_gateway, exchange, MarketDataType.LIVE)
    try:
        (q,) = await b.quotes([opt])
        assert math.isnan(q.bid) and math.isnan(q.ask) and not q.has_greeks
        assert q.unavailable.startswith("IB 354") and "subscribe" in q.unavailable
        assert not q.delayed
        await b.current_time()
        assert paper_gateway.active_lines() == 0  # no line held by a refused request
    finally:
        await b.disconnect()


async def test_entitled_account_gets_live_data_for_a_delayed_request(
    gateway: GatewayServer, exchange: SimExchange
) -> None:
    spy = exchange.qualify(Contract.stock("SPY"))
    assert spy is not None
    b = await _connect(gateway, exchange, MarketDataType.DELAYED)
    try:
        (q,) = await b.quotes([spy])
        assert same(q, exchange.quote(spy)) and not q.delayed and q.age_s == 0.0
    finally:
        await b.disconnect()


@pytest.mark.parametrize(
    ("code", "fix"),
    [(10197, "close the other session"), (10168, "enable delayed"), (354, "subscribe")],
)
async def test_entitlement_errors_flag_the_quote_with_the_fix(
    gateway: GatewayServer, exchange: SimExchange, code: int, fix: str
) -> None:
    opt = an_option(exchange)
    qqq = exchange.qualify(Contract.stock("QQQ"))
    assert qqq is not None
    gateway.entitlement_error(code, "SPY")
    b = await _connect(gateway, exchange, MarketDataType.LIVE)
    try:
        q_opt, q_qqq = await b.quotes([opt, qqq])
        assert q_opt.unavailable.startswith(f"IB {code}") and fix in q_opt.unavailable
        assert math.isnan(q_opt.bid) and math.isnan(q_opt.last) and not q_opt.has_greeks
        assert same(q_qqq, exchange.quote(qqq)) and not q_qqq.unavailable  # others unharmed
        gateway.clear_entitlement_errors()
        (again,) = await b.quotes([opt])
        assert not again.unavailable and math.isfinite(again.bid)
    finally:
        await b.disconnect()


async def test_part_of_the_data_not_subscribed_keeps_what_came(
    gateway: GatewayServer, exchange: SimExchange
) -> None:
    spy = exchange.qualify(Contract.stock("SPY"))
    assert spy is not None and spy.sec_type is SecType.STK
    gateway.entitlement_error(10090)
    b = await _connect(gateway, exchange, MarketDataType.LIVE)
    try:
        (q,) = await b.quotes([spy])
        assert q.unavailable.startswith("IB 10090") and "missing" in q.unavailable
        assert math.isnan(q.bid) and math.isnan(q.ask)  # no quote sides: never zeros
        assert q.last == exchange.quote(spy).last  # the subscription-independent tick came
    finally:
        await b.disconnect()
