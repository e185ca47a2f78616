"""The manual breaker task: an audited trip or reset shows as a step of the ad hoc flow.

The trading cycle's breaker gate and record are not tasks: they run in the flow body
(`tasks.cycle`, module doc).
"""

from __future__ import annotations

from typing import Literal

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from core.risk.breaker import Breaker, Transition
from core.runtime import current_runtime


@task(name="breaker-manual", cache_policy=NO_CACHE)
def breaker_manual(
    action: Literal["reset", "trip"], reason: str, actor: str, run_by: str
) -> Transition:
    """Manual trip or reset; the reason and the claimed actor are required and recorded,
    with `run_by` (who really ran it) beside them."""
    rt = current_runtime()
    b = Breaker(rt.store, rt.settings.breaker, rt.clock)
    transition = (
        b.trip(reason, actor, run_by=run_by)
        if action == "trip"
        else b.reset(reason, actor, run_by=run_by)
    )
    get_run_logger().warning(
        "breaker %s by %s (run by %s): %s -> %s (%s)",
        action,
        actor,
        run_by,
        transition.from_state.value,
        transition.to_state.value,
        reason,
    )
    return transition
