"""SimBroker: the Broker protocol over a SimExchange, connection faults included."""

from __future__ import annotations

import math
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from core.broker.base import Broker, BrokerError, ErrorClass
from core.broker.sim import SimBroker
from core.clock import SimClock
from core.config import Settings
from core.domain import Action, Contract, OrderRequest, OrderStatus, OrderType
from core.domain.regimes import Regime
from core.runtime import Runtime
from core.sim import MarketSimulator, RegimeSchedule, SimExchange
from core.sim.exchange import default_clock
from core.store.delta import DeltaStore

START = datetime(2026, 3, 2, 14, 31, tzinfo=UTC)  # 09:31 ET


@pytest.fixture
def clock() -> SimClock:
    return SimClock(START)


@pytest.fixture
async def broker(clock: SimClock) -> SimBroker:
    market = MarketSimulator(clock, history_sessions=2, regimes=RegimeSchedule.fixed("calm"))
    b = SimBroker(SimExchange(market))
    await b.connect()
    return b


async def _atm_put(b: SimBroker) -> Contract:
    (chain,) = await b.option_chain("SPY")
    expiry = next(e for e in chain.expirations if (e - START.date()).days >= 25)
    spot = (await b.quotes([Contract.stock("SPY")]))[0].last
    (c,) = await b.qualify([Contract.option("SPY", expiry, round(spot), "P")])
    assert c is not None
    return c


async def test_implements_the_protocol_and_refuses_calls_while_disconnected(
    broker: SimBroker,
) -> None:
    assert isinstance(broker, Broker) and broker.is_connected
    assert await broker.current_time() == START
    await broker.disconnect()
    assert not broker.is_connected
    for call in (broker.positions(), broker.account_summary(), broker.open_orders()):
        with pytest.raises(BrokerError) as err:
            await call
        assert err.value.kind is ErrorClass.CONNECTIVITY
    broker.connect_failures = 1
    with pytest.raises(BrokerError, match="simulated connect failure"):
        await broker.connect()
    await broker.connect()
    assert await broker.positions() == []
    broker.drop_connection()
    with pytest.raises(BrokerError) as err:
        await broker.executions()
    assert err.value.kind is ErrorClass.CONNECTIVITY and err.value.code == 504


async def test_place_order_is_idempotent_on_order_ref(broker: SimBroker) -> None:
    put = await _atm_put(broker)
    (q,) = await broker.quotes([put])
    order = OrderRequest(put, Action.BUY, 1, limit_price=q.ask, order_ref="v6-entry-1")
    first = await broker.place_order(order)
    assert first.status is OrderStatus.FILLED
    assert await broker.place_order(order) == first
    assert await broker.find_order("v6-entry-1") == first
    fills = await broker.executions()
    assert len(fills) == 1 and fills[0].order_ref == "v6-entry-1"
    assert await broker.executions(since=START + timedelta(seconds=1)) == []
    (pos,) = await broker.positions()
    assert pos.quantity == 1 and pos.contract.con_id == put.con_id


async def test_quotes_keep_order_and_flag_unknown_stale_and_nan(broker: SimBroker) -> None:
    put = await _atm_put(broker)
    unknown = Contract.option("SPY", date(2026, 3, 4), 500, "P")
    quotes = await broker.quotes([put, unknown, Contract.index("VIX")])
    assert quotes[0].contract == put and quotes[0].has_greeks
    assert quotes[1].contract == unknown and math.isnan(quotes[1].bid) and not quotes[1].has_greeks
    assert quotes[2].last > 0
    broker.exchange.faults.stale_quotes = True
    broker.exchange.faults.nan_greeks = True
    (q,) = await broker.quotes([put])
    assert q.stale and not q.has_greeks


async def test_resting_orders_fill_when_the_clock_moves() -> None:
    pre = SimClock(START - timedelta(hours=2))
    b = SimBroker(SimExchange(MarketSimulator(pre, history_sessions=2)))
    await b.connect()
    order = OrderRequest(Contract.stock("SPY"), Action.BUY, 5, OrderType.MKT, order_ref="pre-open")
    st = await b.place_order(order)
    assert st.status is OrderStatus.PENDING and len(await b.open_orders()) == 1
    pre.set(START)
    assert (await b.open_orders()) == []  # the broker pumped the exchange
    assert (await b.find_order("pre-open")).status is OrderStatus.FILLED  # type: ignore[union-attr]


