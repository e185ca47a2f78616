"""The trading-cycle lease on a real Delta store: one holder at a time, a crashed holder's
lease expires, a holder that lost it cannot renew or release it (fencing by seq), and of
several processes racing for it exactly one wins."""

from __future__ import annotations

import multiprocessing as mp
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from core.cycle.lease import Busy, CycleLease, Held, LeaseLost
from core.store import DeltaStore

TTL = timedelta(minutes=5)
T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> datetime:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def lease(tmp_path: Path, clock: Clock) -> CycleLease:
    return CycleLease(DeltaStore(str(tmp_path)), TTL, clock)


def test_one_holder_at_a_time_until_released(lease: CycleLease, clock: Clock) -> None:
    first = lease.acquire("cycle-a")
    assert first == Held("cycle-a", 0, T0)
    clock.t += timedelta(minutes=1)
    busy = lease.acquire("cycle-b")
    assert isinstance(busy, Busy) and (busy.holder, busy.since) == ("cycle-a", T0)
    assert busy.expires_at == T0 + TTL
    skip = busy.skip()
    assert skip.name == "Skipped"
    assert skip.message == f"another cycle running (run cycle-a since {T0.isoformat()})"
    lease.release(first)
    second = lease.acquire("cycle-b")
    assert isinstance(second, Held) and second.seq == 2


def test_renewal_keeps_a_live_holder_past_its_first_ttl(lease: CycleLease, clock: Clock) -> None:
    held = lease.acquire("cycle-a")
    assert isinstance(held, Held)
    clock.t += TTL * 0.9
    held = lease.renew(held)
    clock.t += TTL * 0.9  # past the first expiry, within the renewed one
    busy = lease.acquire("cycle-b")
    assert isinstance(busy, Busy) and busy.since == T0 and busy.holder == "cycle-a"


def test_a_killed_holder_expires_and_is_fenced_off(lease: CycleLease, clock: Clock) -> None:
    dead = lease.acquire("cycle-dead")  # then kill -9: no renewal, no release
    assert isinstance(dead, Held)
    clock.t += TTL + timedelta(seconds=1)
    taken = lease.acquire("cycle-next")
    assert isinstance(taken, Held) and taken.seq == 1
    row = lease.latest()
    assert row is not None and "took over from cycle-dead" in str(row["detail"])
    # the old holder wakes up: it may neither renew nor release what is no longer its own
    with pytest.raises(LeaseLost, match="moved on"):
        lease.renew(dead)
    lease.release(dead)
    row = lease.latest()
    assert row is not None and (row["holder"], row["event"]) == ("cycle-next", "acquire")


def _race(root: str, holder: str, start: object) -> bool:
    start.wait()  # type: ignore[attr-defined]
    got = CycleLease(DeltaStore(root), TTL).acquire(holder)
    return isinstance(got, Held)


def test_racing_processes_get_one_lease(tmp_path: Path) -> None:
    root = str(tmp_path)
    DeltaStore(root).ensure("cycle_lease")
    ctx = mp.get_context("spawn")  # deltalake must not fork
    with ctx.Manager() as manager:
        start = manager.Event()
        with ctx.Pool(3) as pool:
            pending = [pool.apply_async(_race, (root, f"cycle-{i}", start)) for i in range(3)]
            start.set()
            won = [p.get(timeout=120) for p in pending]
    assert sorted(won) == [False, False, True]
    log = DeltaStore(root).read("cycle_lease").collect()
    assert log.height == 1 and log.get_column("seq").to_list() == [0]
    assert log.filter(pl.col("event") == "acquire").height == 1
