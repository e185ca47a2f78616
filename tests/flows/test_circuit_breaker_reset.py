"""The ad hoc breaker flow: audited manual trip and reset, reason required."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import Settings
from core.identity import os_identity
from core.risk.breaker import Breaker, BreakerState
from core.runtime import Runtime, use_runtime
from core.store import DeltaStore
from flows.circuit_breaker_reset import circuit_breaker_reset


@pytest.fixture
def runtime(store_root: Path) -> Runtime:
    return Runtime(settings=Settings(), store=DeltaStore(store_root))


async def test_trip_then_reset_is_audited(runtime: Runtime) -> None:
    with use_runtime(runtime):
        tripped = await circuit_breaker_reset(reason="drill", actor="alice", action="trip")
        run_by = tripped.pop("run_by")
        assert tripped == {"from": "CLOSED", "to": "OPEN", "reason": "drill", "actor": "alice"}
        reset = await circuit_breaker_reset(reason="drill over", actor="alice")
        assert (reset["from"], reset["to"]) == ("OPEN", "CLOSED")
    status = Breaker(runtime.store, runtime.settings.breaker).status()
    assert status.state is BreakerState.CLOSED
    assert [(t.actor, t.reason) for t in status.transitions[-2:]] == [
        ("alice", "drill"),
        ("alice", "drill over"),
    ]
    # "alice" is only what the caller typed; who really ran it is recorded beside it: the
    # flow run and this process's OS account, which a parameter cannot change.
    recorded = [t.run_by for t in status.transitions[-2:]]
    assert recorded[0] == run_by and recorded[1] == reset["run_by"]
    assert all(r.startswith("flow run ") and r.endswith(f" on {os_identity()}") for r in recorded)
    assert recorded[0] != recorded[1]  # two runs, two run ids


async def test_blank_reason_is_refused_and_nothing_changes(runtime: Runtime) -> None:
    with use_runtime(runtime):
        state = await circuit_breaker_reset(reason="  ", actor="bob", return_state=True)
    assert state.is_failed()
    assert "reason is required" in str(state.message) or "reason is required" in repr(
        await state.result(raise_on_failure=False)
    )
    assert Breaker(runtime.store, runtime.settings.breaker).status().transitions == ()
