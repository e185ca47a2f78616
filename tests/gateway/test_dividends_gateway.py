"""Dividends through IB's generic tick 456: IBBroker + unmodified ib_async against the
gateway simulator, which answers with tick type 59 from the simulator's dividend schedule
(the same one its early-assignment model uses)."""

from __future__ import annotations

from datetime import date

import pytest

from core.broker import BrokerError, ErrorClass
from core.broker.ib import IBBroker
from core.broker.sim import SimBroker
from core.cycle.market import load_dividends
from core.domain import Contract, Dividends
from core.sim.exchange import SimExchange


async def test_spy_dividend_arrives_as_ib_sends_it(broker: IBBroker, exchange: SimExchange) -> None:
    got = await broker.dividends(Contract.stock("SPY"))
    want = exchange.dividends(Contract.stock("SPY"))
    assert want is not None and want.next_date is not None and want.next_amount is not None
    assert got.next_date == want.next_date == date(2026, 3, 20)  # March expiry Friday
    assert got.next_amount == pytest.approx(want.next_amount)
    assert got.next_amount > 0 and got.next_known() == (got.next_date, got.next_amount)


async def test_unknown_is_never_read_as_no_dividend(broker: IBBroker) -> None:
    """Empty tick-59 fields say nothing; only next12Months == 0 says "none expected"."""
    assert Dividends(None, None, None, None).next_known() == (None, None)
    assert Dividends(1.0, 0.0, None, None).next_known() == (None, 0.0)
    with pytest.raises(BrokerError) as err:  # dividends are asked of stocks only
        await broker.dividends(Contract.index("VIX"))
    assert err.value.kind is ErrorClass.DATA


async def test_load_dividends_leaves_unknown_symbols_out(exchange: SimExchange) -> None:
    sim = SimBroker(exchange)
    await sim.connect()
    frame = await load_dividends(sim, ["SPY", "QQQ"])
    assert frame["symbol"].to_list() == ["SPY", "QQQ"]
    assert frame["dividend_amount"].min() > 0  # type: ignore[operator]
    assert frame["dividend_ex_date"].to_list() == [date(2026, 3, 20)] * 2
