"""Final states shared by V6 flows, so the Prefect UI tells the story at a glance."""

from __future__ import annotations

from prefect.states import Completed, State

from v6.core.run_guard import Skip


def skipped(skip: Skip) -> State:
    """A run that stood down on purpose: Completed, named for the reason (Stale, MarketClosed)."""
    return Completed(name=skip.name, message=skip.message)
