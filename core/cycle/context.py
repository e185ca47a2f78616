"""What every step of a trading cycle works with, and how a caller wraps the steps.

`Wrap` is the one seam between the cycle and its orchestrator: `wrap(name, step)` returns
a callable with the step's signature. The backtest and chaos runs pass `identity` (plain
Python, no overhead); the Prefect flow turns each step into a task with the right retry
policy (`tasks.cycle.prefect_wrap`). Either way the composition is the same code.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl

from core.book.ledger import Book
from core.broker.base import Broker
from core.clock import Clock
from core.config import Settings
from core.cycle.broker import CycleBroker, cycle_registry
from core.execution.executor import ComboExecutor
from core.execution.ladder import Waiter
from core.risk.breaker import HEALTH_TABLE, Gate
from core.store.delta import DeltaStore

Step = Callable[..., Awaitable[Any]]
Wrap = Callable[[str, Step], Step]


def identity(name: str, step: Step) -> Step:
    """Run the step as is (backtests, chaos runs, core tests)."""
    return step


@dataclass
class CycleContext:
    """One cycle's world. `broker` is the cycle's view of the broker (slots, tracking)."""

    settings: Settings
    store: DeltaStore
    broker: CycleBroker
    clock: Clock
    run_id: str
    gate: Gate
    exits_only: bool = False
    wait: Waiter | None = None  # the executor's wait; None = simulated or real by the clock
    account: str = ""  # the account in use, set by the reconcile step
    net_liquidation: float = math.nan  # USD, set by the reconcile step (hard caps scale)
    _executor: ComboExecutor | None = field(default=None, repr=False)

    @classmethod
    def create(
        cls,
        settings: Settings,
        store: DeltaStore,
        clock: Clock,
        broker: Broker,
        run_id: str,
        gate: Gate,
        *,
        exits_only: bool = False,
        wait: Waiter | None = None,
    ) -> CycleContext:
        """Wrap `broker` (unconnected) for the cycle; the reconcile step connects it."""
        if not run_id.strip():
            raise ValueError("CycleContext: run_id must be a non-empty string")
        wrapped = CycleBroker(
            broker,
            cycle_registry(settings, owner=f"trading-cycle:{run_id}"),
            clock,
            last_connected_at=last_connected_at(store),
        )
        return cls(settings, store, wrapped, clock, run_id, gate, exits_only, wait)

    @property
    def entries_allowed(self) -> bool:
        return self.gate.entries_allowed and not self.exits_only

    def book(self) -> Book:
        return Book(self.store, self.clock, self.account)

    def executor(self) -> ComboExecutor:
        """One executor per cycle (it carries the book with the account in use)."""
        if self._executor is None:
            self._executor = ComboExecutor(
                self.broker,
                self.store,
                self.clock,
                self.settings,
                net_liquidation=self.net_liquidation,
                wait=self.wait,
                account=self.account,
            )
        return self._executor

    def now(self) -> datetime:
        return self.clock.now()


def last_connected_at(store: DeltaStore) -> datetime | None:
    """When a previous cycle last had the broker connected (its `cycle_health` row says 0
    seconds disconnected); None before the first cycle."""
    if not store.exists(HEALTH_TABLE):
        return None
    got = (
        store.read(HEALTH_TABLE, where=pl.col("disconnected_s") == 0.0, columns=["ts"])
        .select(pl.col("ts").max())
        .collect()
    )
    value = got.item() if got.height else None
    return value if isinstance(value, datetime) else None


__all__ = ["CycleContext", "Step", "Wrap", "identity", "last_connected_at"]
