"""Fills are matched to their order by identity, whatever the host clock says."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl
from exec_world import make_world

from core.clock import SimClock
from core.execution.executor import ComboExecutor
from core.execution.ladder import sim_waiter
from core.execution.results import ExecStatus


@dataclass
class OffClock:
    """The host's clock, off from the broker's by `by` (either way)."""

    broker: SimClock
    by: timedelta

    def now(self) -> datetime:
        return self.broker.now() + self.by


async def test_fills_are_booked_when_the_host_clock_is_hours_off() -> None:
    for by in (timedelta(hours=3), -timedelta(hours=3)):
        world = await make_world()
        assert isinstance(world.clock, SimClock)
        host = OffClock(world.clock, by)
        ex = ComboExecutor(
            world.broker,
            world.store,
            host,
            world.settings,
            net_liquidation=world.net_liquidation,
            wait=sim_waiter(world.clock),
        )
        result = await ex.execute_entry(await world.candidate())
        assert result.status is ExecStatus.FILLED, (by, result.message)
        fills = world.store.read("fills").collect()
        assert fills.height == 4  # every leg booked, found by the order's ref
        strategies = world.store.read("strategies").collect()
        assert strategies.get_column("status").to_list() == ["OPEN"], by
        assert fills.filter(pl.col("order_ref") == "").height == 0
