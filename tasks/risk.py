"""Breaker tasks: thin wrappers so every breaker read and write shows in the run's graph."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from core.risk.breaker import Breaker, BreakerStatus, CycleHealth, Gate, Transition
from core.runtime import current_runtime


def breaker() -> Breaker:
    rt = current_runtime()
    return Breaker(rt.store, rt.settings.breaker, rt.clock)


@task(name="breaker-gate", cache_policy=NO_CACHE)
def breaker_gate(run_id: str) -> Gate:
    """Never raises: an unreadable breaker yields a fail-closed gate (nothing trades)."""
    gate = breaker().gate(run_id=run_id)
    get_run_logger().info(
        "breaker gate: %s (%s) %s",
        gate.mode.value,
        gate.state.value if gate.state is not None else "UNREADABLE",  # FAIL_CLOSED
        gate.reason,
    )
    return gate


@task(name="breaker-record-cycle", cache_policy=NO_CACHE)
def breaker_record_cycle(health: CycleHealth, run_id: str) -> Transition | None:
    transition = breaker().record_cycle(health, run_id=run_id)
    if transition is not None:
        get_run_logger().warning(
            "breaker %s -> %s: %s",
            transition.from_state.value,
            transition.to_state.value,
            transition.reason,
        )
    return transition


@task(name="breaker-manual", cache_policy=NO_CACHE)
def breaker_manual(action: str, reason: str, actor: str) -> Transition:
    """Manual trip or reset; the reason and actor are required and recorded."""
    b = breaker()
    transition = b.trip(reason, actor) if action == "trip" else b.reset(reason, actor)
    get_run_logger().warning(
        "breaker %s by %s: %s -> %s (%s)",
        action,
        actor,
        transition.from_state.value,
        transition.to_state.value,
        reason,
    )
    return transition


@task(name="breaker-status", cache_policy=NO_CACHE)
def breaker_status() -> BreakerStatus:
    return breaker().status()
