"""Final states shared by V6 flows, so the Prefect UI tells the story at a glance."""

from __future__ import annotations

from prefect.states import Cancelled, Completed, Failed, State

from core.risk.breaker import OutcomeType, RunOutcome
from core.run_guard import Skip


def skipped(skip: Skip) -> State:
    """A run that stood down on purpose: Completed, named for the reason (Stale, MarketClosed)."""
    return Completed(name=skip.name, message=skip.message)


def from_outcome(outcome: RunOutcome, data: object = None) -> State:
    """The breaker's verdict as the run's final state (CircuitTripped, CircuitOpen, ...)."""
    match outcome.type:
        case OutcomeType.COMPLETED:
            return Completed(name=outcome.name, message=outcome.message, data=data)
        case OutcomeType.CANCELLED:
            return Cancelled(name=outcome.name, message=outcome.message, data=data)
        case OutcomeType.FAILED:
            return Failed(name=outcome.name, message=outcome.message, data=data)
