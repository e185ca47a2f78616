"""Cancel every open V6 order at the broker (`v6 cancel-all`), from the Prefect UI.

Completed when the broker confirmed every cancel (or the order had filled first: said in
the artifact); Failed `CancelUnconfirmed` naming each order it could not confirm.
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import acreate_markdown_artifact
from prefect.states import Completed, Failed, State

from flows.naming import market_run_name
from tasks.alerts import alert_on_failure
from tasks.controls import cancel_all_task


@flow(
    name="cancel_all",
    retries=0,
    flow_run_name=market_run_name("cancel-all"),
    on_failure=[alert_on_failure],
    on_crashed=[alert_on_failure],
)
async def cancel_all() -> State:
    report = await cancel_all_task()
    lines = report.lines()
    await acreate_markdown_artifact(
        key="cancel-all",
        markdown="### Cancel all V6 orders\n\n" + "\n".join(f"- {ln}" for ln in lines) + "\n",
        description=f"cancel-all: {len(report.orders)} V6 order(s)",
    )
    if report.ok:
        return Completed(message="; ".join(lines), data=lines)
    bad = [o.line() for o in report.orders if not o.final]
    return Failed(name="CancelUnconfirmed", message="; ".join(bad))
