"""Close every open strategy now (`v6 flatten --confirm`), from the Prefect UI.

First a sticky halt (exits allowed), then each OPEN strategy closes as a combo order
through the executor's ladder, bounded by natural (`core.controls.flatten`). `confirm`
must be true: the parameter is the UI's "are you sure".
Completed when every strategy closed; Failed `NotFlat` naming what is still open.
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import acreate_markdown_artifact
from prefect.states import Completed, Failed, State

from flows.audit import run_by
from flows.naming import market_run_name
from tasks.alerts import alert_on_failure, send_alert
from tasks.controls import flatten_task


@flow(
    name="flatten",
    retries=0,
    flow_run_name=market_run_name("flatten"),
    on_failure=[alert_on_failure],
    on_crashed=[alert_on_failure],
)
async def flatten(reason: str, confirm: bool = False, actor: str = "prefect-ui") -> State:
    if not confirm:
        raise ValueError(
            "flatten closes every open strategy at up to the natural price: "
            "set confirm=true to go ahead"
        )
    if not reason.strip():
        raise ValueError("reason is required: say why everything is being closed")
    report = await flatten_task(reason, actor, await run_by())
    lines = report.lines()
    await acreate_markdown_artifact(
        key="flatten",
        markdown="### Flatten\n\n" + "\n".join(f"- {ln}" for ln in lines) + "\n",
        description=f"flatten: {len(report.closes)} strategy(ies)",
    )
    await send_alert(
        f"V6 flatten by {actor}: {'flat' if report.ok else 'NOT flat'}", "\n".join(lines)
    )
    if report.ok:
        return Completed(message="; ".join(lines), data=lines)
    return Failed(name="NotFlat", message="; ".join(lines))
