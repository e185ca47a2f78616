"""Fixtures for simulator tests: a calm market on a SimClock at a known session."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from v6.core.clock import SimClock
from v6.core.sim import MarketSimulator, RegimeSchedule, SimExchange

# Monday 2026-03-02, 09:31 ET (EST, UTC-5): one minute after the regular open
OPEN = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)


def make_market(
    clock: SimClock, *, regime: str | None = "calm", history: int = 3, **kw: object
) -> MarketSimulator:
    schedule = kw.pop("regimes", None) or (
        RegimeSchedule.fixed(regime) if regime else RegimeSchedule(seed=7)
    )
    return MarketSimulator(clock, history_sessions=history, regimes=schedule, **kw)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> SimClock:
    return SimClock(OPEN.replace(minute=31))


@pytest.fixture
def market(clock: SimClock) -> MarketSimulator:
    return make_market(clock)


@pytest.fixture
def exchange(market: MarketSimulator) -> SimExchange:
    return SimExchange(market)
