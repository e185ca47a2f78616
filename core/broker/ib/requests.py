"""Awaiting ib_async requests: a timeout on every one, IB error codes as `BrokerError`,
one lock per kind of request that must not overlap, and a round-trip barrier."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import TypeVar

from ib_async import IB, RequestError

from core.broker.base import BrokerError, ErrorClass
from core.broker.ib.convert import classify_error
from core.config import BrokerSettings

T = TypeVar("T")


class Requests:
    """Request plumbing shared by every IBBroker concern (one per connection)."""

    def __init__(self, ib: IB, settings: BrokerSettings) -> None:
        self._ib = ib
        self._settings = settings
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, key: str) -> asyncio.Lock:
        """The lock for one kind of request (ib_async answers some by kind, not by id)."""
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    async def request(self, what: str, awaitable: Awaitable[T], timeout: float | None = None) -> T:
        """Await an ib_async request with a timeout, mapping failures onto BrokerError."""
        limit = timeout if timeout is not None else self._settings.request_timeout_s
        try:
            return await asyncio.wait_for(awaitable, limit)
        except RequestError as exc:
            raise BrokerError(f"{what}: {exc.message}", classify_error(exc.code), exc.code) from exc
        except TimeoutError as exc:
            raise BrokerError(
                f"{what}: no answer within {limit:g} s (broker.request_timeout_s)",
                ErrorClass.CONNECTIVITY if not self._ib.isConnected() else ErrorClass.DATA,
            ) from exc
        except ConnectionError as exc:
            raise BrokerError(f"{what}: connection lost ({exc})", ErrorClass.CONNECTIVITY) from exc

    async def barrier(self) -> None:
        """A round trip: everything the gateway sent before its answer has been processed."""
        async with self.lock("currentTime"):
            await self.request("barrier", self._ib.reqCurrentTimeAsync())

    async def current_time(self) -> datetime:
        async with self.lock("currentTime"):
            t: datetime = await self.request("current time", self._ib.reqCurrentTimeAsync())
        return t.astimezone(UTC)
