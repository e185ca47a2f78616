"""The emergency controls as tasks: a halt, a cancel of every open V6 order, a flatten.

None retries: each acts on the broker or the breaker once and reports what happened;
a person decides whether to run it again."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from core.clock import SimClock
from core.controls import CancelAllReport, FlattenReport, cancel_all, flatten_all
from core.execution.ladder import Waiter, real_wait, sim_waiter
from core.risk.breaker import Breaker, Transition
from core.runtime import Runtime, current_runtime


def control_wait(rt: Runtime) -> Waiter:
    """Simulated time advances on a simulated clock; otherwise wall time passes."""
    return sim_waiter(rt.clock) if isinstance(rt.clock, SimClock) else real_wait


@task(name="halt", cache_policy=NO_CACHE, retries=0)
def halt_task(reason: str, actor: str, run_by: str, exits: bool) -> Transition:
    """Record the sticky halt (see `Breaker.halt`)."""
    rt = current_runtime()
    t = Breaker(rt.store, rt.settings.breaker, rt.clock).halt(
        reason, actor, exits=exits, run_by=run_by
    )
    get_run_logger().warning(
        "HALT by %s (run by %s): %s -> %s, exits %s: %s",
        actor, run_by, t.from_state.value, t.to_state.value,
        "allowed" if exits else "refused", reason,
    )  # fmt: skip
    return t


@task(name="cancel-all", cache_policy=NO_CACHE, retries=0, persist_result=False)
async def cancel_all_task() -> CancelAllReport:
    """Cancel every open V6 order on one new connection; each outcome to the run log."""
    rt = current_runtime()
    broker = rt.new_broker()
    await broker.connect()
    try:
        report = await cancel_all(broker, wait=control_wait(rt))
    finally:
        await broker.disconnect()
    log = get_run_logger()
    for line in report.lines():
        (log.info if report.ok else log.warning)("cancel-all: %s", line)
    return report


@task(name="flatten", cache_policy=NO_CACHE, retries=0, persist_result=False)
async def flatten_task(reason: str, actor: str, run_by: str) -> FlattenReport:
    """Halt, then close every open strategy (see `core.controls.flatten`)."""
    rt = current_runtime()
    report = await flatten_all(rt, reason=reason, actor=actor, run_by=run_by, wait=control_wait(rt))
    log = get_run_logger()
    for line in report.lines():
        (log.info if report.ok else log.warning)("flatten: %s", line)
    return report
