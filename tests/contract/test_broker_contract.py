"""One contract for the `Broker` protocol, run against both implementations:

- `sim`: SimBroker in-process over a SimExchange;
- `ib`:  IBBroker + unmodified ib_async over TCP to the gateway simulator, over its own
  SimExchange built from the same settings (same seed, same clock start).

Every test states what any broker must do and checks it against the exchange behind the
broker; `test_both_brokers_tell_the_same_story` also runs one scenario on both and
compares the transcripts. Flows cannot tell the brokers apart, because these pass.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import timedelta

import pytest
from gateway_world import broker_settings, make_exchange, same

from core.broker import Broker, BrokerError, ErrorClass
from core.clock import SimClock
from core.domain import (
    Action,
    ComboLeg,
    Contract,
    Execution,
    OrderRequest,
    OrderState,
    OrderStatus,
    OrderType,
    Quote,
)
from core.sim.exchange import SimExchange

try:
    from core.broker.sim import SimBroker
except ImportError:  # pragma: no cover - only while the simulator helper is still writing it
    SimBroker = None  # type: ignore[assignment,misc]

pytestmark = pytest.mark.gateway
MKT, LMT = OrderType.MKT, OrderType.LMT


@dataclass
class World:
    kind: str
    broker: Broker
    exchange: SimExchange

    @property
    def clock(self) -> SimClock:
        clock: SimClock = self.exchange.market.clock
        return clock

    def advance(self, seconds: float) -> None:
        """Move simulated time; both brokers let the exchange catch up on their next call."""
        self.clock.advance(timedelta(seconds=seconds))


async def _world(kind: str) -> AsyncIterator[World]:
    # late commission reports are a socket habit the in-process broker has no counterpart
    # for; they are tested over the wire (tests/gateway/test_ib_broker_money_path.py)
    exchange = make_exchange(sim={"late_commission_rate": 0.0})
    if kind == "sim":
        if SimBroker is None:
            pytest.skip("core.broker.sim (SimBroker) does not exist yet")
        sim = SimBroker(exchange)
        await sim.connect()
        yield World("sim", sim, exchange)
        await sim.disconnect()
        return
    from core.broker.ib import IBBroker
    from core.sim.gateway.server import GatewayServer

    async with GatewayServer(exchange, realtime_data=True) as gw:
        ib = IBBroker(broker_settings(gw), clock=exchange.market.clock)
        await ib.connect()
        try:
            yield World("ib", ib, exchange)
        finally:
            await ib.disconnect()
        assert gw.protocol_errors == [], gw.protocol_errors


@pytest.fixture(params=["sim", "ib"])
async def world(request: pytest.FixtureRequest) -> AsyncIterator[World]:
    async for w in _world(request.param):
        yield w


def spread(ex: SimExchange) -> tuple[Contract, Contract, Contract]:
    """A listed SPY put ~5% OTM, one 5 points lower, and the (SELL, BUY) put spread."""
    chain = ex.option_chains("SPY")[0]
    expiry = chain.expirations[4]
    spot = ex.market.price("SPY")
    short_k = min(chain.strikes, key=lambda k: abs(k - spot * 0.95))
    long_k = max(k for k in chain.strikes if k <= short_k - 5)
    short = ex.qualify(Contract.option("SPY", expiry, short_k, "P"))
    long = ex.qualify(Contract.option("SPY", expiry, long_k, "P"))
    assert short is not None and long is not None
    legs = [ComboLeg(short.con_id, 1, "SELL"), ComboLeg(long.con_id, 1, "BUY")]
    return short, long, Contract.combo("SPY", legs)


def without_id(state: OrderState) -> OrderState:
    """Order ids are per client (IB) or per exchange (sim); everything else must match."""
    return replace(state, order_id=0)


def fills(executions: list[Execution]) -> list[Execution]:
    return [replace(e, order_id=0) for e in executions]


def nan_equal(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


# --------------------------------------------------------------------------- reference data
async def test_is_a_broker_and_tells_time(world: World) -> None:
    assert isinstance(world.broker, Broker)
    assert world.broker.is_connected
    assert await world.broker.current_time() == world.clock.now()


async def test_qualify(world: World) -> None:
    ex = world.exchange
    short, _, bag = spread(ex)
    bare = Contract.option("SPY", short.expiry, short.strike, "P")  # type: ignore[arg-type]
    missing = Contract.option("SPY", short.expiry, 651.37, "P")  # type: ignore[arg-type]
    got = await world.broker.qualify(
        [Contract.stock("SPY"), bare, missing, bag, Contract.index("VIX")]
    )
    assert got[0] == ex.qualify(Contract.stock("SPY"))
    assert got[1] == short and got[1].con_id > 0  # type: ignore[union-attr]
    assert got[2] is None
    assert got[3] == bag  # a combo of known legs comes back unchanged
    assert got[4] == ex.qualify(Contract.index("VIX"))


async def test_option_chain(world: World) -> None:
    assert await world.broker.option_chain("SPY") == world.exchange.option_chains("SPY")
    assert await world.broker.option_chain("NOPE") == []


# --------------------------------------------------------------------------- market data
async def test_quotes_shape_and_nan_rules(world: World) -> None:
    ex = world.exchange
    short, _, bag = spread(ex)
    spy = ex.qualify(Contract.stock("SPY"))
    vix = ex.qualify(Contract.index("VIX"))
    unknown = Contract.option("SPY", short.expiry, 651.37, "P")  # type: ignore[arg-type]
    asked = [spy, short, bag, unknown, vix, short]
    got = await world.broker.quotes(asked)  # type: ignore[arg-type]
    assert [q.contract for q in got] == asked  # in the order asked, duplicates kept
    assert all(q.time == world.clock.now() for q in got)
    want = ex.quotes([spy, short, bag, vix])  # type: ignore[list-item]
    for g, w in zip([got[0], got[1], got[2], got[4]], want, strict=True):
        assert same(g, w), (g, w)
    assert same(got[5], got[1])
    assert got[1].has_greeks and got[1].bid < got[1].ask and got[1].bid_size > 0
    assert not got[0].has_greeks and math.isnan(got[0].underlying_price)
    assert same(got[3], Quote(contract=unknown, time=world.clock.now()))  # all NaN, never 0
    assert math.isnan(got[4].bid) and got[4].last > 0  # an index has only a value
    assert await world.broker.quotes([]) == []


async def test_quote_faults_nan_and_stale(world: World) -> None:
    short, _, bag = spread(world.exchange)
    world.exchange.faults.nan_greeks = True
    q, combo = await world.broker.quotes([short, bag])
    assert not q.has_greeks and all(
        math.isnan(x) for x in (q.iv, q.delta, q.gamma, q.vega, q.theta, combo.delta)
    )
    assert q.bid > 0 and not q.stale
    world.exchange.faults.nan_greeks = False
    world.exchange.faults.stale_quotes = True
    (stale,) = await world.broker.quotes([short])
    assert stale.stale and stale.has_greeks


async def test_historical_bars(world: World) -> None:
    spy = world.exchange.qualify(Contract.stock("SPY"))
    assert spy is not None
    end = world.clock.now()
    for size, minutes in (("1 min", 15), ("5 mins", 60), ("1 hour", 120)):
        got = await world.broker.historical_bars(
            spy, end=end, duration=timedelta(minutes=minutes), bar_size=size
        )
        want = world.exchange.bars(spy, end=end, duration=timedelta(minutes=minutes), bar_size=size)
        assert got == want and all(b.time.tzinfo is not None for b in got)
    with pytest.raises(BrokerError) as bad:
        await world.broker.historical_bars(
            spy, end=end, duration=timedelta(minutes=5), bar_size="7 parsecs"
        )
    assert bad.value.kind is ErrorClass.DATA


async def test_implied_volatility_bars(world: World) -> None:
    """OPTION_IMPLIED_VOLATILITY: the same daily and minute IV bars from both brokers,
    equal to the exchange's; MIDPOINT too; a bad `what` is a ValueError before any I/O."""
    spy = Contract.stock("SPY")
    end = world.clock.now()
    for size, duration in (("1 day", timedelta(days=90)), ("1 min", timedelta(minutes=20))):
        got = await world.broker.historical_bars(
            spy, end=end, duration=duration, bar_size=size, what="OPTION_IMPLIED_VOLATILITY"
        )
        want = world.exchange.bars(
            spy, end=end, duration=duration, bar_size=size, what="OPTION_IMPLIED_VOLATILITY"
        )
        assert got == want and len(got) > 10
        assert all(0.0 < b.close < 3.0 and b.time.tzinfo is not None for b in got)
    mid = await world.broker.historical_bars(
        spy, end=end, duration=timedelta(minutes=10), what="MIDPOINT"
    )
    assert mid == world.exchange.bars(spy, end=end, duration=timedelta(minutes=10))
    with pytest.raises(ValueError, match="what='BID_ASK'"):
        await world.broker.historical_bars(
            spy, end=end, duration=timedelta(minutes=5), what="BID_ASK"
        )
    with pytest.raises(BrokerError) as bad:  # an index has no options, hence no IV
        await world.broker.historical_bars(
            Contract.index("VIX"), end=end, duration=timedelta(days=5), bar_size="1 day",
            what="OPTION_IMPLIED_VOLATILITY",
        )  # fmt: skip
    assert bad.value.kind is ErrorClass.DATA


