"""Who really ran an ad hoc flow, for audit rows beside the actor a person typed."""

from __future__ import annotations

from uuid import UUID

from prefect import get_client
from prefect.runtime import flow_run

from core.identity import os_identity


async def run_by() -> str:
    """The flow run, its creator as the Prefect server recorded it (a user, deployment or
    automation; none on a server without auth), and the worker's OS account. `actor` is a
    parameter anyone can type; this is not."""
    run_id = flow_run.id
    creator = "unknown creator"
    if run_id:
        async with get_client() as client:
            run = await client.read_flow_run(UUID(run_id))
        if run.created_by is not None:
            who = run.created_by.display_value or str(run.created_by.id or "")
            creator = f"created by {run.created_by.type or 'unknown'} {who}".strip()
    return f"flow run {run_id or '-'} ({creator}) on {os_identity()}"
