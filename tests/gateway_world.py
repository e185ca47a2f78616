"""Shared helpers for tests that run IBBroker against the gateway simulator
(tests/gateway and tests/contract): a fresh SimExchange, BrokerSettings for a gateway,
and NaN-tolerant dataclass equality."""

from __future__ import annotations

import math
from dataclasses import fields
from datetime import timedelta
from typing import Any

from core.config import BrokerSettings, Settings
from core.domain import ComboLeg, Contract
from core.sim.exchange import SimExchange, build_exchange
from core.sim.gateway.client import simulator_broker_settings
from core.sim.gateway.server import GatewayServer


def make_exchange(**settings: Any) -> SimExchange:
    ex = build_exchange(Settings(**settings))
    ex.market.clock.advance(timedelta(hours=1))
    return ex


def broker_settings(gw: GatewayServer, **overrides: Any) -> BrokerSettings:
    """The production path's settings for `gw` (`simulator_broker_settings`), with what these
    tests pin: a small clientId range, 5 s requests, and IB's real pacing (tests that want
    none pass `max_messages_per_s=0`)."""
    values: dict[str, Any] = {
        "client_id_min": 100,
        "client_id_max": 109,
        "request_timeout_s": 5.0,
        "reconnect_max_attempts": 5,
        "max_messages_per_s": 45,
    }
    values.update(overrides)
    port = values.pop("port", gw.port)  # a live port, to test the guard
    return simulator_broker_settings(BrokerSettings(), port, **values)


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


def put_spread(ex: SimExchange) -> tuple[Contract, Contract, Contract]:
    """Two listed SPY puts ~5% and ~6% out of the money, and the put-spread combo."""
    chain = ex.option_chains("SPY")[0]
    expiry = chain.expirations[4]
    spot = ex.market.price("SPY")
    strikes = sorted(chain.strikes, key=lambda k: abs(k - spot * 0.95))
    short_k = strikes[0]
    long_k = max(k for k in chain.strikes if k <= short_k - 5)
    short = ex.qualify(Contract.option("SPY", expiry, short_k, "P"))
    long = ex.qualify(Contract.option("SPY", expiry, long_k, "P"))
    assert short is not None and long is not None
    bag = Contract.combo(
        "SPY", [ComboLeg(short.con_id, 1, "SELL"), ComboLeg(long.con_id, 1, "BUY")]
    )
    return short, long, bag
