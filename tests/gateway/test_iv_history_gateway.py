"""IV history through the production path: IBBroker + ib_async + gateway simulator
(reqHistoricalData with whatToShow OPTION_IMPLIED_VOLATILITY) store exactly the rows the
in-process SimBroker stores, and a replay through the gateway writes nothing."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from gateway_world import make_exchange

from core.broker.ib import IBBroker
from core.broker.sim import SimBroker
from core.marketdata.iv_history import TABLE, backfill_iv_history, iv_stats
from core.sim.exchange import SimExchange
from core.sim.gateway.server import GatewayServer
from core.store import DeltaStore

pytestmark = pytest.mark.gateway
SYMBOLS = ["SPY", "QQQ", "IWM"]


async def test_backfill_through_the_gateway_equals_the_sim_broker(
    broker: IBBroker, exchange: SimExchange, gateway: GatewayServer, tmp_path: Path
) -> None:
    now = exchange.market.clock.now()
    via_ib = DeltaStore(tmp_path / "ib")
    got = await backfill_iv_history(broker, via_ib, SYMBOLS, now, days=260)
    assert got.errors == {} and got.written > 3 * 20

    twin = make_exchange()  # same settings, same clock: the same market
    assert twin.market.clock.now() == now
    sim = SimBroker(twin)
    await sim.connect()
    via_sim = DeltaStore(tmp_path / "sim")
    want = await backfill_iv_history(sim, via_sim, SYMBOLS, now, days=260)
    await sim.disconnect()

    assert got.fetched == want.fetched and got.written == want.written
    ib_rows = via_ib.read(TABLE).collect().sort("underlying", "date")
    sim_rows = via_sim.read(TABLE).collect().sort("underlying", "date")
    assert ib_rows.equals(sim_rows)
    assert iv_stats(via_ib, SYMBOLS, now).equals(iv_stats(via_sim, SYMBOLS, now))

    versions = len(via_ib.history(TABLE))
    again = await backfill_iv_history(broker, via_ib, SYMBOLS, now, days=260)
    assert again.written == 0 and again.version is None
    assert len(via_ib.history(TABLE)) == versions
    assert via_ib.read(TABLE).collect().sort("underlying", "date").equals(ib_rows)
    assert set(ib_rows.get_column("source")) == {"broker_history"}
    assert ib_rows.filter(pl.col("underlying") == "SPY").height == got.fetched["SPY"]
