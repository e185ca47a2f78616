"""Flow runs say what they are in the Prefect UI: the market time they acted on (the
runtime's clock, New York time) in their name, and their outcome as tags."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

from gateway_world import make_exchange
from prefect.client.orchestration import get_client

from core.config import Settings
from core.risk.breaker import Breaker, BreakerState, Gate, GateMode
from core.runtime import Runtime, use_runtime
from core.store import DeltaStore
from flows.naming import outcome_tags
from flows.trading_cycle import trading_cycle


def test_outcome_tags_name_what_happened() -> None:
    halted = Gate(GateMode.EXITS_ONLY, BreakerState.HALTED, "halted")
    assert outcome_tags("ExitsOnly", halted) == [
        "breaker:halted", "exits-only", "outcome:ExitsOnly",
    ]  # fmt: skip
    assert outcome_tags("CircuitTripped") == ["breaker:tripped", "outcome:CircuitTripped"]
    assert outcome_tags("Completed") == ["outcome:Completed"]


async def test_a_halted_cycle_is_named_for_its_market_time_and_tagged(store_root: Path) -> None:
    exchange = make_exchange()  # one hour into the 2026-03-02 session: 10:30 in New York

    def no_broker() -> object:
        raise AssertionError("a halted run without exits must not build a broker")

    rt = Runtime(Settings(), DeltaStore(store_root), exchange.market.clock, no_broker)  # type: ignore[arg-type]
    Breaker(rt.store, rt.settings.breaker, rt.clock).halt("drill", "alice", exits=False)
    with use_runtime(rt):
        state = await trading_cycle(guard=False, return_state=True)
    assert state.is_cancelled() and state.name == "CircuitOpen"
    run_id = state.state_details.flow_run_id
    assert isinstance(run_id, UUID)
    async with get_client() as client:
        run = await client.read_flow_run(run_id)
    assert run.name == "cycle 2026-03-02 10:30 ET"
    assert {"breaker:halted", "breaker:open", "outcome:CircuitOpen"} <= set(run.tags)