# --------------------------------------------------------------------------- orders
async def test_place_fill_cancel(world: World) -> None:
    ex, b = world.exchange, world.broker
    _short, long, bag = spread(ex)
    credit = OrderRequest(bag, Action.BUY, 2, LMT, limit_price=-0.05, order_ref="c-fill")
    state = await b.place_order(credit)
    theirs = ex.find_order("c-fill")
    assert theirs is not None and state.status is OrderStatus.FILLED
    assert without_id(state) == without_id(theirs)
    assert state.filled == 2 and state.avg_fill_price < 0  # a credit, per combo unit

    rest = OrderRequest(long, Action.BUY, 1, LMT, limit_price=0.05, order_ref="c-rest")
    working = await b.place_order(rest)
    assert working.status is OrderStatus.SUBMITTED and working.filled == 0
    assert math.isnan(working.avg_fill_price)
    assert [without_id(o) for o in await b.open_orders()] == [without_id(working)]
    cancelled = await b.cancel_order(working.order_id)
    assert cancelled.status is OrderStatus.CANCELLED and cancelled.message.startswith("[202]")
    assert await b.open_orders() == []
    again = await b.cancel_order(working.order_id)  # a finished order comes back unchanged
    assert again.status is OrderStatus.CANCELLED
    with pytest.raises(BrokerError) as unknown:
        await b.cancel_order(987654)
    assert unknown.value.kind is ErrorClass.REJECTION


