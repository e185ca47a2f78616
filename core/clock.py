"""Injectable time, so the simulator, backtests and tests run on a fast clock.

Everything in `core` that needs "now" takes a `Clock` instead of calling
`datetime.now()`; production uses `SystemClock`, simulations a `SimClock` they advance.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, tz-aware UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class SimClock:
    """A clock that only moves when told to; waiters are woken when it passes their time."""

    def __init__(self, start: datetime) -> None:
        _require_utc(start, "start")
        self._now = start
        self._waiters: list[tuple[datetime, asyncio.Future[None]]] = []

    def now(self) -> datetime:
        return self._now

    def set(self, when: datetime) -> None:
        _require_utc(when, "when")
        if when < self._now:
            raise ValueError(f"SimClock cannot go backwards: {when} < {self._now}")
        self._now = when
        due = [(t, f) for t, f in self._waiters if t <= when]
        self._waiters = [(t, f) for t, f in self._waiters if t > when]
        for _, fut in due:
            if not fut.done():
                fut.set_result(None)

    def advance(self, delta: timedelta) -> datetime:
        self.set(self._now + delta)
        return self._now

    async def wait_until(self, when: datetime) -> None:
        """Resolve once the clock reaches `when` (immediately if it already has)."""
        if when <= self._now:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((when, fut))
        await fut


def _require_utc(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() != timedelta(0):
        raise ValueError(f"{name} must be a tz-aware UTC datetime, got {value!r}")
