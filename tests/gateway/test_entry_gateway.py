"""The entry pipeline's executor over the production path: IBBroker + ib_async against the
gateway simulator. An iron condor fills as one BAG, a timeout cancels cleanly, a partial
fill is completed or unwound (by policy), and a dropped acknowledgement does not double
the order."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import polars as pl
import pytest

from core.broker.ib import IBBroker
from core.broker.sim import SimBroker
from core.config import Settings
from core.domain import OrderRequest, OrderState, OrderStatus, SecType
from core.execution.combo import combo_quote
from core.execution.executor import ComboExecutor
from core.execution.results import ExecStatus
from core.sim.exchange import SimExchange
from core.sim.gateway.server import GatewayServer
from core.store.memory import MemoryStore
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


async def candidate(exchange: SimExchange, quantity: int = 1) -> Candidate:
    """Chain snapshot straight from the exchange (the executor is what goes over the wire)."""
    sim = SimBroker(exchange)
    await sim.connect()
    now = exchange.market.clock.now()
    chain = await snapshot_chain(sim, "SPY", SETTINGS.strategies, now)
    cand = build_candidates(chain, now, SETTINGS).eligible[0]
    return cand.with_quantity(quantity) if quantity != 1 else cand


def executor(
    broker: IBBroker, gateway: GatewayServer, store: MemoryStore, settings: Settings = SETTINGS
) -> ComboExecutor:
    async def wait(seconds: float) -> None:
        gateway.advance(timedelta(seconds=seconds))  # simulated time; pushes fills
        await asyncio.sleep(0)

    return ComboExecutor(
        broker, store, gateway.exchange.market.clock, settings,
        net_liquidation=settings.sim.net_liquidation, wait=wait,
    )  # fmt: skip


def orders(exchange: SimExchange) -> list[OrderState]:
    return exchange.open_orders() + exchange.completed_orders()


def positions(exchange: SimExchange) -> dict[int, int]:
    return {p.contract.con_id: p.quantity for p in exchange.positions()}


def arm_partial_at_natural(broker: IBBroker, exchange: SimExchange, gateway: GatewayServer) -> None:
    """The first order sent at natural fills one unit only (the rest rests)."""
    place = broker.place_order
    armed = {"done": False}

    async def placing(order: OrderRequest) -> OrderState:
        legs = [
            (exchange.contract_by_id(leg.con_id), 1 if leg.action == "BUY" else -1)
            for leg in order.contract.combo_legs
        ]
        clean = [(c, r) for c, r in legs if c is not None]
        natural = combo_quote(clean, exchange.quotes([c for c, _ in clean])).natural
        if not armed["done"] and order.limit_price is not None and order.limit_price >= natural:
            gateway.partial_fill_next(1)
            armed["done"] = True
        return await place(order)

    broker.place_order = placing  # type: ignore[method-assign]


async def test_iron_condor_fills_as_one_combo_over_the_wire(
    broker: IBBroker, exchange: SimExchange, gateway: GatewayServer
) -> None:
    cand = await candidate(exchange)
    store = MemoryStore()
    result = await executor(broker, gateway, store).execute_entry(cand)
    assert result.status is ExecStatus.FILLED and result.filled == 1
    filled = [o for o in orders(exchange) if o.status is OrderStatus.FILLED]
    assert len(filled) == 1 and filled[0].contract.sec_type is SecType.BAG
    assert len([e for e in exchange.executions() if e.order_ref == filled[0].order_ref]) == 4
    assert positions(exchange) == {leg.contract.con_id: leg.ratio for leg in cand.legs}
    assert exchange.open_orders() == []
    book_fills = store.read("fills").collect()
    assert book_fills.height == 4 and set(book_fills["order_ref"]) == {filled[0].order_ref}
    assert store.read("strategies").collect()["status"].to_list() == ["OPEN"]
    assert result.credit == pytest.approx(-filled[0].avg_fill_price)


async def test_timeout_cancels_cleanly_over_the_wire(
    broker: IBBroker, exchange: SimExchange, gateway: GatewayServer
) -> None:
    cand = await candidate(exchange)
    gateway.delay_fills(100_000)
    store = MemoryStore()
    result = await executor(broker, gateway, store).execute_entry(cand)
    assert result.status is ExecStatus.CANCELLED
    assert exchange.open_orders() == [] and positions(exchange) == {}
    assert {o.status for o in orders(exchange)} == {OrderStatus.CANCELLED}
    assert set(store.read("orders").collect()["status"]) == {"CANCELLED"}
    assert store.read("strategies").collect()["status"].to_list() == ["CANCELLED"]


async def test_partial_fill_is_completed_over_the_wire(
    broker: IBBroker, exchange: SimExchange, gateway: GatewayServer
) -> None:
    cand = await candidate(exchange, quantity=3)
    arm_partial_at_natural(broker, exchange, gateway)
    store = MemoryStore()
    result = await executor(broker, gateway, store).execute_entry(cand)
    assert result.status is ExecStatus.FILLED and result.filled == 3
    assert [o.filled for o in orders(exchange) if o.filled] == [1, 2]
    assert positions(exchange) == {leg.contract.con_id: 3 * leg.ratio for leg in cand.legs}
    assert store.read("fills").collect()["quantity"].abs().sum() == 12


async def test_partial_fill_is_unwound_over_the_wire(
    broker: IBBroker, exchange: SimExchange, gateway: GatewayServer
) -> None:
    """Under the unwind policy the filled unit is closed again: no half strategy is left."""
    unwind = SETTINGS.model_copy(
        update={
            "strategies": SETTINGS.strategies.model_copy(update={"partial_fill_policy": "unwind"})
        }
    )
    cand = await candidate(exchange, quantity=3)
    arm_partial_at_natural(broker, exchange, gateway)
    store = MemoryStore()
    result = await executor(broker, gateway, store, unwind).execute_entry(cand)
    assert result.status is ExecStatus.UNWOUND and result.filled == 1
    assert result.unwind is not None and result.unwind.status is ExecStatus.FILLED
    assert positions(exchange) == {}
    assert exchange.open_orders() == []
    assert store.read("strategies").collect()["status"].to_list() == ["CLOSED"]
    fills = store.read("fills").collect()
    assert fills["quantity"].sum() == 0 and fills["quantity"].abs().sum() == 8  # 4 legs in, out


async def test_dropped_ack_does_not_double_the_order(
    broker: IBBroker, exchange: SimExchange, gateway: GatewayServer
) -> None:
    cand = await candidate(exchange)
    store = MemoryStore()
    ex = executor(broker, gateway, store)
    gateway.drop_on_next_order()  # the first order reaches the exchange; the ack is lost
    result = await ex.execute_entry(cand)
    if result.status is ExecStatus.INTERRUPTED:  # the adapter may surface the drop
        result = await ex.execute_entry(cand)
    assert result.status is ExecStatus.FILLED
    refs = [o.order_ref for o in orders(exchange)]
    assert len(refs) == len(set(refs))  # no ref placed twice
    intents = store.read("order_intents").collect()["order_ref"].to_list()
    assert sorted(refs) == sorted(intents)
    assert positions(exchange) == {leg.contract.con_id: leg.ratio for leg in cand.legs}
    again = await ex.execute_entry(cand)
    assert again.status is ExecStatus.ALREADY_DONE
    assert len(orders(exchange)) == len(refs)
    assert pl.Series(refs).n_unique() == len(refs)
