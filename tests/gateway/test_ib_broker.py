"""IBBroker + unmodified ib_async against the gateway simulator: behaviour and faults."""

from __future__ import annotations

import asyncio
import logging
import math
from datetime import timedelta

import pytest
from gateway_world import broker_settings, make_exchange, put_spread, same

from core.broker import BrokerError, ErrorClass
from core.broker.ib import IBBroker, LiveTradingRefusedError
from core.broker.ib import connection as ib_connection
from core.broker.ib.convert import classify_error, to_ib_contract
from core.config import BrokerSettings, MarketDataType
from core.domain import (
    Action,
    Contract,
    Execution,
    OrderRequest,
    OrderStatus,
    OrderType,
)
from core.sim.exchange import SimExchange
from core.sim.gateway.client import simulator_broker_settings
from core.sim.gateway.faults import HistoricalPacing
from core.sim.gateway.server import GatewayServer

pytestmark = pytest.mark.gateway
MKT = OrderType.MKT


def orders_with_ref(ex: SimExchange, ref: str) -> int:
    return sum(1 for s in ex.open_orders() + ex.completed_orders() if s.order_ref == ref)


# --------------------------------------------------------------------------- plain behaviour
async def test_read_only_calls_match_the_exchange(
    broker: IBBroker, exchange: SimExchange, caplog: pytest.LogCaptureFixture
) -> None:
    assert broker.is_connected and broker.client_id == 100
    assert await broker.current_time() == exchange.market.clock.now()
    spy, nope = await broker.qualify([Contract.stock("SPY"), Contract.stock("NOPE")])
    assert spy == exchange.qualify(Contract.stock("SPY")) and nope is None
    assert await broker.option_chain("SPY") == exchange.option_chains("SPY")
    assert await broker.option_chain("NOPE") == []
    end = exchange.market.clock.now()
    for size, dur in (("1 min", timedelta(minutes=20)), ("5 mins", timedelta(hours=1))):
        got = await broker.historical_bars(spy, end=end, duration=dur, bar_size=size)
        assert got and got == exchange.bars(spy, end=end, duration=dur, bar_size=size)
    assert await broker.account_summary() == exchange.account_summary()
    assert await broker.positions() == [] and await broker.open_orders() == []


async def test_quotes_match_the_exchange_for_stock_option_and_combo(
    broker: IBBroker, exchange: SimExchange, gateway: GatewayServer
) -> None:
    short, _, bag = put_spread(exchange)
    spy = exchange.qualify(Contract.stock("SPY"))
    assert spy is not None
    got = await broker.quotes([spy, short, bag, short])
    want = exchange.quotes([spy, short, bag, short])
    assert all(same(g, w) for g, w in zip(got, want, strict=True))
    assert got[1].has_greeks and not math.isnan(got[1].underlying_price)
    assert math.isnan(got[2].iv) and not math.isnan(got[2].delta)  # combos: net greeks only
    await broker.current_time()  # a round trip: the cancels have been processed
    assert gateway.active_lines() == 0  # every stream was cancelled


async def test_place_fill_cancel_positions_executions(
    broker: IBBroker, exchange: SimExchange, caplog: pytest.LogCaptureFixture
) -> None:
    short, _, bag = put_spread(exchange)
    t0 = exchange.market.clock.now()
    credit = OrderRequest(bag, Action.BUY, 2, OrderType.LMT, limit_price=-0.05, order_ref="pcs-1")
    filled = await broker.place_order(credit)
    assert filled.status is OrderStatus.FILLED and filled.filled == 2
    theirs = exchange.find_order("pcs-1")
    assert theirs is not None
    assert (filled.perm_id, filled.avg_fill_price, filled.contract) == (
        theirs.perm_id,
        theirs.avg_fill_price,
        theirs.contract,
    )
    assert await broker.positions() == exchange.positions()
    execs = await broker.executions(since=t0)
    assert [e.exec_id for e in execs] == [e.exec_id for e in exchange.executions(t0)]
    assert all(e.commission == 1.3 and e.order_ref == "pcs-1" for e in execs)
    assert await broker.account_summary() == exchange.account_summary()

    resting = OrderRequest(short, Action.BUY, 1, OrderType.LMT, limit_price=0.05, order_ref="low-1")
    working = await broker.place_order(resting)
    assert working.status is OrderStatus.SUBMITTED
    assert [o.order_ref for o in await broker.open_orders()] == ["low-1"]
    with caplog.at_level(logging.INFO, logger="ib_async.wrapper"):
        cancelled = await broker.cancel_order(working.order_id)
    assert cancelled.status is OrderStatus.CANCELLED
    assert cancelled.message == exchange.find_order("low-1").message  # type: ignore[union-attr]
    # the cancel V6 asked for is confirmed by a 202, which is not an error
    confirms = [r for r in caplog.records if r.getMessage().startswith("Error 202,")]
    assert confirms and all(r.levelno == logging.INFO for r in confirms)
    assert await broker.open_orders() == []
    assert (await broker.find_order("low-1")).status is OrderStatus.CANCELLED  # type: ignore[union-attr]
    assert await broker.find_order("never-placed") is None


