"""One trading cycle per V6 home: two trading_cycle flow runs at once on one store, the
second stands down as Skipped without touching the broker; a lease left by a killed holder
expires and the next run takes it over."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from gateway_world import make_exchange
from prefect.states import State

from core.broker.base import Broker
from core.broker.sim import SimBroker
from core.config import Settings
from core.cycle.lease import CycleLease
from core.runtime import Runtime, use_runtime
from core.sim.exchange import SimExchange
from core.store import DeltaStore
from flows.trading_cycle import trading_cycle

TTL = timedelta(seconds=300)


class GatedBroker(SimBroker):
    """A broker whose connect waits until the test lets it go (the cycle holds the lease)."""

    entered: asyncio.Event
    go: asyncio.Event

    async def connect(self) -> None:
        self.entered.set()
        await self.go.wait()
        await super().connect()


class Home:
    """One V6 home: a store directory and a simulated exchange; counts brokers built."""

    def __init__(self, root: Path) -> None:
        self.exchange: SimExchange = make_exchange()
        self.root = root
        self.brokers = 0
        self.gated: GatedBroker | None = None

    def runtime(self) -> Runtime:
        settings = Settings(storage={"root": str(self.root)}, cycle={"lease_ttl_s": TTL.seconds})

        def factory() -> Broker:
            self.brokers += 1
            if self.gated is not None:
                broker, self.gated = self.gated, None
                return broker
            return SimBroker(self.exchange)

        return Runtime(settings, DeltaStore(str(self.root)), self.exchange.market.clock, factory)

    async def run(self) -> State:
        with use_runtime(self.runtime()):
            state = await trading_cycle(exits_only=True, guard=False, return_state=True)
        assert isinstance(state, State)
        return state

    def lease_log(self) -> pl.DataFrame:
        return DeltaStore(str(self.root)).read("cycle_lease").collect().sort("seq")


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path / "data")


async def test_a_second_cycle_at_the_same_time_is_skipped(home: Home) -> None:
    gated = GatedBroker(home.exchange)
    gated.entered, gated.go = asyncio.Event(), asyncio.Event()
    home.gated = gated
    first = asyncio.create_task(home.run())
    await asyncio.wait_for(gated.entered.wait(), timeout=60)  # inside the cycle, lease held

    second = await home.run()
    assert second.is_completed() and second.name == "Skipped", (second.name, second.message)
    assert home.brokers == 1  # the second run never built a broker
    holder = home.lease_log().row(0, named=True)
    assert str(second.message) == (
        f"another cycle running (run {holder['holder']} since {holder['since'].isoformat()})"
    )

    gated.go.set()
    done = await asyncio.wait_for(first, timeout=120)
    assert done.is_completed() and done.name != "Skipped", (done.name, done.message)
    assert holder["holder"] == f"cycle-{done.state_details.flow_run_id}"
    events = home.lease_log().get_column("event").to_list()
    assert events[0] == "acquire" and events[-1] == "release"

    third = await home.run()  # the lease was released: the next cycle runs
    assert third.is_completed() and third.name != "Skipped", (third.name, third.message)


async def test_a_live_lease_from_another_machine_skips_the_run(home: Home) -> None:
    store = DeltaStore(str(home.root))
    CycleLease(store, TTL).acquire("cycle-on-worker-2")
    state = await home.run()
    assert state.name == "Skipped" and "run cycle-on-worker-2 since" in str(state.message)
    assert home.brokers == 0


async def test_a_killed_holders_lease_expires_and_the_next_cycle_runs(home: Home) -> None:
    store = DeltaStore(str(home.root))
    killed_at = datetime.now(UTC) - TTL - timedelta(seconds=5)
    CycleLease(store, TTL, lambda: killed_at).acquire("cycle-killed")  # then kill -9

    state = await home.run()
    assert state.is_completed() and state.name != "Skipped", (state.name, state.message)
    assert home.brokers == 1
    log = home.lease_log()
    assert log.get_column("event").to_list()[:2] == ["acquire", "acquire"]
    assert "took over from cycle-killed" in log.item(1, "detail")
    assert log.get_column("event").to_list()[-1] == "release"
