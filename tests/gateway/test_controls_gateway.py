"""The emergency controls over the production path (IBBroker + unmodified ib_async against
the gateway simulator): cancel-all confirms every cancel or reports why not, and flatten
halts, then closes every open strategy as combo orders."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
from gateway_world import broker_settings

from core.broker.ib import IBBroker
from core.broker.sim import SimBroker
from core.config import Settings
from core.controls import cancel_all, flatten_all
from core.cycle.lease import CycleLease
from core.domain import Action, OrderRequest, OrderStatus, SecType
from core.domain.order_refs import make_order_ref
from core.execution.combo import combo_contract
from core.execution.executor import ComboExecutor
from core.execution.ladder import Waiter
from core.execution.results import ExecStatus
from core.risk.breaker import Breaker, BreakerState
from core.runtime import Runtime
from core.sim.exchange import SimExchange
from core.sim.gateway.server import GatewayServer
from core.store import DeltaStore
from core.strategy.candidates import Candidate, build_candidates
from core.strategy.chain import snapshot_chain

pytestmark = pytest.mark.gateway

SETTINGS = Settings(
    strategies={
        "fill_timeout_s": 6.0,
        "reprice_steps": 2,
        "fill_poll_s": 1.0,
        "min_score": 0.0,
        "enabled": ["iron_condor"],
    }
)


def advancing(gateway: GatewayServer) -> Waiter:
    async def wait(seconds: float) -> None:
        gateway.advance(timedelta(seconds=seconds))  # simulated time; pushes fills
        await asyncio.sleep(0)

    return wait


async def candidate(exchange: SimExchange) -> Candidate:
    """Chain snapshot straight from the exchange (the orders are what go over the wire)."""
    sim = SimBroker(exchange)
    await sim.connect()
    now = exchange.market.clock.now()
    chain = await snapshot_chain(sim, "SPY", SETTINGS.strategies, now)
    return build_candidates(chain, now, SETTINGS).eligible[0]


async def resting_order(broker: IBBroker, exchange: SimExchange, ref: str) -> OrderRequest:
    """A one-lot iron condor asking a credit of 50 a share: far beyond natural, it rests."""
    cand = await candidate(exchange)
    bag, _ = combo_contract("SPY", [(leg.contract, leg.ratio) for leg in cand.legs])
    order = OrderRequest(bag, Action.BUY, 1, limit_price=-50.0, order_ref=ref)
    state = await broker.place_order(order)
    assert state.status in (OrderStatus.SUBMITTED, OrderStatus.PENDING), state
    return order


async def test_cancel_all_cancels_every_v6_order_and_leaves_others(
    broker: IBBroker, exchange: SimExchange, gateway: GatewayServer
) -> None:
    await resting_order(broker, exchange, make_order_ref("s1", 0, None))
    await resting_order(broker, exchange, make_order_ref("s2", 0, None))
    await resting_order(broker, exchange, "manual-by-a-person")
    report = await cancel_all(broker, wait=advancing(gateway))
    assert report.ok and report.foreign == 1
    assert sorted(o.order_ref for o in report.orders) == ["v6:s1:0:combo", "v6:s2:0:combo"]
    assert {o.after for o in report.orders} == {OrderStatus.CANCELLED}
    assert all("cancelled (confirmed by the broker)" in line for line in report.lines()[:2])
    assert [o.order_ref for o in exchange.open_orders()] == ["manual-by-a-person"]
    again = await cancel_all(broker, wait=advancing(gateway))
    assert again.ok and again.orders == () and "no open V6 orders" in again.lines()[0]


async def test_cancel_all_reports_an_order_it_cannot_cancel(
    broker: IBBroker, exchange: SimExchange, gateway: GatewayServer
) -> None:
    """An order placed under another clientId: IB refuses the cancel (10147); reported."""
    other = IBBroker(broker_settings(gateway), clock=exchange.market.clock)
    await other.connect()
    try:
        await resting_order(other, exchange, make_order_ref("s9", 0, None))
        report = await cancel_all(broker, wait=advancing(gateway))
    finally:
        await other.disconnect()
    assert not report.ok
    (only,) = report.orders
    assert only.after is None and "10147" in only.error and "clientId" in only.line()
    assert "NOT cancelled" in only.line()
    assert [o.order_ref for o in exchange.open_orders()] == ["v6:s9:0:combo"]


def runtime(store_root: Path, gateway: GatewayServer, exchange: SimExchange) -> Runtime:
    return Runtime(
        settings=SETTINGS,
        store=DeltaStore(store_root),
        clock=exchange.market.clock,
        broker_factory=lambda: IBBroker(broker_settings(gateway), clock=exchange.market.clock),
    )


async def open_condor(rt: Runtime, broker: IBBroker, gateway: GatewayServer) -> str:
    cand = await candidate(gateway.exchange)
    ex = ComboExecutor(
        broker, rt.store, rt.clock, SETTINGS, net_liquidation=SETTINGS.sim.net_liquidation,
        wait=advancing(gateway),
    )  # fmt: skip
    result = await ex.execute_entry(cand)
    assert result.status is ExecStatus.FILLED
    return result.strategy_id


async def test_flatten_halts_then_closes_every_strategy_over_the_wire(
    broker: IBBroker, exchange: SimExchange, gateway: GatewayServer, store_root: Path
) -> None:
    rt = runtime(store_root, gateway, exchange)
    sid = await open_condor(rt, broker, gateway)
    assert exchange.positions()
    report = await flatten_all(
        rt, reason="drill", actor="alice", run_by="test", wait=advancing(gateway)
    )
    assert report.ok, report.lines()
    assert report.halt.to_state is BreakerState.HALTED and report.halt.halt_allows_exits
    assert [c.strategy_id for c in report.closes] == [sid]
    assert report.closes[0].result is not None
    assert report.closes[0].result.status is ExecStatus.FILLED
    assert all(p.quantity == 0 for p in exchange.positions())
    strategies = rt.store.read("strategies").collect()
    assert strategies["status"].to_list() == ["CLOSED"]
    intents = rt.store.read("order_intents").collect()
    closing = set(intents.filter(pl.col("purpose") == "close")["order_ref"])
    sent = [o for o in exchange.completed_orders() if o.order_ref in closing]
    assert closing and {o.contract.sec_type for o in sent} == {SecType.BAG}
    assert [o.status for o in sent][-1] is OrderStatus.FILLED
    # the halt stays: a later gate, far past any cool-down, still refuses entries
    gate = Breaker(rt.store, SETTINGS.breaker, rt.clock).gate(
        rt.clock.now() + timedelta(days=2), run_id="later"
    )
    assert gate.state is BreakerState.HALTED and not gate.entries_allowed


async def test_flatten_stands_down_while_a_cycle_holds_the_lease(
    broker: IBBroker, exchange: SimExchange, gateway: GatewayServer, store_root: Path
) -> None:
    rt = runtime(store_root, gateway, exchange)
    await open_condor(rt, broker, gateway)
    held = CycleLease(rt.store, timedelta(minutes=5)).acquire("cycle-running")
    assert not isinstance(held, type(None))
    before = len(exchange.completed_orders())
    report = await flatten_all(rt, reason="drill", actor="alice", wait=advancing(gateway))
    assert not report.ok and report.busy is not None and "cycle-running" in report.busy
    assert "NOT flattened" in report.lines()[1]
    assert len(exchange.completed_orders()) == before  # nothing sent
    assert Breaker(rt.store, SETTINGS.breaker).state() is BreakerState.HALTED
    assert pl.Series([p.quantity for p in exchange.positions()]).abs().sum() > 0
