"""Fixtures for IBBroker + ib_async against the gateway simulator on loopback.

Every gateway is started on 127.0.0.1 port 0 (ephemeral) in-process, over one fresh
SimExchange whose clock stands one hour into the 2026-03-02 session (market open, an
hour of bars behind it). Every test fails if the simulator saw a malformed request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from gateway_world import broker_settings, make_exchange

from core.broker.ib import IBBroker
from core.sim.exchange import SimExchange
from core.sim.gateway.server import GatewayServer


@pytest.fixture
def exchange() -> SimExchange:
    return make_exchange()


@pytest.fixture
async def gateway(exchange: SimExchange) -> AsyncIterator[GatewayServer]:
    gw = GatewayServer(exchange, realtime_data=True)
    await gw.start()
    try:
        yield gw
    finally:
        await gw.close()
    assert gw.protocol_errors == [], gw.protocol_errors


@pytest.fixture
async def broker(gateway: GatewayServer, exchange: SimExchange) -> AsyncIterator[IBBroker]:
    b = IBBroker(broker_settings(gateway), clock=exchange.market.clock)
    await b.connect()
    try:
        yield b
    finally:
        await b.disconnect()
