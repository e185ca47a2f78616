"""Manual, audited breaker control: reset (or trip) with a required reason.

Ad hoc only. The transition is written to `risk_state` with the actor and reason,
and a markdown artifact records it in the Prefect UI next to the runs it affects.
"""

from __future__ import annotations

from typing import Literal

from prefect import flow
from prefect.artifacts import acreate_markdown_artifact

from flows.audit import run_by as _run_by
from flows.naming import market_run_name
from tasks.alerts import alert_on_failure
from tasks.risk import breaker_manual


@flow(
    name="circuit_breaker_reset",
    retries=0,
    flow_run_name=market_run_name("breaker change"),
    on_failure=[alert_on_failure],
    on_crashed=[alert_on_failure],
)
async def circuit_breaker_reset(
    reason: str, actor: str = "prefect-ui", action: Literal["reset", "trip"] = "reset"
) -> dict[str, str]:
    if not reason.strip():
        raise ValueError("reason is required: say why the breaker is being changed")
    run_by = await _run_by()
    transition = breaker_manual(action, reason, actor, run_by)
    await acreate_markdown_artifact(
        key="circuit-breaker-manual",
        markdown=(
            f"### Breaker {action}\n\n| | |\n|---|---|\n"
            f"| by (claimed) | {actor} |\n| run by | {run_by} |\n"
            f"| from | {transition.from_state.value} |\n"
            f"| to | {transition.to_state.value} |\n| reason | {reason} |\n"
            f"| at | {transition.ts.isoformat()} |\n"
        ),
        description=f"manual breaker {action}",
    )
    return {
        "from": transition.from_state.value,
        "to": transition.to_state.value,
        "reason": reason,
        "actor": actor,
        "run_by": run_by,
    }