async def test_same_ref_is_placed_once(broker: IBBroker, exchange: SimExchange) -> None:
    short, _, _ = put_spread(exchange)
    order = OrderRequest(short, Action.SELL, 1, OrderType.MKT, order_ref="once")
    first = await broker.place_order(order)
    again = await broker.place_order(order)
    assert first.status is OrderStatus.FILLED and again.perm_id == first.perm_id
    assert orders_with_ref(exchange, "once") == 1


async def test_rejection_and_what_if(
    broker: IBBroker, exchange: SimExchange, gateway: GatewayServer
) -> None:
    short, _, bag = put_spread(exchange)
    gateway.reject_next_order()
    state = await broker.place_order(
        OrderRequest(short, Action.BUY, 1, OrderType.MKT, order_ref="rj")
    )
    assert state.status is OrderStatus.REJECTED and state.message.startswith("[201]")
    assert state.message == exchange.find_order("rj").message  # type: ignore[union-attr]
    assert classify_error(201) is ErrorClass.REJECTION
    order = OrderRequest(bag, Action.BUY, 1, OrderType.LMT, limit_price=-0.5, order_ref="wi")
    assert await broker.what_if(order) == exchange.what_if(order)
    assert exchange.find_order("wi") is None  # a margin check places nothing


async def test_partial_then_complete_fill(
    broker: IBBroker, exchange: SimExchange, gateway: GatewayServer
) -> None:
    _, long, _ = put_spread(exchange)
    gateway.partial_fill_next(1)
    state = await broker.place_order(OrderRequest(long, Action.BUY, 3, MKT, order_ref="pf"))
    assert (state.status, state.filled) == (OrderStatus.SUBMITTED, 1)
    gateway.advance(timedelta(seconds=exchange.faults.partial_hold_s + 1))
    done = await broker.find_order("pf")
    assert done is not None and (done.status, done.filled) == (OrderStatus.FILLED, 3)


# --------------------------------------------------------------------------- faults
async def test_no_order_placed_twice_across_a_disconnect(
    broker: IBBroker, exchange: SimExchange, gateway: GatewayServer
) -> None:
    short, _, _ = put_spread(exchange)
    order = OrderRequest(short, Action.SELL, 1, OrderType.MKT, order_ref="drop-1")
    gateway.drop_on_next_order()  # the order reaches the exchange, the ack never comes
    state = await broker.place_order(order)
    assert broker.reconnects == 1 and broker.is_connected
    assert state.order_ref == "drop-1" and state.status is OrderStatus.FILLED
    retry = await broker.place_order(order)  # the caller retries too: still one order
    assert retry.perm_id == state.perm_id
    assert orders_with_ref(exchange, "drop-1") == 1
    assert len([e for e in exchange.executions() if e.order_ref == "drop-1"]) == 1


async def test_fills_during_a_disconnect_are_recovered(
    broker: IBBroker,
    exchange: SimExchange,
    gateway: GatewayServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ib_connection, "CLIENT_ID_RECLAIM_S", 0.0)  # any id will do here
    short, long, _ = put_spread(exchange)
    seen: list[Execution] = []
    late_fill: asyncio.Future[Execution] = asyncio.get_running_loop().create_future()

    def on_execution(e: Execution) -> None:
        seen.append(e)
        if e.order_ref == "b" and not late_fill.done():
            late_fill.set_result(e)

    broker.add_execution_listener(on_execution)
    first = await broker.place_order(OrderRequest(long, Action.BUY, 1, MKT, order_ref="a"))
    assert first.status is OrderStatus.FILLED and len(seen) == 1
    gateway.advance(timedelta(seconds=5))
    gateway.delay_fills(30)
    late = await broker.place_order(OrderRequest(short, Action.SELL, 1, MKT, order_ref="b"))
    assert late.status is OrderStatus.SUBMITTED
    assert gateway.drop_connections() == 1
    gateway.advance(timedelta(seconds=31))  # fills while nobody listens
    assert exchange.find_order("b").status is OrderStatus.FILLED  # type: ignore[union-attr]
    recovered = await asyncio.wait_for(late_fill, 5)  # via reconnect + executions since
    assert broker.reconnects == 1 and broker.is_connected
    assert recovered.time > seen[0].time and recovered.commission == 0.65
    assert [e.order_ref for e in seen] == ["a", "b"]
    assert [e.order_ref for e in broker.execution_journal()] == ["a", "b"]
    assert (await broker.find_order("b")).status is OrderStatus.FILLED  # type: ignore[union-attr]


