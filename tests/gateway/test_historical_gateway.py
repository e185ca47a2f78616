"""Historical data as IB answers it, through ib_async and IBBroker over TCP: a query
without data is error 162 "HMDS query returned no data" (never an empty answer), which
V6 reads as no bars; a pacing violation stays an error."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
from ib_async import RequestError

from core.broker import BrokerError, ErrorClass
from core.broker.ib import IBBroker
from core.broker.ib.convert import to_ib_contract
from core.domain import Contract
from core.domain.timezones import MARKET_TZ
from core.sim.exchange import SimExchange
from core.sim.gateway.server import GatewayServer

pytestmark = pytest.mark.gateway

SUNDAY_NOON = datetime(2026, 3, 1, 17, 0, tzinfo=UTC)  # no session: no bars


async def test_a_query_without_data_is_162_and_no_bars(
    broker: IBBroker, exchange: SimExchange
) -> None:
    spy = exchange.qualify(Contract.stock("SPY"))
    assert spy is not None
    assert exchange.bars(spy, end=SUNDAY_NOON, duration=timedelta(hours=1)) == []
    with pytest.raises(RequestError) as raised:  # what IB itself sends
        await broker.ib.reqHistoricalDataAsync(
            to_ib_contract(spy), SUNDAY_NOON, "3600 S", "1 min", "TRADES", False, 2, timeout=5
        )
    assert raised.value.code == 162 and "HMDS query returned no data" in raised.value.message
    got = await broker.historical_bars(spy, end=SUNDAY_NOON, duration=timedelta(hours=1))
    assert got == []  # V6: an empty window, not a failure


async def test_pacing_is_still_an_error(
    broker: IBBroker, gateway: GatewayServer, exchange: SimExchange
) -> None:
    spy = exchange.qualify(Contract.stock("SPY"))
    assert spy is not None
    gateway.force_pacing_violation()
    with pytest.raises(BrokerError) as raised:
        await broker.historical_bars(
            spy, end=exchange.market.clock.now(), duration=timedelta(hours=1)
        )
    assert raised.value.code == 162 and raised.value.kind is ErrorClass.DATA
    assert "pacing violation" in str(raised.value)


async def test_use_rth_keeps_the_regular_session_of_a_future(
    broker: IBBroker, exchange: SimExchange
) -> None:
    front = exchange.market.front_future("ES")
    end = exchange.market.clock.now()
    ib_es = to_ib_contract(front)
    all_hours = await broker.ib.reqHistoricalDataAsync(
        ib_es, end, "86400 S", "5 mins", "TRADES", False, 2, timeout=5
    )
    rth = await broker.ib.reqHistoricalDataAsync(
        ib_es, end, "86400 S", "5 mins", "TRADES", True, 2, timeout=5
    )

    def local(b: object) -> time:
        return b.date.astimezone(MARKET_TZ).time()  # type: ignore[attr-defined]

    assert rth and all(time(9, 30) <= local(b) < time(16, 0) for b in rth)
    outside = [b for b in all_hours if not time(9, 30) <= local(b) < time(16, 0)]
    assert outside  # Globex trades overnight: useRTH=0 has them
    assert len(all_hours) == len(rth) + len(outside)