async def test_order_ref_is_idempotent(world: World) -> None:
    ex, b = world.exchange, world.broker
    _, long, _ = spread(ex)
    order = OrderRequest(long, Action.BUY, 1, MKT, order_ref="c-once")
    first = await b.place_order(order)
    second = await b.place_order(order)
    assert second == first
    assert sum(1 for o in ex.open_orders() + ex.completed_orders() if o.order_ref == "c-once") == 1
    found = await b.find_order("c-once")
    assert found is not None and without_id(found) == without_id(first)
    assert await b.find_order("c-never") is None


async def test_rejections_and_what_if(world: World) -> None:
    ex, b = world.exchange, world.broker
    short, _, bag = spread(ex)
    ex.faults.reject_next = 1
    rejected = await b.place_order(OrderRequest(short, Action.BUY, 1, MKT, order_ref="c-rej"))
    assert rejected.status is OrderStatus.REJECTED and rejected.message.startswith("[201]")
    assert without_id(rejected) == without_id(ex.find_order("c-rej"))  # type: ignore[arg-type]
    ghost = Contract.option("SPY", short.expiry, 651.37, "P")  # type: ignore[arg-type]
    unknown = await b.place_order(OrderRequest(ghost, Action.BUY, 1, MKT, order_ref="c-ghost"))
    assert unknown.status is OrderStatus.REJECTED and unknown.message.startswith("[200]")
    assert without_id(unknown) == without_id(ex.find_order("c-ghost"))  # type: ignore[arg-type]
    poor = await b.place_order(OrderRequest(short, Action.SELL, 500, MKT, order_ref="c-poor"))
    assert poor.status is OrderStatus.REJECTED and "buying power" in poor.message
    margin_check = OrderRequest(bag, Action.BUY, 1, LMT, limit_price=-0.5, order_ref="c-wi")
    assert await b.what_if(margin_check) == ex.what_if(margin_check)
    as_order = await b.place_order(replace(margin_check, what_if=True, order_ref="c-wi2"))
    assert as_order.status is OrderStatus.CANCELLED and "what-if" in as_order.message
    assert ex.find_order("c-wi") is None and ex.find_order("c-wi2") is None


