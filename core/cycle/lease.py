"""One trading cycle per V6 home at a time, however it was started (served, ad hoc, a
deployment, a worker on another machine): a lease held in the store itself.

The lease is the `cycle_lease` log. Its latest row (highest `seq`) says who holds it and
until when; every move writes the next seq with an insert-only merge, which exactly one of
several racing writers wins (Delta refuses the others' commits; their retry finds the seq
taken and inserts nothing). So `seq` is a fencing token: a holder only renews or releases
while the latest row is still its own.

A holder that crashed (kill -9, a lost machine) stops renewing; once `expires_at` passes
the next cycle takes the lease over (its row names the holder it replaced). A live holder
renews every third of the TTL in the background, so only a process silent for a whole
TTL loses the lease. Time here is the wall clock: expiry is about real processes, not the
market clock (which is simulated in the demo and backtests).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import polars as pl

from core.run_guard import Skip
from core.store.registry import REGISTRY

log = logging.getLogger(f"v6.{__name__}")

TABLE = "cycle_lease"
SKIPPED = "Skipped"
_ATTEMPTS = 5  # races lost in a row before giving up (each loss means someone else moved)


class LeaseStore(Protocol):
    """What the lease needs from a store (DeltaStore, or MemoryStore in tests)."""

    def merge(self, name: str, batch: pl.DataFrame, *, update: bool = True) -> object: ...

    def read(
        self, name: str, where: pl.Expr | None = None, columns: list[str] | None = None
    ) -> pl.LazyFrame: ...


class LeaseLost(RuntimeError):
    """The lease moved to another holder (this one was silent past its expiry)."""


@dataclass(frozen=True)
class Held:
    """This run holds the lease; `seq` is its latest move (the fencing token)."""

    holder: str
    seq: int
    since: datetime


@dataclass(frozen=True)
class Busy:
    """Another run holds the lease."""

    holder: str
    owner: str
    since: datetime
    expires_at: datetime

    def skip(self) -> Skip:
        return Skip(
            SKIPPED, f"another cycle running (run {self.holder} since {self.since.isoformat()})"
        )


def wall_now() -> datetime:
    return datetime.now(UTC)


class CycleLease:
    """The lease over one store. Cheap to construct; holds no state."""

    def __init__(
        self, store: LeaseStore, ttl: timedelta, now: Callable[[], datetime] = wall_now
    ) -> None:
        if ttl <= timedelta(0):
            raise ValueError(f"lease ttl must be > 0, got {ttl}")
        self.store = store
        self.ttl = ttl
        self.now = now

    def latest(self) -> dict[str, object] | None:
        """The latest move (highest seq), or None before the first cycle ever."""
        rows = self.store.read(TABLE).sort("seq").tail(1).collect()
        return rows.row(0, named=True) if rows.height else None

    def acquire(self, holder: str) -> Held | Busy:
        """Take the lease, unless another live holder has it."""
        for _ in range(_ATTEMPTS):
            last, at = self.latest(), self.now()
            detail = None
            if last is not None and last["event"] != "release":
                expires = last["expires_at"]
                assert isinstance(expires, datetime)
                if last["holder"] != holder and expires > at:
                    return Busy(
                        str(last["holder"]), str(last["owner"]), _ts(last["since"]), expires
                    )
                if last["holder"] != holder:
                    detail = (
                        f"took over from {last['holder']} ({last['owner']}), silent since "
                        f"{_ts(last['at']).isoformat()}, expired {expires.isoformat()}"
                    )
                    log.warning("cycle lease: %s", detail)
            seq = 0 if last is None else int(str(last["seq"])) + 1
            if self._write(seq, "acquire", holder, at, at, detail):
                return Held(holder, seq, at)
        raise LeaseLost(f"cycle lease: lost the race to acquire it {_ATTEMPTS} times")

    def renew(self, held: Held) -> Held:
        """Extend the lease by a TTL from now; LeaseLost if it moved to someone else."""
        for _ in range(_ATTEMPTS):
            last = self._own_latest(held)
            seq = int(str(last["seq"])) + 1
            if self._write(seq, "renew", held.holder, held.since, self.now(), None):
                return Held(held.holder, seq, held.since)
        raise LeaseLost(f"cycle lease: lost the race to renew it {_ATTEMPTS} times")

    def release(self, held: Held) -> None:
        """Give the lease up (a no-op, logged, when it already moved to someone else)."""
        for _ in range(_ATTEMPTS):
            try:
                last = self._own_latest(held)
            except LeaseLost as exc:
                log.warning("cycle lease: not released: %s", exc)
                return
            seq = int(str(last["seq"])) + 1
            if self._write(seq, "release", held.holder, held.since, self.now(), None):
                return

    def _own_latest(self, held: Held) -> dict[str, object]:
        last = self.latest()
        if last is None or last["holder"] != held.holder or last["event"] == "release":
            who = "nobody" if last is None else f"{last['holder']} ({last['event']})"
            raise LeaseLost(f"cycle lease of {held.holder} moved on: latest is {who}")
        return last

    def _write(
        self,
        seq: int,
        event: str,
        holder: str,
        since: datetime,
        at: datetime,
        detail: str | None,
    ) -> bool:
        """Insert move `seq`; False when another writer took that seq first."""
        row = pl.DataFrame(
            {
                "seq": [seq],
                "event": [event],
                "holder": [holder],
                "owner": [f"{socket.gethostname()}:{os.getpid()}"],
                "since": [since],
                "at": [at],
                "expires_at": [None if event == "release" else at + self.ttl],
                "detail": [detail],
            },
            schema=REGISTRY[TABLE].schema,
        )
        result = self.store.merge(TABLE, row, update=False)
        return bool(getattr(result, "rows_inserted", 0))


def _ts(value: object) -> datetime:
    assert isinstance(value, datetime)
    return value


@asynccontextmanager
async def hold_cycle_lease(
    store: LeaseStore, holder: str, ttl: timedelta, now: Callable[[], datetime] = wall_now
) -> AsyncIterator[Busy | None]:
    """Hold the lease for the block (renewed in the background, released after); yields
    None while held, or the `Busy` lease of another run (the block must then stand down)."""
    lease = CycleLease(store, ttl, now)
    got = lease.acquire(holder)
    if isinstance(got, Busy):
        log.warning("cycle %s: %s", holder, got.skip().message)
        yield got
        return
    state = [got]
    beat = asyncio.create_task(_heartbeat(lease, state))
    try:
        yield None
    finally:
        beat.cancel()
        with suppress(asyncio.CancelledError):
            await beat
        lease.release(state[0])


async def _heartbeat(lease: CycleLease, state: list[Held]) -> None:
    while True:
        await asyncio.sleep(lease.ttl.total_seconds() / 3)
        try:
            state[0] = lease.renew(state[0])
        except LeaseLost as exc:  # the cycle ran silent past the TTL: another one may start
            log.error("cycle %s: %s", state[0].holder, exc)
            return
        except Exception:  # the store hiccuped: try again at the next beat
            log.warning("cycle %s: lease renewal failed", state[0].holder, exc_info=True)
