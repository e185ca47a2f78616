"""Option qualification in bulk: the gateway answers a strike-0 / any-right
reqContractDetails with the exchange's listing of that expiry (as IB does), and
IBBroker.qualify uses it (one request per expiry) plus a cache of positive answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import date, timedelta

import numpy as np
import pytest
from gateway_world import broker_settings
from ib_async import IB, Option, RequestError

from core.broker.ib import IBBroker
from core.broker.sim import SimBroker
from core.domain import ComboLeg, Contract, OptionChain, Right
from core.sim.exchange import SimExchange
from core.sim.gateway.server import GatewayServer

pytestmark = pytest.mark.gateway
DETAILS = "reqContractDetails"


def chain_slice(ex: SimExchange, expiries: list[date], band: float = 0.15) -> list[Contract]:
    """What `snapshot_chain` asks for: strikes within `band` of spot, both rights."""
    chain = ex.option_chains("SPY")[0]
    spot = ex.market.price("SPY")
    strikes = np.asarray(chain.strikes)
    strikes = strikes[np.abs(strikes / spot - 1.0) <= band]
    return [
        Contract.option("SPY", e, float(k), r)
        for e in expiries
        for k in strikes
        for r in (Right.PUT, Right.CALL)
    ]


def listed(ex: SimExchange, expiry: date, rights: tuple[str, ...] = ("P", "C")) -> set[int]:
    """con_ids of every option of `expiry` the exchange qualifies, one contract at a time."""
    strikes = ex.option_chains("SPY")[0].strikes
    found = (ex.qualify(Contract.option("SPY", expiry, k, r)) for k in strikes for r in rights)
    return {c.con_id for c in found if c is not None}


@pytest.fixture
async def per_contract(gateway: GatewayServer, exchange: SimExchange) -> AsyncIterator[IBBroker]:
    """The old path on the same gateway: one request per contract, no pacing (fast)."""
    b = IBBroker(
        broker_settings(gateway, max_messages_per_s=0),
        clock=exchange.market.clock,
        qualify_batch_min=0,
    )
    await b.connect()
    try:
        yield b
    finally:
        await b.disconnect()


async def test_wildcard_request_returns_the_listing(
    gateway: GatewayServer, exchange: SimExchange
) -> None:
    chain = exchange.option_chains("SPY")[0]
    expiry = chain.expirations[3]
    ib_expiry = expiry.strftime("%Y%m%d")
    ib = IB()
    ib.RaiseRequestErrors = True
    await ib.connectAsync("127.0.0.1", gateway.port, clientId=1, timeout=5)
    try:
        every = await ib.reqContractDetailsAsync(Option("SPY", ib_expiry, 0.0, "", "SMART"))
        got = {d.contract.conId for d in every if d.contract is not None}
        assert len(every) == len(got) == len(listed(exchange, expiry)) > 100
        assert got == listed(exchange, expiry)
        calls = await ib.reqContractDetailsAsync(Option("SPY", ib_expiry, 0.0, "C", "SMART"))
        assert {d.contract.conId for d in calls if d.contract} == listed(exchange, expiry, ("C",))
        k = min(chain.strikes, key=lambda s: abs(s - exchange.market.price("SPY")))
        both = await ib.reqContractDetailsAsync(Option("SPY", ib_expiry, k, "", "SMART"))
        want = {exchange.qualify(Contract.option("SPY", expiry, k, r)) for r in "PC"}
        assert {d.contract.conId for d in both if d.contract} == {c.con_id for c in want if c}
        assert all(d.underConId == 756733 for d in every)  # details as a single request has them
        with pytest.raises(RequestError) as err:  # not a listed expiry: 200, as before
            await ib.reqContractDetailsAsync(Option("SPY", "20260305", 0.0, "", "SMART"))
        assert err.value.code == 200
    finally:
        ib.disconnect()


async def test_batched_qualify_equals_per_contract_with_far_fewer_requests(
    broker: IBBroker, per_contract: IBBroker, gateway: GatewayServer, exchange: SimExchange
) -> None:
    expiries = list(exchange.option_chains("SPY")[0].expirations[5:7])
    asked = chain_slice(exchange, expiries)
    unknown = [
        Contract.option("SPY", expiries[0], 651.37, Right.PUT),  # not on the strike grid
        Contract.option("SPY", expiries[1], 20.0, Right.CALL),  # far outside the listing
    ]
    unlisted_expiry = [Contract.option("SPY", date(2026, 3, 5), 680.0 + i, "P") for i in range(4)]
    asked = [Contract.stock("SPY"), *asked, *unknown, *unlisted_expiry, asked[7]]  # + a repeat
    sim = SimBroker(exchange)
    await sim.connect()
    want = await sim.qualify(asked)

    gateway.request_counts.clear()
    got = await broker.qualify(asked)
    batched = gateway.request_counts[DETAILS]
    gateway.request_counts.clear()
    one_by_one = await per_contract.qualify(asked)
    baseline = gateway.request_counts[DETAILS]

    assert got == want == one_by_one  # element-wise, in the order asked
    assert sum(c is None for c in got) == len(unknown) + len(unlisted_expiry) > 0
    assert batched == 1 + len(expiries) + 1  # the stock, one per listed expiry, the unlisted one
    assert baseline == len(asked) - 1 and baseline > 100 * batched  # (the repeat is asked once)
    assert broker.qualify_batch_min == 4


async def test_second_qualify_is_served_from_the_cache(
    broker: IBBroker, gateway: GatewayServer, exchange: SimExchange
) -> None:
    chain = exchange.option_chains("SPY")[0]
    asked = [Contract.stock("SPY"), *chain_slice(exchange, [chain.expirations[4]], band=0.02)]
    first = await broker.qualify(asked)
    gateway.request_counts.clear()
    assert await broker.qualify(asked) == first
    # strikes of that expiry nobody asked for came with the listing; singles are cached too
    wider = chain_slice(exchange, [chain.expirations[4]], band=0.05)
    assert await broker.qualify(wider) == [exchange.qualify(c) for c in wider]
    a, b = (c for c in first[1:3] if c is not None)
    bag = Contract.combo("SPY", [ComboLeg(a.con_id, 1, "SELL"), ComboLeg(b.con_id, 1, "BUY")])
    assert await broker.qualify([bag]) == [bag]  # its legs are known
    quotes = await broker.quotes(asked[:3])  # unqualified: qualified from the cache
    assert [q.contract for q in quotes] == first[:3] and quotes[1].has_greeks
    assert gateway.request_counts[DETAILS] == 0
    assert gateway.request_counts["reqMktData"] == 3  # the counter sees what was sent
    # a negative answer is not cached: IB is asked again
    nope = [Contract.option("SPY", chain.expirations[4], 651.37, Right.PUT)]
    assert await broker.qualify(nope) == await broker.qualify(nope) == [None]
    assert gateway.request_counts[DETAILS] == 2


async def test_expired_contracts_are_not_served_from_the_cache(
    broker: IBBroker, gateway: GatewayServer, exchange: SimExchange
) -> None:
    chain = exchange.option_chains("SPY")[0]
    nearest = chain.expirations[0]
    spot = exchange.market.price("SPY")
    strikes = sorted(chain.strikes, key=lambda k: abs(k - spot))[:2]
    single = [Contract.option("SPY", nearest, strikes[0], Right.PUT)]
    family = [Contract.option("SPY", nearest, k, r) for k in strikes for r in (Right.PUT, "C")]
    stock = Contract.stock("SPY")
    assert None not in await broker.qualify([stock, *single, *family])
    today = exchange.market.clock.now().date()
    gateway.advance(timedelta(days=(nearest - today).days + 1))  # market date past the expiry
    gateway.request_counts.clear()
    assert await broker.qualify([stock, *single]) == [exchange.qualify(stock), None]
    assert await broker.qualify(family) == [None] * 4
    assert gateway.request_counts[DETAILS] == 2  # the option and its expiry, not the stock


async def test_a_strike_listed_twice_is_asked_for_on_its_own(
    gateway: GatewayServer,
    exchange: SimExchange,
    per_contract: IBBroker,
    broker: IBBroker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two trading classes list some strikes of one expiry (as SPX/SPXW do): the wildcard
    answer is ambiguous for those, so each goes out as its own request."""
    base_chains = exchange.option_chains
    base_qualify = exchange.qualify

    def chains(underlying: str) -> list[OptionChain]:
        return [ch for c in base_chains(underlying) for ch in (c, replace(c, trading_class="W"))]

    def qualify(c: Contract) -> Contract | None:
        if c.trading_class != "W" or c.strike is None or c.strike % 5:
            return base_qualify(c)
        q = base_qualify(replace(c, trading_class=""))
        return replace(q, con_id=q.con_id + 1, trading_class="W") if q is not None else None

    monkeypatch.setattr(exchange, "option_chains", chains)
    monkeypatch.setattr(exchange, "qualify", qualify)
    asked = chain_slice(exchange, [exchange.option_chains("SPY")[0].expirations[5]], band=0.03)
    twice = sum(1 for c in asked if c.strike is not None and c.strike % 5 == 0)
    assert 0 < twice < len(asked)
    gateway.request_counts.clear()
    got = await broker.qualify(asked)
    assert gateway.request_counts[DETAILS] == 1 + twice
    assert got == await per_contract.qualify(asked)
    assert None not in got and {c.trading_class for c in got if c} == {"SPY"}


async def test_batch_threshold_must_not_be_negative(gateway: GatewayServer) -> None:
    with pytest.raises(ValueError, match="qualify_batch_min"):
        IBBroker(broker_settings(gateway), qualify_batch_min=-1)