async def test_positions_and_account_after_fills(world: World) -> None:
    ex, b = world.exchange, world.broker
    short, long, bag = spread(ex)
    before = await b.account_summary()
    assert before == ex.account_summary() and before.maintenance_margin == 0
    await b.place_order(OrderRequest(bag, Action.BUY, 1, LMT, limit_price=-0.05, order_ref="p1"))
    await b.place_order(OrderRequest(long, Action.BUY, 2, MKT, order_ref="p2"))
    positions = await b.positions()
    assert positions == ex.positions()
    assert {p.contract.con_id: p.quantity for p in positions} == {
        short.con_id: -1,
        long.con_id: 3,
    }
    after = await b.account_summary()
    assert after == ex.account_summary()
    assert after.maintenance_margin > 0 and after.available_funds < before.available_funds


async def test_executions_since(world: World) -> None:
    ex, b = world.exchange, world.broker
    _short, long, _ = spread(ex)
    await b.place_order(OrderRequest(long, Action.BUY, 1, MKT, order_ref="e1"))
    world.advance(10)
    t2 = world.clock.now()
    ex.faults.duplicate_next_execution = True
    await b.place_order(OrderRequest(long, Action.SELL, 1, MKT, order_ref="e2"))
    everything = await b.executions()
    assert [e.order_ref for e in everything] == ["e1", "e2"]  # the duplicate report: once
    assert fills(everything) == fills(ex.executions())
    since = await b.executions(since=t2)
    assert [e.order_ref for e in since] == ["e2"] and fills(since) == fills(ex.executions(t2))
    assert all(e.commission == 0.65 and e.time.tzinfo is not None for e in everything)


async def test_resting_orders_fill_when_time_moves(world: World) -> None:
    ex, b = world.exchange, world.broker
    _, long, _ = spread(ex)
    ex.faults.delay_fills_s = 30
    state = await b.place_order(OrderRequest(long, Action.BUY, 1, MKT, order_ref="late"))
    assert state.status is OrderStatus.SUBMITTED
    world.advance(31)
    done = await b.find_order("late")
    assert done is not None and done.status is OrderStatus.FILLED
    assert [e.order_ref for e in await b.executions()] == ["late"]


# --------------------------------------------------------------------------- both at once
async def _story(w: World) -> list[object]:
    """One trading morning; every observable result, normalised (no order ids)."""
    b, ex = w.broker, w.exchange
    short, long, bag = spread(ex)
    out: list[object] = [await b.current_time(), await b.qualify([Contract.stock("QQQ")])]
    out.append(await b.option_chain("IWM"))
    quotes = await b.quotes([short, bag])
    out.append([(q.bid, q.ask, q.last, q.delta, q.bid_size) for q in quotes])
    out.append(
        without_id(
            await b.place_order(
                OrderRequest(bag, Action.BUY, 3, LMT, limit_price=-0.05, order_ref="s1")
            )
        )
    )
    w.advance(60)
    out.append(
        without_id(await b.place_order(OrderRequest(bag, Action.SELL, 1, MKT, order_ref="s2")))
    )
    out.append(await b.positions())
    out.append(await b.account_summary())
    out.append(fills(await b.executions()))
    out.append(
        await b.historical_bars(
            long, end=w.clock.now(), duration=timedelta(minutes=30), bar_size="5 mins"
        )
    )
    return out


async def test_both_brokers_tell_the_same_story() -> None:
    if SimBroker is None:
        pytest.skip("core.broker.sim (SimBroker) does not exist yet")
    stories = []
    for kind in ("sim", "ib"):
        async for w in _world(kind):
            stories.append(await _story(w))
    sim, ib = stories
    for i, (a, b) in enumerate(zip(sim, ib, strict=True)):
        if isinstance(a, list) and a and isinstance(a[0], tuple):
            assert all(
                all(nan_equal(x, y) for x, y in zip(ra, rb, strict=True))
                for ra, rb in zip(a, b, strict=True)
            ), (i, a, b)
        else:
            assert a == b, (i, a, b)
