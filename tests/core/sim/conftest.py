"""Fixtures for simulator tests: a calm market on a SimClock at a known session."""

from __future__ import annotations

import pytest
from sim_world import OPEN, make_market

from core.clock import SimClock
from core.sim import MarketSimulator, SimExchange


@pytest.fixture
def clock() -> SimClock:
    return SimClock(OPEN.replace(minute=31))


@pytest.fixture
def market(clock: SimClock) -> MarketSimulator:
    return make_market(clock)


@pytest.fixture
def exchange(market: MarketSimulator) -> SimExchange:
    return SimExchange(market)