async def test_client_id_in_use_moves_to_the_next(
    gateway: GatewayServer, exchange: SimExchange
) -> None:
    gateway.claim_client_id(100, 101)
    a = IBBroker(broker_settings(gateway), clock=exchange.market.clock)
    b = IBBroker(broker_settings(gateway), clock=exchange.market.clock)
    await asyncio.gather(a.connect(), b.connect())
    try:
        assert {a.client_id, b.client_id} == {102, 103}
        assert sorted(gateway.client_ids()) == [102, 103]
        assert len(await a.positions()) == len(await b.positions()) == 0
    finally:
        await a.disconnect()
        await b.disconnect()
    gateway.claim_client_id(*range(100, 110))
    c = IBBroker(broker_settings(gateway), clock=exchange.market.clock)
    with pytest.raises(BrokerError) as info:
        await c.connect()
    assert (info.value.kind, info.value.code) == (ErrorClass.CONNECTIVITY, 326)


async def test_market_data_lines_exhausted_is_capacity(exchange: SimExchange) -> None:
    short, long, bag = put_spread(exchange)
    async with GatewayServer(exchange, market_data_lines=2, realtime_data=True) as gw:
        b = IBBroker(broker_settings(gw), clock=exchange.market.clock)
        await b.connect()
        try:
            with pytest.raises(BrokerError) as info:
                await b.quotes([short, long, bag])
            assert (info.value.kind, info.value.code) == (ErrorClass.CAPACITY, 101)
            await b.current_time()  # a round trip: the cancels have been processed
            assert gw.active_lines() == 0  # the streams that did open were cancelled
            assert len(await b.quotes([short, long])) == 2
        finally:
            await b.disconnect()
        assert gw.protocol_errors == []


async def test_nan_and_stale_greeks_are_flagged(
    broker: IBBroker, exchange: SimExchange, gateway: GatewayServer
) -> None:
    short, _, bag = put_spread(exchange)
    gateway.nan_greeks()
    q, combo = await broker.quotes([short, bag])
    assert not q.has_greeks and math.isnan(q.vega) and math.isnan(q.theta)
    assert not math.isnan(q.bid) and not math.isnan(q.underlying_price)
    assert math.isnan(combo.delta)
    raw = broker.ib.ticker(to_ib_contract(short))  # what ib_async itself kept
    assert raw is not None and raw.modelGreeks is not None
    assert raw.modelGreeks.delta is None and raw.modelGreeks.vega == -2.0  # IB's sentinel
    gateway.nan_greeks(False)
    gateway.stale_quotes()
    (stale,) = await broker.quotes([short])
    assert stale.stale and stale.has_greeks


async def test_entitled_delayed_request_is_live_and_snapshot_timeout(exchange: SimExchange) -> None:
    short, _, _ = put_spread(exchange)
    async with GatewayServer(exchange, realtime_data=True) as gw:
        settings = broker_settings(
            gw, market_data_type=MarketDataType.DELAYED, snapshot_timeout_s=0.3
        )
        b = IBBroker(settings, clock=exchange.market.clock)
        await b.connect()
        try:
            (q,) = await b.quotes([short])
            assert same(q, exchange.quote(short)) and not q.stale and not q.delayed
            raw = b.ib.ticker(to_ib_contract(short))
            # an account with real-time subscriptions gets live data for a delayed request
            assert raw is not None and raw.marketDataType == 1
            gw.silence_market_data()
            loop = asyncio.get_running_loop()
            started = loop.time()
            (silent,) = await b.quotes([short])  # never hangs: NaN after the timeout
            assert 0.3 <= loop.time() - started < 2.0
            assert math.isnan(silent.bid) and not silent.has_greeks
            await b.current_time()
            assert gw.active_lines() == 0  # the silent stream was cancelled too
        finally:
            await b.disconnect()


