"""Optional Prefect automation: pause the trading_cycle deployment when a run trips the breaker.

A second layer only. The circuit breaker itself lives in V6's Delta store (`risk_state`):
every trading_cycle run checks it first, so a tripped breaker stops trading whether or not
this automation exists. The automation adds a visible pause in the Prefect UI, but it is
asynchronous (it reacts to the `prefect.flow-run.CircuitTripped` event about a second
later), and restarting `v6 serve` un-pauses every deployment it serves: never rely on it
to keep trading stopped. Resume the deployment in the UI (or restart serve) once the
breaker is reset with `v6 breaker reset`.

Install it with `v6 serve --pause-on-trip` (idempotent: an automation of the same name is
replaced) or call `ensure_pause_on_trip()` against the server.
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from prefect.automations import Automation, EventTrigger, PauseDeployment, Posture
from prefect.client.orchestration import get_client

from core.risk.breaker import CIRCUIT_TRIPPED

AUTOMATION_NAME = "v6-pause-trading-on-circuit-trip"
TRADING_FLOW = "trading_cycle"
TRIP_EVENT = f"prefect.flow-run.{CIRCUIT_TRIPPED}"


def pause_on_trip_automation() -> Automation:
    """CircuitTripped on a trading_cycle run -> pause the deployment that ran it."""
    return Automation(
        name=AUTOMATION_NAME,
        description=(
            "Second layer only: pauses the trading_cycle deployment when a run ends "
            "CircuitTripped. The durable breaker is V6's risk_state table; a serve restart "
            "un-pauses this deployment."
        ),
        enabled=True,
        trigger=EventTrigger(
            expect={TRIP_EVENT},
            match_related={"prefect.resource.role": "flow", "prefect.resource.name": TRADING_FLOW},
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[PauseDeployment(source="inferred")],
    )


async def ensure_pause_on_trip() -> UUID:
    """Create the automation, replacing any of the same name; returns its id."""
    async with get_client() as client:
        for old in await client.read_automations_by_name(AUTOMATION_NAME):
            await client.delete_automation(old.id)
    created = await pause_on_trip_automation().acreate()
    if created.id is None:
        raise RuntimeError(f"the Prefect server did not return an id for {AUTOMATION_NAME}")
    return created.id


__all__ = [
    "AUTOMATION_NAME",
    "TRIP_EVENT",
    "ensure_pause_on_trip",
    "pause_on_trip_automation",
]
