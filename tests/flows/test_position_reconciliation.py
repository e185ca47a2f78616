"""The position_reconciliation flow on a temp Delta store, the broker a SimBroker over the
simulated exchange: faults before the run, book equal to the broker after it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from reconcile_world import SimWorld, make_exchange

from core.broker.base import BrokerError, ErrorClass
from core.broker.sim import SimBroker
from core.config import load_settings
from core.domain import Contract
from core.runtime import Runtime, use_runtime
from core.store import DeltaStore
from flows.position_reconciliation import position_reconciliation


class FlakyBroker(SimBroker):
    """Drops the line on the first positions() call: the fetch must retry and reconnect."""

    failures = 1

    async def positions(self):  # type: ignore[no-untyped-def]
        if FlakyBroker.failures > 0:
            FlakyBroker.failures -= 1
            self.drop_connection()
            raise BrokerError("connection reset", ErrorClass.CONNECTIVITY, 1100)
        return await super().positions()


@pytest.fixture
def world(tmp_path: Path, no_config: Path) -> SimWorld:
    settings = load_settings(
        storage={"root": str(tmp_path / "data")},
        sim={"net_liquidation": 50_000_000.0},
        reconciliation={"fetch_backoff_s": 0.01},
    )
    return SimWorld(make_exchange(settings), DeltaStore.from_settings(settings))


def runtime(world: SimWorld, broker_cls: type[SimBroker] = SimBroker) -> Runtime:
    settings = load_settings(
        storage={"root": str(Path(world.store.root))},  # type: ignore[attr-defined]
        reconciliation={"fetch_backoff_s": 0.01},
    )
    return Runtime(
        settings,
        world.store,
        clock=world.clock,  # type: ignore[arg-type]
        broker_factory=lambda: broker_cls(world.exchange),
    )


async def test_faults_then_one_run_makes_book_equal_broker(world: SimWorld) -> None:
    pool = world.pool
    # a crash between submit and record: intent written, order filled, fills never recorded
    lost = world.v6_single(pool[0], -2)
    lost_execs = world.submit(lost)
    # a recorded vertical whose first fill is reported twice by the broker
    world.exchange.faults.duplicate_next_execution = True
    vertical = world.v6_vertical(pool[2], pool[0], 1)
    reported = world.submit(vertical)
    world.book.record_fills(reported + reported[:1])  # the duplicate report reaches the book
    # fills while V6 was disconnected
    world.exchange.faults.delay_fills_s = 30
    late = world.v6_single(pool[5], 1)
    world.exchange.place_order(late)
    world.exchange.faults.delay_fills_s = 0
    world.advance(timedelta(minutes=1))
    # a trade made in TWS
    world.external(pool[7], 3)

    with use_runtime(runtime(world, FlakyBroker)):
        summary = await position_reconciliation(guard=False)

    assert summary["in_agreement"] and summary["unresolved_breaks"] == 0
    assert summary["breaks_by_kind"] == {"missing_fill": 2, "external_fill": 1}
    assert world.book_equals_broker() and world.exec_ids_unique()
    assert set(e.exec_id for e in lost_execs) <= set(world.book.fills().get_column("exec_id"))
    breaks = world.store.read("reconciliation_breaks").collect()
    assert breaks.height == 3 and breaks.get_column("resolved").all()
    external = world.book.strategies().filter(pl.col("origin") == "external")
    assert external.height == 1 and not external.get_column("managed").item()
    # artifacts: breaks table and summary
    async with get_client() as client:
        arts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["reconciliation-breaks"]))
        )
    assert arts and "3 break(s)" in (arts[0].description or "")

    # a second run finds nothing new and books nothing twice
    world.clock.advance(timedelta(minutes=5))
    with use_runtime(runtime(world)):
        again = await position_reconciliation(guard=False)
    assert again["breaks"] == 0 and again["fills_recorded"] == 0 and again["in_agreement"]
    snapshots = world.store.read("positions_snapshots").collect()
    assert snapshots.get_column("run_id").n_unique() == 2 and snapshots.get_column("agrees").all()


async def test_expiry_and_assignment_are_explained(world: SimWorld) -> None:
    """As IB settles them: at expiry the ITM option of a put/call pair is exercised into
    stock and the OTM one lapses; a short put assigned early turns into stock too."""
    pool = world.pool
    stock = world.exchange.qualify(Contract.stock("SPY"))
    assert stock is not None
    put, call = pool[0], pool[1]  # nearest weekly, one strike
    short_put = next(c for c in pool[6:] if c.right is not None and c.right.value == "P")
    world.book.record_fills(world.submit(world.v6_single(put, 1)))
    world.book.record_fills(world.submit(world.v6_single(call, 1)))
    world.book.record_fills(world.submit(world.v6_single(short_put, -1)))  # next weekly
    with use_runtime(runtime(world)):
        first = await position_reconciliation(guard=False)
    assert first["breaks"] == 0
    world.advance(timedelta(days=7))  # the nearest weekly expires and is settled
    world.assign(short_put, 1, stock)  # and the short put is assigned early
    settled = {d.option.con_id: d.kind.value for d in world.exchange.deliveries()}
    assert sorted(settled.values()) == ["exercise", "expired"]
    with use_runtime(runtime(world)):
        summary = await position_reconciliation(guard=False)
    assert summary["breaks_by_kind"] == {"assignment": 1, "exercise": 1, "missing_position": 1}
    assert summary["urgent_breaks"] == 2 and summary["unresolved_breaks"] == 0
    assert world.book_equals_broker()
    reasons = dict(world.book.legs().select("con_id", "close_reason").iter_rows())
    lapsed = next(con for con, kind in settled.items() if kind == "expired")
    assert reasons[lapsed] == "expired" and reasons[short_put.con_id] == "assigned"


async def test_closed_market_skips_unless_called_by_the_cycle(world: SimWorld) -> None:
    world.clock.advance(timedelta(hours=12))  # night
    with use_runtime(runtime(world)):
        state = await position_reconciliation(return_state=True)
    assert state.is_completed() and state.name == "MarketClosed"
