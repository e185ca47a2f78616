"""The broker connection task every broker-facing flow starts with."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from core.broker.base import Broker
from core.runtime import current_runtime


@task(name="connect-broker", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5])
async def connect_broker() -> Broker:
    """A new connection for this run (each run owns its own clientId/connection)."""
    broker = current_runtime().new_broker()
    await broker.connect()
    return broker
