"""Shared helpers for tests that run IBBroker against the gateway simulator
(tests/gateway and tests/contract): a fresh SimExchange, BrokerSettings for a gateway,
and NaN-tolerant dataclass equality."""

from __future__ import annotations

import math
from dataclasses import fields
from datetime import timedelta
from typing import Any

from v6.core.config import BrokerKind, BrokerSettings, MarketDataType, Settings
from v6.core.sim.exchange import SimExchange, build_exchange
from v6.core.sim.gateway.server import GatewayServer


def make_exchange(**settings: Any) -> SimExchange:
    ex = build_exchange(Settings(**settings))
    ex.market.clock.advance(timedelta(hours=1))
    return ex


def broker_settings(gw: GatewayServer, **overrides: Any) -> BrokerSettings:
    values: dict[str, Any] = {
        "kind": BrokerKind.IB,
        "host": "127.0.0.1",
        "port": gw.port,
        "client_id_min": 100,
        "client_id_max": 109,
        "market_data_type": MarketDataType.LIVE,
        "connect_timeout_s": 5.0,
        "request_timeout_s": 5.0,
        "snapshot_timeout_s": 2.0,
        "reconnect_backoff_s": 0.05,
        "reconnect_max_attempts": 5,
    }
    values.update(overrides)
    return BrokerSettings(**values)


def same(a: object, b: object) -> bool:
    """Dataclass equality where NaN equals NaN (quotes carry NaN for 'unknown')."""
    if type(a) is not type(b):
        return False
    for f in fields(a):  # type: ignore[arg-type]
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
            continue
        if x != y:
            return False
    return True
