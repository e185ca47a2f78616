"""A person's emergency stop from the Prefect UI: the sticky halt (`v6 halt`).

No entries from now on; exits still run unless `exits=False`. No cool-down and no probe
lift it: only `circuit_breaker_reset` (or `v6 breaker reset`) by a person does.
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import acreate_markdown_artifact

from flows.audit import run_by
from flows.naming import market_run_name
from tasks.alerts import alert_on_failure, send_alert
from tasks.controls import halt_task


@flow(
    name="halt",
    retries=0,
    flow_run_name=market_run_name("halt"),
    on_failure=[alert_on_failure],
    on_crashed=[alert_on_failure],
)
async def halt(reason: str, actor: str = "prefect-ui", exits: bool = True) -> dict[str, str]:
    if not reason.strip():
        raise ValueError("reason is required: say why trading is being halted")
    who = await run_by()
    t = halt_task(reason, actor, who, exits)
    await acreate_markdown_artifact(
        key="halt",
        markdown=(
            f"### HALTED\n\n| | |\n|---|---|\n| by (claimed) | {actor} |\n| run by | {who} |\n"
            f"| from | {t.from_state.value} |\n| exits | {'allowed' if exits else 'refused'} |\n"
            f"| reason | {reason} |\n| at | {t.ts.isoformat()} |\n\n"
            "Only a person's `circuit_breaker_reset` re-opens trading.\n"
        ),
        description="manual halt",
    )
    await send_alert(
        f"V6 HALTED by {actor}",
        f"{reason}\nexits {'allowed' if exits else 'refused'}; only a person's reset re-opens "
        f"trading\nrun by {who}",
    )
    return {"from": t.from_state.value, "to": t.to_state.value, "reason": reason, "run_by": who}
