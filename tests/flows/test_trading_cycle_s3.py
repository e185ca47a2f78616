"""The trading cycle on a half-configured deployment: its Delta tables on an S3 server that
refuses the configured credentials. The run fails before it asks for a broker, so nothing
can be traded on state V6 cannot read or record. (The cycle on S3 with the right
credentials runs in the topology test.)"""

from __future__ import annotations

import uuid

from prefect.states import State
from s3_world import S3World, s3_world_fixture  # noqa: F401  (fixture)

from core.broker.base import Broker
from core.broker.sim import SimBroker
from core.config import Settings
from core.runtime import Runtime, use_runtime
from core.store import DeltaStore
from flows.trading_cycle import trading_cycle


async def run_cycle(world: S3World, root: str, **options: str) -> tuple[State, int]:
    settings = Settings(
        storage={"root": root, "storage_options": world.options(**options)},  # type: ignore[arg-type]
        universe={"underlyings": ["SPY"]},
    )
    brokers: list[Broker] = []
    sim = SimBroker.from_settings(settings)

    def factory() -> Broker:
        brokers.append(SimBroker(sim.exchange))
        return brokers[-1]

    rt = Runtime(settings, DeltaStore.from_settings(settings), sim.exchange.market.clock, factory)
    with use_runtime(rt):
        state = await trading_cycle(guard=False, return_state=True)
    assert isinstance(state, State)
    return state, len(brokers)


async def test_refused_storage_credentials_fail_the_cycle_before_any_broker(
    s3_world: S3World,
) -> None:
    root = s3_world.root(f"half-{uuid.uuid4().hex[:8]}")
    state, brokers = await run_cycle(s3_world, root, aws_secret_access_key="wrong")
    assert state.is_failed(), (state.name, state.message)
    assert brokers == 0
    # Refused at its first step, the cycle lease (one cycle per V6 home), by the bucket.
    assert "lacked the necessary privileges" in str(state.message)
    assert "cycle_lease" in str(state.message)
    assert DeltaStore(root, s3_world.options()).read("cycle_health").collect().is_empty()
