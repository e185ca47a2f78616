"""`v6 serve`: every catalog flow as a scheduled deployment, served by this process.

Scheduling needs a real Prefect server: against the ephemeral API `serve` registers
nothing that a scheduler would pick up, so this refuses to start without one and says
how to get one. Each flow run is a fresh subprocess (its own broker connection and
clientId); `serve_process_limit` caps how many run at once.
"""

from __future__ import annotations

import logging

from prefect.deployments.runner import RunnerDeployment
from rich.console import Console
from rich.table import Table

from core.config import Settings
from deployments.catalog import CATALOG, build_deployments
from deployments.errors import UserError

log = logging.getLogger(f"v6.{__name__}")

LOCAL_API_URL = "http://127.0.0.1:4200/api"
START_HINT = (
    "start one with `prefect server start` (UI on http://127.0.0.1:4200), then "
    f"`export PREFECT_API_URL={LOCAL_API_URL}`"
)


def configured_api_url() -> str | None:
    """PREFECT_API_URL from the environment or the active Prefect profile; None if unset."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    return str(url) if url else None


def server_problem(url: str) -> str | None:
    """Why the server at `url` cannot be used (None when its health check passes)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        error = client.api_healthcheck()
    if error is None:
        return None
    first = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def require_server() -> str:
    """The configured, reachable Prefect API URL, or a UserError saying how to get one."""
    url = configured_api_url()
    if url is None:
        raise UserError(f"no Prefect server configured (PREFECT_API_URL is unset); {START_HINT}")
    problem = server_problem(url)
    if problem is not None:
        raise UserError(
            f"the Prefect server at {url} is unreachable ({problem}); start it with "
            "`prefect server start` or point PREFECT_API_URL at a running one"
        )
    from deployments.doctor import PrefectTarget, auth_problem

    refused = auth_problem(url, PrefectTarget.from_prefect_settings())
    if refused is not None:
        raise UserError(refused)
    return url


def schedule_summary(deployment: RunnerDeployment) -> str:
    """'30-59/5 9 * * 1-5 | */5 10-15 * * 1-5 (America/New_York)', or 'ad hoc only'."""
    crons: list[str] = []
    zones: set[str] = set()
    for item in deployment.schedules or []:
        sched = item.schedule
        cron = getattr(sched, "cron", None)
        crons.append(str(cron) if cron is not None else str(sched))
        tz = getattr(sched, "timezone", None)
        if tz:
            zones.add(str(tz))
    if not crons:
        return "ad hoc only"
    zone = f" ({', '.join(sorted(zones))})" if zones else ""
    return " | ".join(crons) + zone


def served_table(deployments: list[RunnerDeployment], limit: int) -> Table:
    one_at_a_time = {e.name for e in CATALOG if e.one_at_a_time}
    table = Table(title=f"V6 deployments (at most {limit} flow runs at once)")
    table.add_column("deployment", no_wrap=True)
    table.add_column("schedule", overflow="fold")
    table.add_column("one at a time")
    for dep in deployments:
        table.add_row(
            f"{dep.flow_name}/{dep.name}",
            schedule_summary(dep),
            "yes" if dep.name in one_at_a_time else "no",
        )
    return table


def serve_all(settings: Settings, console: Console, *, pause_on_trip: bool = False) -> None:
    """Serve every catalog deployment until interrupted (SIGTERM/Ctrl-C pauses them).

    `pause_on_trip`: also install the automation that pauses trading_cycle on a
    CircuitTripped run (`deployments.automations`; a second layer only)."""
    url = require_server()
    if pause_on_trip:
        import asyncio

        from deployments.automations import AUTOMATION_NAME, ensure_pause_on_trip

        asyncio.run(ensure_pause_on_trip())
        console.print(
            f"automation '{AUTOMATION_NAME}' installed: a CircuitTripped run pauses "
            "trading_cycle (a serve restart un-pauses it; the breaker in the store still holds)"
        )
    deployments = build_deployments(settings)
    limit = settings.schedules.serve_process_limit
    console.print(served_table(deployments, limit))
    for dep in deployments:
        log.info("serving %s/%s: %s", dep.flow_name, dep.name, schedule_summary(dep))
    console.print(
        f"serving {len(deployments)} deployment(s) against {url}; holidays, half days and "
        "stale runs are skipped at run time by each flow's guard.\n"
        "Run one now: `v6 run FLOW --deployment` (or the UI's Run button). Stopping this "
        "process pauses the schedules; starting it again resumes them."
    )
    from prefect import serve

    serve(*deployments, limit=limit, print_starting_message=False)


__all__ = [
    "LOCAL_API_URL",
    "START_HINT",
    "configured_api_url",
    "require_server",
    "schedule_summary",
    "serve_all",
    "server_problem",
]