async def test_errors_are_classified(broker: SimBroker) -> None:
    unknown = Contract.option("SPY", date(2026, 3, 4), 500, "P")
    with pytest.raises(BrokerError) as err:
        await broker.historical_bars(unknown, end=START, duration=timedelta(hours=1))
    assert err.value.kind is ErrorClass.DATA and err.value.code == 200
    with pytest.raises(BrokerError) as err:
        await broker.historical_bars(
            Contract.stock("SPY"), end=START, duration=timedelta(hours=1), bar_size="3 weeks"
        )
    assert err.value.kind is ErrorClass.DATA and "bar_size" in str(err.value)
    with pytest.raises(BrokerError) as err:
        await broker.cancel_order(12345)
    assert err.value.kind is ErrorClass.REJECTION and err.value.code == 10147
    with pytest.raises(BrokerError) as err:
        await broker.what_if(OrderRequest(unknown, Action.BUY, 1, limit_price=1.0, order_ref="w"))
    assert err.value.kind is ErrorClass.REJECTION
    rejected = await broker.place_order(
        OrderRequest(unknown, Action.BUY, 1, limit_price=1.0, order_ref="bad")
    )
    assert rejected.status is OrderStatus.REJECTED and "No security definition" in rejected.message


async def test_what_if_bars_chain_and_account(broker: SimBroker) -> None:
    put = await _atm_put(broker)
    margin = await broker.what_if(OrderRequest(put, Action.BUY, 1, limit_price=3.0, order_ref="w"))
    assert margin == pytest.approx(300.0)
    bars = await broker.historical_bars(
        Contract.stock("SPY"), end=START, duration=timedelta(days=5), bar_size="1 day"
    )
    assert len(bars) == 2 and bars[-1].time.date() == date(2026, 2, 27)
    acct = await broker.account_summary()
    assert acct.net_liquidation == 100_000 and acct.account == "DU1234567"


async def test_from_settings_builds_a_world_at_the_configured_start() -> None:
    settings = Settings(sim={"seed": 3, "start": "2026-04-03", "net_liquidation": 50_000})
    b = SimBroker.from_settings(settings)
    await b.connect()
    # Good Friday is not a session: the world opens on Monday 2026-04-06 at 09:30 ET
    assert await b.current_time() == datetime(2026, 4, 6, 13, 30, tzinfo=UTC)
    assert (await b.account_summary()).net_liquidation == 50_000
    assert b.market.seed == 3 and b.market.lead_minutes == 2
    clock = SimClock(datetime(2026, 4, 6, 14, 0, tzinfo=UTC))
    b2 = SimBroker.from_settings(settings, clock)
    assert b2.clock is clock


def test_regime_schedule_comes_from_settings() -> None:
    settings = Settings(sim={"default_regime": "calm", "regimes": {"2026-03-04": "crash"}})
    market = SimBroker.from_settings(settings).market
    assert market.regime_on(date(2026, 3, 4)) is Regime.CRASH
    assert market.regime_on(date(2026, 3, 5)) is Regime.CALM
    assert market.regime is Regime.CALM


async def test_the_default_sim_broker_is_one_world_with_run_unique_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every flow run's connection reaches the runtime's one world, and a new process (a
    new runtime) numbers orders apart, so its execIds never repeat an earlier run's."""

    def runtime() -> Runtime:
        settings = Settings()
        return Runtime(settings, DeltaStore(tmp_path), clock=default_clock(settings))

    rt = runtime()
    first, second = rt.new_broker(), rt.new_broker()
    assert isinstance(first, SimBroker) and isinstance(second, SimBroker)
    assert first is not second and first.exchange is second.exchange
    await first.connect()
    put = await _atm_put(first)
    state = await first.place_order(OrderRequest(put, Action.BUY, 1, OrderType.MKT, order_ref="a"))
    await second.connect()
    assert await second.find_order("a") == state  # the same world through a new connection
    (ex1,) = await second.executions()
    later_ns = time.time_ns() + 60 * 10**9  # the next process starts a minute later
    monkeypatch.setattr(time, "time_ns", lambda: later_ns)
    later = runtime().new_broker()
    assert isinstance(later, SimBroker)
    await later.connect()
    again = await later.place_order(OrderRequest(put, Action.BUY, 1, OrderType.MKT, order_ref="a"))
    (ex2,) = await later.executions()
    assert again.order_id != state.order_id and ex2.exec_id != ex1.exec_id
