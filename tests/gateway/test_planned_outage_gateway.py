"""IB's nightly reset and the gateway's scheduled restart: while the gateway refuses
connections, a trading cycle inside the configured planned-outage window ends
BrokerUnavailable without telling the breaker; the same outage outside the window is a
failed cycle the breaker counts. IBBroker + ib_async over TCP against the simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, time
from pathlib import Path
from typing import Any

import pytest
from gateway_world import broker_settings, make_exchange

from core.broker.ib import IBBroker
from core.config import Settings
from core.cycle import run_trading_cycle
from core.cycle.run import BROKER_UNAVAILABLE
from core.domain.timezones import MARKET_TZ
from core.risk.breaker import Breaker, BreakerState, OutcomeType
from core.runtime import Runtime
from core.sim.exchange import SimExchange
from core.sim.gateway.server import GatewayServer
from core.store import DeltaStore

pytestmark = pytest.mark.gateway


@pytest.fixture
def exchange() -> SimExchange:
    return make_exchange()


@pytest.fixture
async def gw(exchange: SimExchange) -> AsyncIterator[GatewayServer]:
    async with GatewayServer(exchange, realtime_data=True) as g:
        yield g
    assert g.protocol_errors == [], g.protocol_errors


def runtime(gw: GatewayServer, ex: SimExchange, root: Path, **broker: Any) -> Runtime:
    settings = Settings(
        storage={"root": str(root)},
        broker=broker_settings(gw, max_messages_per_s=0, **broker),
        universe={"underlyings": ["SPY"]},
        strategies={"enabled": []},
        breaker={"reducing_mode": False},
    )
    return Runtime(
        settings,
        DeltaStore.from_settings(settings),
        ex.market.clock,
        lambda: IBBroker(settings.broker, clock=ex.market.clock),
    )


def health_rows(rt: Runtime) -> int:
    store = rt.store
    return store.read("cycle_health").collect().height if store.exists("cycle_health") else 0


async def test_restart_inside_the_planned_window_is_broker_unavailable_not_a_trip(
    gw: GatewayServer, exchange: SimExchange, tmp_path: Path
) -> None:
    now = exchange.market.clock.now().astimezone(MARKET_TZ)
    assert time(10, 0) <= now.time() < time(11, 0)  # the window below holds the clock
    window = {"planned_outage_start": time(10, 0), "planned_outage_end": time(11, 0)}
    rt = runtime(gw, exchange, tmp_path / "data", **window)
    gw.go_down()
    run = await run_trading_cycle(rt, "cycle-in-window")
    assert run.outcome.type is OutcomeType.COMPLETED
    assert run.outcome.name == BROKER_UNAVAILABLE, run.outcome.message
    assert "planned outage window 10:00-11:00" in run.outcome.message
    assert "cannot connect to IB" in run.outcome.message
    assert run.transition is None and health_rows(rt) == 0  # the breaker was not told
    assert Breaker(rt.store, rt.settings.breaker, rt.clock).state() is BreakerState.CLOSED
    await gw.come_up()  # the restart is over: the next run trades as usual
    again = await run_trading_cycle(rt, "cycle-after-restart")
    assert again.outcome.name == "Completed", again.outcome.message
    assert health_rows(rt) == 1


async def test_the_same_outage_outside_the_window_counts_against_the_breaker(
    gw: GatewayServer, exchange: SimExchange, tmp_path: Path
) -> None:
    rt = runtime(gw, exchange, tmp_path / "data")  # IB's default window: 23:45-00:45
    assert not rt.settings.broker.in_planned_outage(exchange.market.clock.now())
    gw.go_down()
    run = await run_trading_cycle(rt, "cycle-outage")
    assert run.outcome.type is OutcomeType.FAILED, run.outcome
    assert run.outcome.name != BROKER_UNAVAILABLE
    assert run.report is not None and run.report.broker_unreachable
    assert run.health is not None and not run.health.ok
    assert health_rows(rt) == 1  # recorded: consecutive failures will trip it
    await gw.come_up()


def at(h: int, m: int) -> datetime:
    return datetime(2026, 3, 2, h, m, tzinfo=MARKET_TZ)


def test_the_window_wraps_midnight() -> None:
    b = Settings().broker
    assert b.in_planned_outage(at(23, 50)) and b.in_planned_outage(at(0, 30))
    assert not b.in_planned_outage(at(0, 45)) and not b.in_planned_outage(at(23, 44))
    off = b.model_copy(update={"planned_outage_end": b.planned_outage_start})
    assert not off.in_planned_outage(at(23, 50))
