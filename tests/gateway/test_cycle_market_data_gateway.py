"""One trading cycle (`run_trading_cycle`, no Prefect) over IBBroker + ib_async against
the gateway simulator, on the market data a real account gets: delayed quotes refuse
entries (unless `broker.allow_entries_on_delayed_data`) and say so in the summary;
quotes IB withholds (entitlement errors) are counted by the breaker's data-quality
trigger and the summary names the fix."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from gateway_world import broker_settings, make_exchange

from core.broker.ib import IBBroker
from core.config import MarketDataType, Settings
from core.cycle import run_trading_cycle
from core.cycle.summary import artifacts_for
from core.domain import SecType
from core.risk.breaker import Breaker, BreakerState
from core.runtime import Runtime
from core.sim.exchange import SimExchange
from core.sim.gateway.server import GatewayServer
from core.store import DeltaStore

pytestmark = pytest.mark.gateway


@pytest.fixture
def exchange() -> SimExchange:
    return make_exchange()


@pytest.fixture
async def paper(exchange: SimExchange) -> AsyncIterator[GatewayServer]:
    """A paper account without real-time subscriptions (IB's default)."""
    async with GatewayServer(exchange) as gw:
        yield gw
    assert gw.protocol_errors == [], gw.protocol_errors


def runtime(gw: GatewayServer, ex: SimExchange, root: Path, **broker: Any) -> Runtime:
    settings = Settings(
        storage={"root": str(root)},
        broker=broker_settings(gw, max_messages_per_s=0, **broker),
        universe={"underlyings": ["SPY"]},
        strategies={
            "enabled": ["iron_condor"],
            "min_score": 0.0,
            "chain_strike_band_pct": 8.0,
            "fill_timeout_s": 1.0,
            "reprice_steps": 0,
            "fill_poll_s": 0.5,
        },
        breaker={"reducing_mode": False},
    )
    return Runtime(
        settings,
        DeltaStore.from_settings(settings),
        ex.market.clock,
        lambda: IBBroker(settings.broker, clock=ex.market.clock),
    )


def bag_orders(ex: SimExchange) -> int:
    states = ex.open_orders() + ex.completed_orders()
    return sum(1 for s in states if s.contract.sec_type is SecType.BAG)


async def test_delayed_quotes_refuse_entries_and_the_summary_says_so(
    paper: GatewayServer, exchange: SimExchange, tmp_path: Path
) -> None:
    rt = runtime(paper, exchange, tmp_path / "data", market_data_type=MarketDataType.DELAYED)
    run = await run_trading_cycle(rt, "cycle-delayed")
    assert run.outcome.name == "Completed", run.outcome.message
    assert run.report is not None and run.report.market is not None
    view = run.report.market
    assert view.delayed == view.quoted > 0 and view.delay_s == 900.0 and not view.withheld
    assert "entry-candidates" not in run.report.steps and bag_orders(exchange) == 0
    skipped = run.report.entries_skipped or ""
    assert "entries refused on delayed data" in skipped
    assert "broker.allow_entries_on_delayed_data = true" in skipped
    summary = run.summary()
    assert "delayed" in summary["market_data"] and "15 min" in summary["market_data"]
    page = artifacts_for(run).markdown
    assert "Market data quality" in page and "entries refused on delayed data" in page
    assert run.health is not None and run.health.data_quality_failures == 0


async def test_allowed_delayed_data_lets_entries_go_out(
    paper: GatewayServer, exchange: SimExchange, tmp_path: Path
) -> None:
    rt = runtime(
        paper,
        exchange,
        tmp_path / "data",
        market_data_type=MarketDataType.DELAYED,
        allow_entries_on_delayed_data=True,
    )
    run = await run_trading_cycle(rt, "cycle-delayed-allowed")
    assert run.report is not None and run.report.entries_skipped is None
    assert "execute-entries" in run.report.steps, run.report.failure
    assert bag_orders(exchange) >= 1
    assert "delayed" in run.summary()["market_data"]


async def test_withheld_quotes_trip_the_data_quality_trigger_and_name_the_fix(
    exchange: SimExchange, tmp_path: Path
) -> None:
    async with GatewayServer(exchange, realtime_data=True) as gw:
        gw.entitlement_error(10197)  # someone logged in to TWS with the same user
        rt = runtime(gw, exchange, tmp_path / "data", market_data_type=MarketDataType.LIVE)
        run = await run_trading_cycle(rt, "cycle-10197")
    assert run.report is not None and run.report.market is not None
    view = run.report.market
    assert len(view.withheld) == view.quoted > 0
    assert all("close the other session" in w for w in view.withheld)
    assert run.health is not None
    assert run.health.data_quality_failures == run.health.data_points == view.quoted
    assert run.outcome.name == "CircuitTripped", run.outcome.message
    assert "data_quality" in run.outcome.message
    breaker = Breaker(rt.store, rt.settings.breaker, rt.clock)
    assert breaker.state() is BreakerState.OPEN
    assert "close the other session" in artifacts_for(run).markdown
