"""Every V6 flow as a deployment: where it lives, when it runs, how many at once.

One table, so `v6 serve`, `v6 run`, `v6 status` and prefect.yaml agree on names.
Flows are imported lazily: the CLI starts fast and a broken flow module only breaks
the commands that need it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from prefect import Flow
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import RunnerDeployment
from prefect.types.entrypoint import EntrypointType

from core.config import Settings
from deployments.installation import home_tag
from deployments.schedules import Cadence, schedules_for

# The checkout: the flows' files live at CHECKOUT/flows/NAME.py.
CHECKOUT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class FlowEntry:
    name: str  # flow name == deployment name
    target: str  # Prefect's file entrypoint, relative to the checkout: "flows/x.py:flow"
    cadence: Cadence
    one_at_a_time: bool
    description: str

    @property
    def module(self) -> str:
        return self.target.split(":")[0].removesuffix(".py").replace("/", ".")

    @property
    def attribute(self) -> str:
        return self.target.split(":")[1]

    def absolute_entrypoint(self) -> str:
        """The entrypoint with the checkout's absolute path: loads from any working dir."""
        return f"{CHECKOUT / self.target}"

    def load(self) -> Flow:
        flow = getattr(importlib.import_module(self.module), self.attribute)
        if not isinstance(flow, Flow):
            raise TypeError(f"{self.target} is not a Prefect flow")
        return flow


CATALOG: tuple[FlowEntry, ...] = (
    FlowEntry(
        name="futures_collection",
        target="flows/futures_collection.py:futures_collection",
        cadence=Cadence.FUTURES_SESSION,
        one_at_a_time=True,
        description="ES/NQ/RTY bars and quotes every minute of the Globex session; heals gaps.",
    ),
    FlowEntry(
        name="position_reconciliation",
        target="flows/position_reconciliation.py:position_reconciliation",
        cadence=Cadence.REGULAR_HOURS_RECONCILE,
        one_at_a_time=True,
        description="Every 5 minutes in market hours: the book must agree with the broker.",
    ),
    FlowEntry(
        name="trading_cycle",
        target="flows/trading_cycle.py:trading_cycle",
        cadence=Cadence.REGULAR_HOURS_TRADING,
        one_at_a_time=True,
        description="Every 5 minutes in market hours, under the circuit breaker: reconcile, "
        "exit rules and exits, then entries within the portfolio limits.",
    ),
    FlowEntry(
        name="maintenance",
        target="flows/maintenance.py:maintenance",
        cadence=Cadence.NIGHTLY_MAINTENANCE,
        one_at_a_time=True,
        description="Nightly Delta compaction, checkpoint and vacuum within the retention.",
    ),
    FlowEntry(
        name="variance_analysis",
        target="flows/variance_analysis.py:variance_analysis",
        cadence=Cadence.NIGHTLY_ANALYSIS,
        one_at_a_time=True,
        description="Nightly: is live trading still behaving like the backtest said it would?",
    ),
    FlowEntry(
        name="backtest",
        target="flows/backtest.py:backtest",
        cadence=Cadence.AD_HOC,
        one_at_a_time=True,
        description="Ad hoc: V6's own cycle over simulated sessions; the historical side.",
    ),
    FlowEntry(
        name="circuit_breaker_reset",
        target="flows/circuit_breaker_reset.py:circuit_breaker_reset",
        cadence=Cadence.AD_HOC,
        one_at_a_time=True,
        description="Ad hoc, audited: reset (or trip) the circuit breaker with a reason.",
    ),
    FlowEntry(
        name="halt",
        target="flows/halt.py:halt",
        cadence=Cadence.AD_HOC,
        one_at_a_time=True,
        description="Emergency, audited: stop entries until a person resets (exits run unless "
        "exits=false); no cool-down lifts it.",
    ),
    FlowEntry(
        name="cancel_all",
        target="flows/cancel_all.py:cancel_all",
        cadence=Cadence.AD_HOC,
        one_at_a_time=True,
        description="Emergency: cancel every open V6 order at the broker, each confirmed or "
        "reported.",
    ),
    FlowEntry(
        name="flatten",
        target="flows/flatten.py:flatten",
        cadence=Cadence.AD_HOC,
        one_at_a_time=True,
        description="Emergency, audited: halt, then close every open strategy as combo orders "
        "bounded by natural (confirm=true).",
    ),
)


def entry(name: str) -> FlowEntry:
    for item in CATALOG:
        if item.name == name:
            return item
    known = ", ".join(e.name for e in CATALOG)
    raise KeyError(f"unknown flow '{name}'; known flows: {known}")


def deployment_for(item: FlowEntry, settings: Settings) -> RunnerDeployment:
    limit = (
        ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)
        if item.one_at_a_time
        else None
    )
    deployment = item.load().to_deployment(
        name=item.name,
        schedules=schedules_for(item.cadence, settings.schedules),
        concurrency_limit=limit,
        description=item.description,
        tags=["v6", item.cadence.value, home_tag(settings)],
        entrypoint_type=EntrypointType.FILE_PATH,
    )
    # to_deployment is sync-compatible: called from sync code it returns the object itself.
    if not isinstance(deployment, RunnerDeployment):
        raise TypeError("deployment_for must be called from synchronous code")
    # Prefect would store the file relative to the cwd; served runs inherit `v6 serve`'s
    # cwd (a V6 home, not necessarily the checkout), so give the checkout's absolute path.
    deployment.entrypoint = item.absolute_entrypoint()
    return deployment


def build_deployments(settings: Settings) -> list[RunnerDeployment]:
    return [deployment_for(item, settings) for item in CATALOG]
