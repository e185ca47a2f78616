"""The slot registry never holds more market-data lines than its budget, streams by
priority, shrinks on IB error 101 and always releases what it holds."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.broker.base import BrokerError, ErrorClass
from core.domain import Contract
from core.marketdata.slots import (
    FileSlotPool,
    MemorySlotPool,
    SlotRegistry,
    SlotRequest,
    SlotsExhausted,
    leg_priorities,
)


def contract(i: int) -> Contract:
    return Contract.option("SPY", date(2026, 4, 17), 400 + i, "P").with_con_id(1000 + i)


class Feed:
    """A fake broker feed: counts live lines, enforces the account limit like IB (101)."""

    def __init__(self, limit: int = 10_000, fail_cancel: bool = False) -> None:
        self.limit = limit
        self.active: set[int] = set()
        self.max_active = 0
        self.fail_cancel = fail_cancel
        self.cancels = 0

    def _take(self, con_id: int) -> None:
        if len(self.active) >= self.limit:
            raise BrokerError("Max number of tickers has been reached", ErrorClass.CAPACITY, 101)
        self.active.add(con_id)
        self.max_active = max(self.max_active, len(self.active))

    async def subscribe(self, c: Contract) -> int:
        await asyncio.sleep(0)  # let concurrent callers interleave
        self._take(c.con_id)
        return c.con_id

    async def cancel(self, handle: int) -> None:
        await asyncio.sleep(0)
        self.cancels += 1
        self.active.discard(handle)
        if self.fail_cancel:
            raise BrokerError("not connected", ErrorClass.CONNECTIVITY, 504)

    async def snapshot(self, contracts: Sequence[Contract]) -> list[int]:
        ids = [c.con_id + 10_000_000 for c in contracts]  # a snapshot holds its own line
        for i in ids:
            self._take(i)
        await asyncio.sleep(0)
        for i in ids:
            self.active.discard(i)
        return [c.con_id for c in contracts]


def requests(n: int, prio: Sequence[float] | None = None) -> list[SlotRequest[int]]:
    prio = prio or [float(i % 7) for i in range(n)]
    return [SlotRequest(1000 + i, contract(i), prio[i]) for i in range(n)]


def registry(feed: Feed, budget: int = 10, **kw) -> SlotRegistry[int]:
    return SlotRegistry(feed.subscribe, feed.cancel, budget=budget, **kw)


async def test_three_times_the_budget_streams_top_priorities_and_snapshots_the_rest() -> None:
    feed = Feed()
    reg = registry(feed, budget=10)
    reqs = requests(30, [float(i) for i in range(30)])
    plan = await reg.assign(reqs)
    assert plan.streamed == tuple(range(1029, 1020, -1))  # 9 streams + 1 line for snapshots
    assert len(plan.snapshot) == 21 and set(plan.snapshot).isdisjoint(plan.streamed)
    got = await reg.snapshot([r.contract for r in reqs if r.key in plan.snapshot], feed.snapshot)
    assert got == [r.key for r in reqs if r.key in plan.snapshot]  # in the order asked
    assert feed.max_active <= 10 and reg.report().peak_in_use <= 10
    report = reg.report()
    assert (report.streamed, report.snapshot, report.in_use, report.budget) == (9, 21, 9, 10)


async def test_concurrent_callers_never_exceed_the_budget() -> None:
    feed = Feed()
    reg = registry(feed, budget=10)
    a, b = requests(30), requests(30, [float(30 - i) for i in range(30)])
    await asyncio.gather(
        reg.assign(a),
        reg.assign(b),
        reg.snapshot([r.contract for r in a], feed.snapshot),
        reg.snapshot([r.contract for r in b], feed.snapshot),
    )
    assert feed.max_active <= 10
    assert reg.pool.in_use() == reg.in_use == len(feed.active)


async def test_priority_changes_release_and_resubscribe() -> None:
    feed = Feed()
    reg = registry(feed, budget=5, snapshot_reserve=1)
    reqs = requests(8, [8, 7, 6, 5, 4, 3, 2, 1])
    first = await reg.assign(reqs)
    assert first.streamed == (1000, 1001, 1002, 1003)
    flipped = requests(8, [1, 2, 3, 4, 5, 6, 7, 8])
    second = await reg.assign(flipped)
    assert second.streamed == (1007, 1006, 1005, 1004)
    assert feed.active == {1004, 1005, 1006, 1007} and feed.cancels == 4
    assert reg.report().released == 4 and reg.report().subscribed == 4


async def test_error_101_shrinks_the_cap_and_sheds_lowest_priorities() -> None:
    feed = Feed(limit=6)  # the account really has 6 lines, config says 10
    reg = registry(feed, budget=10)
    plan = await reg.assign(requests(30, [float(i) for i in range(30)]))
    assert len(plan.streamed) == 6 and reg.cap == 6
    assert reg.report().capacity_errors == 1
    plan = await reg.assign(requests(30, [float(i) for i in range(30)]))
    assert len(plan.streamed) == 5  # one line freed for snapshots
    await reg.snapshot([contract(i) for i in range(10)], feed.snapshot)
    assert feed.max_active <= 6


async def test_asynchronous_101_for_a_named_key_drops_it() -> None:
    feed = Feed()
    reg = registry(feed, budget=10, snapshot_reserve=1)
    await reg.assign(requests(9, [float(i) for i in range(9)]))
    reg.on_capacity_error(1008)
    plan = await reg.assign(requests(9, [float(i) for i in range(9)]))
    assert reg.cap == 8 and len(plan.streamed) == 7 and 1000 not in plan.streamed


async def test_cap_grows_back_after_clean_cycles() -> None:
    feed = Feed(limit=4)
    reg = registry(feed, budget=6, snapshot_reserve=1, regrow_after=2)
    await reg.assign(requests(10))
    assert reg.cap == 4
    feed.limit = 100
    for _ in range(4):
        await reg.assign(requests(10))
    assert reg.cap == 6


async def test_leaving_the_context_releases_everything_even_on_error() -> None:
    feed = Feed(fail_cancel=True)
    pool = MemorySlotPool(10)
    with pytest.raises(RuntimeError):
        async with registry(feed, budget=10, pool=pool) as reg:
            await reg.assign(requests(20))
            assert pool.in_use() == 9
            raise RuntimeError("cycle failed")
    assert pool.in_use() == 0 and reg.in_use == 0 and feed.cancels == 9


async def test_registries_sharing_the_account_pool_stay_within_it() -> None:
    feed = Feed()
    pool = MemorySlotPool(10)
    a = registry(feed, budget=10, pool=pool, owner="trading")
    b = registry(feed, budget=10, pool=pool, owner="futures")
    await a.assign(requests(30))
    plan_b = await b.assign(requests(30))
    assert len(plan_b.streamed) == 1 and pool.in_use() == 10 and feed.max_active <= 10
    with pytest.raises(SlotsExhausted):
        await b.snapshot([contract(0)], feed.snapshot)
    await a.release_all()
    assert pool.usage() == {"futures": 1}


def test_file_pool_is_shared_and_forgets_dead_processes(tmp_path: Path) -> None:
    path = tmp_path / "lines.json"
    one, two = FileSlotPool(path, 10), FileSlotPool(path, 10)
    assert one.try_acquire("a", 7) == 7
    assert two.try_acquire("b", 7) == 3
    assert one.usage() == {"a": 7, "b": 3}
    two.release("b", 3)
    # an entry left by a process that died
    import json

    state = json.loads(path.read_text())
    state["ghost"] = {"lines": 3, "pid": 2**22 + 12345, "host": os.uname().nodename}
    path.write_text(json.dumps(state))
    assert one.in_use() == 7
    assert one.try_acquire("c", 5) == 3


def test_leg_priorities_put_open_orders_then_nearest_thresholds_first() -> None:
    legs = pl.DataFrame(
        {"threshold_distance": [0.9, 0.1, None, 0.5], "has_open_order": [False, False, False, True]}
    )
    prio = leg_priorities(legs).to_list()
    assert sorted(range(4), key=lambda i: -prio[i]) == [3, 1, 0, 2]


@settings(max_examples=40, deadline=None)
@given(
    cycles=st.lists(
        st.tuples(
            st.lists(st.floats(0, 10, allow_nan=False), min_size=0, max_size=30),
            st.booleans(),
            st.integers(3, 10),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_random_cycles_never_exceed_the_budget(cycles: list[tuple[list[float], bool, int]]) -> None:
    async def scenario() -> None:
        feed = Feed()
        pool = MemorySlotPool(10)
        reg = registry(feed, budget=10, pool=pool)
        for prio, snap, limit in cycles:
            feed.limit = limit
            reqs = requests(len(prio), prio) if prio else []
            plan = await reg.assign(reqs)
            assert len(plan.streamed) + len(plan.snapshot) == len(reqs)
            if snap and plan.snapshot:
                with contextlib.suppress(BrokerError):  # the feed's limit may be below ours
                    await reg.snapshot([contract(k - 1000) for k in plan.snapshot], feed.snapshot)
            assert feed.max_active <= 10 and reg.in_use <= 10
            assert pool.in_use() == reg.in_use == len(feed.active)
        await reg.release_all()
        assert pool.in_use() == 0 and not feed.active

    asyncio.run(scenario())
