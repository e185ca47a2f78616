"""Every V6 flow as a deployment: where it lives, when it runs, how many at once.

One table, so `v6 serve`, `v6 run`, `v6 status` and prefect.yaml agree on names.
Flows are imported lazily: the CLI starts fast and a broken flow module only breaks
the commands that need it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from prefect import Flow
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import RunnerDeployment
from prefect.types.entrypoint import EntrypointType

from core.config import Settings
from deployments.schedules import Cadence, schedules_for


@dataclass(frozen=True)
class FlowEntry:
    name: str  # flow name == deployment name
    target: str  # "module:attribute"
    cadence: Cadence
    one_at_a_time: bool
    description: str

    def load(self) -> Flow:
        module, attr = self.target.split(":")
        flow = getattr(importlib.import_module(module), attr)
        if not isinstance(flow, Flow):
            raise TypeError(f"{self.target} is not a Prefect flow")
        return flow


CATALOG: tuple[FlowEntry, ...] = (
    FlowEntry(
        name="futures_collection",
        target="flows.futures_collection:futures_collection",
        cadence=Cadence.FUTURES_SESSION,
        one_at_a_time=True,
        description="ES/NQ/RTY bars and quotes every minute of the Globex session; heals gaps.",
    ),
    FlowEntry(
        name="position_reconciliation",
        target="flows.position_reconciliation:position_reconciliation",
        cadence=Cadence.REGULAR_HOURS_RECONCILE,
        one_at_a_time=True,
        description="Every 5 minutes in market hours: the book must agree with the broker.",
    ),
    FlowEntry(
        name="trading_cycle",
        target="flows.trading_cycle:trading_cycle",
        cadence=Cadence.REGULAR_HOURS_TRADING,
        one_at_a_time=True,
        description="Every 5 minutes in market hours, under the circuit breaker: reconcile, "
        "exit rules and exits, then entries within the portfolio limits.",
    ),
    FlowEntry(
        name="maintenance",
        target="flows.maintenance:maintenance",
        cadence=Cadence.NIGHTLY_MAINTENANCE,
        one_at_a_time=True,
        description="Nightly Delta compaction, checkpoint and vacuum within the retention.",
    ),
    FlowEntry(
        name="variance_analysis",
        target="flows.variance_analysis:variance_analysis",
        cadence=Cadence.NIGHTLY_ANALYSIS,
        one_at_a_time=True,
        description="Nightly: is live trading still behaving like the backtest said it would?",
    ),
    FlowEntry(
        name="backtest",
        target="flows.backtest:backtest",
        cadence=Cadence.AD_HOC,
        one_at_a_time=True,
        description="Ad hoc: V6's own cycle over simulated sessions; the historical side.",
    ),
    FlowEntry(
        name="circuit_breaker_reset",
        target="flows.circuit_breaker_reset:circuit_breaker_reset",
        cadence=Cadence.AD_HOC,
        one_at_a_time=True,
        description="Ad hoc, audited: reset (or trip) the circuit breaker with a reason.",
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
        tags=["v6", item.cadence.value],
        # "package.module.flow", not a path relative to the cwd: runs load the installed
        # package wherever `v6 serve` (or a worker) was started.
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    # to_deployment is sync-compatible: called from sync code it returns the object itself.
    if not isinstance(deployment, RunnerDeployment):
        raise TypeError("deployment_for must be called from synchronous code")
    return deployment


def build_deployments(settings: Settings) -> list[RunnerDeployment]:
    return [deployment_for(item, settings) for item in CATALOG]
