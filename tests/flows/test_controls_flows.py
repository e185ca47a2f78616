"""The emergency controls as ad hoc flows (what the Prefect UI runs): halt, cancel_all and
flatten end in states that say what happened, with their artifacts."""

from __future__ import annotations

from pathlib import Path

import pytest
from gateway_world import make_exchange

from core.broker.sim import SimBroker
from core.config import Settings
from core.domain import Action, OrderRequest
from core.domain.order_refs import make_order_ref
from core.execution.combo import combo_contract
from core.execution.executor import ComboExecutor
from core.execution.results import ExecStatus
from core.risk.breaker import Breaker, BreakerState
from core.runtime import Runtime, use_runtime
from core.sim.exchange import SimExchange
from core.store import DeltaStore
from core.strategy.candidates import Candidate, build_candidates
from core.strategy.chain import snapshot_chain
from flows.cancel_all import cancel_all
from flows.flatten import flatten
from flows.halt import halt

SETTINGS = Settings(
    strategies={
        "fill_timeout_s": 6.0,
        "reprice_steps": 2,
        "fill_poll_s": 1.0,
        "min_score": 0.0,
        "enabled": ["iron_condor"],
    }
)


@pytest.fixture
def exchange() -> SimExchange:
    return make_exchange()


@pytest.fixture
def runtime(store_root: Path, exchange: SimExchange) -> Runtime:
    return Runtime(
        settings=SETTINGS,
        store=DeltaStore(store_root),
        clock=exchange.market.clock,
        broker_factory=lambda: SimBroker(exchange),
    )


async def condor(exchange: SimExchange) -> Candidate:
    sim = SimBroker(exchange)
    await sim.connect()
    now = exchange.market.clock.now()
    chain = await snapshot_chain(sim, "SPY", SETTINGS.strategies, now)
    return build_candidates(chain, now, SETTINGS).eligible[0]


async def test_halt_flow_records_a_sticky_halt(runtime: Runtime) -> None:
    with use_runtime(runtime):
        out = await halt(reason="news", actor="alice", exits=False)
        refused = await halt(reason=" ", return_state=True)
    assert (out["from"], out["to"]) == ("CLOSED", "HALTED")
    assert out["run_by"].startswith("flow run ")
    assert refused.is_failed()
    status = Breaker(runtime.store, SETTINGS.breaker).status()
    assert status.state is BreakerState.HALTED and len(status.transitions) == 1
    assert status.transitions[0].run_by == out["run_by"]
    assert not status.transitions[0].halt_allows_exits


async def test_cancel_all_flow_cancels_resting_v6_orders(
    runtime: Runtime, exchange: SimExchange
) -> None:
    cand = await condor(exchange)
    bag, _ = combo_contract("SPY", [(leg.contract, leg.ratio) for leg in cand.legs])
    placer = SimBroker(exchange)
    await placer.connect()
    ref = make_order_ref("s1", 0, None)
    await placer.place_order(OrderRequest(bag, Action.BUY, 1, limit_price=-50.0, order_ref=ref))
    assert [o.order_ref for o in exchange.open_orders()] == [ref]
    with use_runtime(runtime):
        state = await cancel_all(return_state=True)
    assert state.is_completed(), state.message
    assert f"{ref} (SPY): cancelled (confirmed by the broker)" in str(state.message)
    assert exchange.open_orders() == []


async def test_flatten_flow_needs_confirm_then_closes_everything(
    runtime: Runtime, exchange: SimExchange
) -> None:
    sim = SimBroker(exchange)
    await sim.connect()
    ex = ComboExecutor(
        sim, runtime.store, runtime.clock, SETTINGS,
        net_liquidation=SETTINGS.sim.net_liquidation,
    )  # fmt: skip
    opened = await ex.execute_entry(await condor(exchange))
    assert opened.status is ExecStatus.FILLED
    with use_runtime(runtime):
        unconfirmed = await flatten(reason="drill", return_state=True)
        assert unconfirmed.is_failed()
        assert Breaker(runtime.store, SETTINGS.breaker).state() is BreakerState.CLOSED
        state = await flatten(reason="drill", confirm=True, actor="alice", return_state=True)
    assert state.is_completed(), state.message
    assert f"{opened.strategy_id}: FILLED, 1 unit(s)" in str(state.message)
    assert all(p.quantity == 0 for p in exchange.positions())
    assert runtime.store.read("strategies").collect()["status"].to_list() == ["CLOSED"]
    assert Breaker(runtime.store, SETTINGS.breaker).state() is BreakerState.HALTED


async def test_order_lines_reach_the_run_logs(runtime: Runtime, exchange: SimExchange) -> None:
    """The ladder's "sending ... @ price" lines are in the flatten run's Prefect logs."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    sim = SimBroker(exchange)
    await sim.connect()
    ex = ComboExecutor(
        sim, runtime.store, runtime.clock, SETTINGS, net_liquidation=SETTINGS.sim.net_liquidation
    )
    assert (await ex.execute_entry(await condor(exchange))).status is ExecStatus.FILLED
    with use_runtime(runtime):
        state = await flatten(reason="drill", confirm=True, return_state=True)
    assert state.is_completed(), state.message
    run_id = state.state_details.flow_run_id
    assert run_id is not None
    await APILogHandler.aflush()  # the handler ships logs in batches: ship them now
    async with get_client() as client:
        logs = await client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id]))
        )
    sent = [lg.message for lg in logs if lg.message.startswith("sending v6:")]
    assert sent and all(" close x1 @ " in m for m in sent), [lg.message for lg in logs]