async def test_reconnect_gives_up_with_a_connectivity_error(
    exchange: SimExchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ib_connection, "CLIENT_ID_RECLAIM_S", 0.0)  # no wait for our own id
    async with GatewayServer(exchange, realtime_data=True) as gw:
        settings = broker_settings(gw, reconnect_max_attempts=2, client_id_max=101)
        b = IBBroker(settings, clock=exchange.market.clock)
        await b.connect()
        try:
            gw.claim_client_id(100, 101)  # nobody may come back
            gw.drop_connections()
            with pytest.raises(BrokerError) as lost:  # the request in flight, or the retry
                await b.positions()
            assert lost.value.kind is ErrorClass.CONNECTIVITY
            with pytest.raises(BrokerError, match="gave up reconnecting") as info:
                await b.wait_connected(5)
            assert info.value.kind is ErrorClass.CONNECTIVITY and not b.is_connected
        finally:
            await b.disconnect()


async def test_pacing_violation_is_a_data_error(exchange: SimExchange) -> None:
    spy = exchange.qualify(Contract.stock("SPY"))
    assert spy is not None
    end = exchange.market.clock.now()
    pacing = HistoricalPacing(same_contract_max=2, same_contract_window_s=60)
    async with GatewayServer(exchange, pacing=pacing, realtime_data=True) as gw:
        b = IBBroker(broker_settings(gw), clock=exchange.market.clock)
        await b.connect()
        try:
            gw.force_pacing_violation()
            with pytest.raises(BrokerError) as forced:
                await b.historical_bars(spy, end=end, duration=timedelta(minutes=5))
            assert (forced.value.kind, forced.value.code) == (ErrorClass.DATA, 162)
            for _ in range(2):
                await b.historical_bars(spy, end=end, duration=timedelta(minutes=5))
            with pytest.raises(BrokerError, match="pacing") as paced:
                await b.historical_bars(spy, end=end, duration=timedelta(minutes=5))
            assert paced.value.kind is ErrorClass.DATA
        finally:
            await b.disconnect()
    assert classify_error(420) is ErrorClass.DATA


async def test_duplicate_execution_is_reported_once(
    broker: IBBroker, exchange: SimExchange, gateway: GatewayServer
) -> None:
    short, _, _ = put_spread(exchange)
    gateway.duplicate_next_execution()
    await broker.place_order(OrderRequest(short, Action.SELL, 1, OrderType.MKT, order_ref="dup"))
    execs = await broker.executions()
    assert [e.order_ref for e in execs] == ["dup"]
    assert [e.order_ref for e in broker.execution_journal()] == ["dup"]


async def test_connectivity_notices_keep_the_session(
    broker: IBBroker, gateway: GatewayServer
) -> None:
    gateway.connectivity_lost()
    gateway.connectivity_restored(data_kept=False)
    gateway.connectivity_restored(data_kept=True)
    assert broker.is_connected and await broker.positions() == []
    assert classify_error(1100) is ErrorClass.CONNECTIVITY
    assert classify_error(1101) is ErrorClass.WARNING and classify_error(2104) is ErrorClass.WARNING


# --------------------------------------------------------------------------- live guard
async def test_live_trading_is_refused_without_opt_in(gateway: GatewayServer) -> None:
    with pytest.raises(LiveTradingRefusedError, match="4001"):
        IBBroker(broker_settings(gateway, port=4001))
    with pytest.raises(LiveTradingRefusedError, match="paper = false"):
        IBBroker(broker_settings(gateway, paper=False))
    IBBroker(broker_settings(gateway, paper=False, live_trading_enabled=True))


async def test_non_paper_account_is_refused_after_connect(caplog: pytest.LogCaptureFixture) -> None:
    ex = make_exchange(broker={"account": "U7654321"})
    caplog.set_level(logging.DEBUG)
    async with GatewayServer(ex, realtime_data=True) as gw:
        b = IBBroker(broker_settings(gw), clock=ex.market.clock)
        with pytest.raises(LiveTradingRefusedError, match="not a paper account"):
            await b.connect()
        assert not b.is_connected
        ok = IBBroker(broker_settings(gw, live_trading_enabled=True), clock=ex.market.clock)
        await ok.connect()
        assert ok.account == "U7654321"
        await ok.disconnect()
    assert not any("7654321" in r.getMessage() for r in caplog.records)
    assert any("*****321" in r.getMessage() for r in caplog.records)


def test_client_side_pacing_follows_the_setting(gateway: GatewayServer) -> None:
    """ib_async paces at the configured rate; the simulator settings turn it off."""
    paced = IBBroker(broker_settings(gateway))
    assert paced.ib.client.MaxRequests == BrokerSettings().max_messages_per_s == 45
    sim = simulator_broker_settings(BrokerSettings(), gateway.port)
    assert IBBroker(sim).ib.client.MaxRequests == 0
    assert (sim.host, sim.port, sim.paper, sim.is_live) == ("127.0.0.1", gateway.port, True, False)
