"""Every 5 minutes in market hours, and at the start of every trading cycle: make the
Delta book agree with the broker and explain every difference.

The broker is the truth. Missing fills are booked exactly once, unknown positions are
adopted as EXTERNAL (never traded until a person tags them), vanished legs are closed
with their reason (expired, assigned, exercised, closed outside V6), and any remaining
difference gets a tagged reconciliation fill. Every case is a row in
`reconciliation_breaks`; the run returns `unresolved_breaks`, a circuit-breaker input.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import State

from core.run_guard import Session
from core.runtime import current_runtime
from flows.naming import market_run_name
from flows.states import skipped
from tasks.alerts import alert_on_failure
from tasks.broker import connect_broker
from tasks.console import publish_console_artifacts
from tasks.guards import should_skip
from tasks.reconcile import publish_artifact, reconcile_with_retries, slot_usage


def _run_id(stamp: str) -> str:
    run = flow_run.id
    return f"recon-{stamp}-{str(run)[:8]}" if run else f"recon-{stamp}"


@flow(
    name="position_reconciliation",
    flow_run_name=market_run_name("reconcile"),
    on_failure=[alert_on_failure],
    on_crashed=[alert_on_failure],
)
async def position_reconciliation(guard: bool = True) -> dict[str, Any] | State:
    """`guard=False` when called by the trading cycle (which already checked the session)."""
    if guard:
        skip = should_skip(Session.REGULAR)
        if skip is not None:
            return skipped(skip)
    run_id = _run_id(f"{current_runtime().clock.now():%Y%m%dT%H%M%S}")
    broker = await connect_broker()
    try:
        rec = await reconcile_with_retries()(broker, run_id)
    finally:
        await broker.disconnect()
    slots = await slot_usage()
    await publish_artifact(rec.result, slots)
    await publish_console_artifacts(current_runtime())
    summary = rec.result.summary()
    get_run_logger().info(
        "reconciled %d positions: %d break(s), %d unresolved, %d fill(s) recorded",
        summary["positions"], summary["breaks"], summary["unresolved_breaks"],
        summary["fills_recorded"],
    )  # fmt: skip
    return {**summary, "written": dict(rec.written), "slots": slots}
