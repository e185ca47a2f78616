"""Futures contract details as IB answers them, through unmodified ib_async over TCP: a
root without an expiry lists every listed contract, and a continuous future resolves to
the front one."""

from __future__ import annotations

import pytest
from ib_async import ContFuture, Future

from core.broker.ib import IBBroker
from core.sim.exchange import SimExchange

pytestmark = pytest.mark.gateway


async def test_a_future_without_expiry_lists_every_contract(
    broker: IBBroker, exchange: SimExchange
) -> None:
    listed = exchange.market.futures_contracts("ES")
    assert len(listed) >= 2
    details = await broker.ib.reqContractDetailsAsync(Future("ES", exchange="CME"))
    got = [d.contract for d in details]
    assert [c.conId for c in got if c is not None] == [c.con_id for c in listed]
    assert all(c is not None and c.secType == "FUT" for c in got)
    # ib_async's qualify refuses the ambiguity rather than guess
    (ambiguous,) = await broker.ib.qualifyContractsAsync(Future("ES", exchange="CME"))
    assert ambiguous is None


async def test_a_continuous_future_resolves_to_the_front_contract(
    broker: IBBroker, exchange: SimExchange
) -> None:
    front = exchange.market.front_future("ES")
    (cont,) = await broker.ib.qualifyContractsAsync(ContFuture("ES", exchange="CME"))
    assert cont is not None and cont.conId == front.con_id and cont.secType == "CONTFUT"
    assert cont.lastTradeDateOrContractMonth.startswith(front.expiry.strftime("%Y%m"))
