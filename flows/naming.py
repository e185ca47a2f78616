"""Flow-run names and tags that say what a run is and how it ended, in the Prefect UI.

A name carries the market time the run acted on (the runtime's clock: simulated in the
demo and backtests, the wall clock in production), in New York time: `cycle 2026-03-03
10:35 ET`, not a random pair of words beside the wall-clock time it happened to start.
Tags name the outcome (`breaker:tripped`, `exits-only`, ...) so the UI can filter on it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from uuid import UUID

from prefect import get_client
from prefect.runtime import flow_run

from core.domain.timezones import MARKET_TZ
from core.risk.breaker import BreakerState, Gate
from core.runtime import current_runtime

log = logging.getLogger(f"v6.{__name__}")

OUTCOME_TAGS: dict[str, tuple[str, ...]] = {
    "CircuitTripped": ("breaker:tripped",),
    "CircuitOpen": ("breaker:open",),
    "ExitsOnly": ("exits-only",),
    "HalfOpenProbe": ("breaker:probe",),
    "BreakerUnavailable": ("breaker:unavailable",),
    "StoreCorrupt": ("store:corrupt", "breaker:tripped"),
    "Failed": ("failed",),
    "Skipped": ("skipped",),
}


def market_run_name(what: str) -> Callable[[], str]:
    """A `flow_run_name` callable: `what` and the runtime clock's time in New York."""

    def name() -> str:
        try:
            now = current_runtime().clock.now().astimezone(MARKET_TZ)
        except Exception as exc:  # a name must never stop a run; the run reports the cause
            log.warning("flow-run name without a time: %s", exc)
            return f"{what} (market time unknown)"
        return f"{what} {now:%Y-%m-%d %H:%M} ET"

    return name


def outcome_tags(outcome: str, gate: Gate | None = None) -> list[str]:
    """Tags for a run that ended `outcome` (a state name) under `gate`."""
    tags = [f"outcome:{outcome}", *OUTCOME_TAGS.get(outcome, ())]
    if gate is not None and gate.state is BreakerState.HALTED:
        tags.append("breaker:halted")
    return sorted(set(tags))


async def tag_run(tags: Iterable[str]) -> None:
    """Add `tags` to this flow run (kept beside the ones it was created with)."""
    run_id = flow_run.id
    new = set(tags)
    if not run_id or not new:
        return
    async with get_client() as client:
        run = await client.read_flow_run(UUID(run_id))
        await client.update_flow_run(UUID(run_id), tags=sorted(set(run.tags) | new))
