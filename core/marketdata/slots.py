"""Market-data line budget: lease streaming lines to the legs that matter, snapshot the rest.

IB gives an account a fixed number of simultaneous market-data lines (100 by default),
shared by every client and flow on that account; a request beyond it fails with error 101
("max number of tickers reached"). A snapshot also holds a line while it is outstanding.

`SlotRegistry` is pure bookkeeping over an async `subscribe(contract) -> handle` /
`cancel(handle)` pair, so it is testable without a broker:

- each cycle, `assign(requests)` streams the highest-priority requests (legs of strategies
  near a rule threshold and legs with open orders first) and reports the rest as snapshot;
- it never holds more lines than its cap, and never more than the account-wide `SlotPool`
  grants (the pool is shared by every registry on the account, across processes with
  `FileSlotPool`);
- `snapshot(contracts, fetch)` fetches the rest in batches that fit the free lines;
- a CAPACITY error (IB 101) shrinks the cap to what is actually held; the cap grows back one
  line after `regrow_after` clean cycles;
- leases are always released: on `release_all`, on leaving `async with`, and when a cancel
  fails (the line is dropped from the books either way; a dead connection frees it anyway).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import polars as pl

from core.broker.base import BrokerError, ErrorClass
from core.config import BrokerSettings
from core.domain import Contract

log = logging.getLogger(f"v6.{__name__}")

K = TypeVar("K", bound=Hashable)

Subscribe = Callable[[Contract], Awaitable[Any]]
Cancel = Callable[[Any], Awaitable[None]]


class SlotsExhausted(BrokerError):
    """No market-data line could be had for a snapshot: the account's lines are all in use."""

    def __init__(self, message: str) -> None:
        super().__init__(message, ErrorClass.CAPACITY, code=101)


# -- the account-wide pool -------------------------------------------------------------------


class SlotPool(Protocol):
    """Lines granted to owners; the sum never exceeds `budget`."""

    @property
    def budget(self) -> int: ...

    def try_acquire(self, owner: str, n: int) -> int:
        """Grant up to `n` lines to `owner`; returns how many were granted (maybe 0)."""
        ...

    def release(self, owner: str, n: int) -> None: ...

    def in_use(self) -> int: ...

    def usage(self) -> dict[str, int]: ...


class MemorySlotPool:
    """A pool for one process (thread-safe)."""

    def __init__(self, budget: int) -> None:
        if budget < 1:
            raise ValueError(f"SlotPool budget must be >= 1 line, got {budget}")
        self._budget = budget
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def budget(self) -> int:
        return self._budget

    def try_acquire(self, owner: str, n: int) -> int:
        with self._lock:
            grant = max(0, min(n, self._budget - sum(self._held.values())))
            if grant:
                self._held[owner] = self._held.get(owner, 0) + grant
            return grant

    def release(self, owner: str, n: int) -> None:
        with self._lock:
            left = self._held.get(owner, 0) - n
            if left > 0:
                self._held[owner] = left
            else:
                self._held.pop(owner, None)

    def in_use(self) -> int:
        with self._lock:
            return sum(self._held.values())

    def usage(self) -> dict[str, int]:
        with self._lock:
            return dict(self._held)


class FileSlotPool:
    """A pool shared by every process on this host through a small JSON file under a lock.

    Each owner's entry carries its pid; entries of processes that no longer exist are
    dropped on the next access, so a crashed flow run cannot leak lines forever.
    """

    def __init__(self, path: str | Path, budget: int) -> None:
        if budget < 1:
            raise ValueError(f"SlotPool budget must be >= 1 line, got {budget}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_path = self.path.with_suffix(self.path.suffix + ".lock")
        self._budget = budget
        self._host = socket.gethostname()

    @property
    def budget(self) -> int:
        return self._budget

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, dict[str, Any]]]:
        with open(self._lock_path, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                try:
                    state: dict[str, dict[str, Any]] = json.loads(self.path.read_text() or "{}")
                except (FileNotFoundError, json.JSONDecodeError):
                    state = {}
                state = {k: v for k, v in state.items() if self._alive(v)}
                yield state
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text(json.dumps(state, sort_keys=True))
                tmp.replace(self.path)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _alive(self, entry: dict[str, Any]) -> bool:
        if entry.get("host") != self._host:
            return True  # cannot check another host's processes; keep it
        pid = int(entry.get("pid", 0))
        if pid <= 0:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def try_acquire(self, owner: str, n: int) -> int:
        with self._locked() as state:
            used = sum(int(v["lines"]) for v in state.values())
            grant = max(0, min(n, self._budget - used))
            if grant:
                entry = state.setdefault(
                    owner, {"lines": 0, "pid": os.getpid(), "host": self._host}
                )
                entry["lines"] = int(entry["lines"]) + grant
                entry["updated"] = time.time()
            return grant

    def release(self, owner: str, n: int) -> None:
        with self._locked() as state:
            entry = state.get(owner)
            if entry is None:
                return
            entry["lines"] = int(entry["lines"]) - n
            if entry["lines"] <= 0:
                del state[owner]

    def in_use(self) -> int:
        with self._locked() as state:
            return sum(int(v["lines"]) for v in state.values())

    def usage(self) -> dict[str, int]:
        with self._locked() as state:
            return {k: int(v["lines"]) for k, v in state.items()}


_PROCESS_POOLS: dict[int, MemorySlotPool] = {}


def default_slot_pool(budget: int, root: str | None = None) -> SlotPool:
    """The account's pool: a file under `root/_runtime/` when `root` is a local directory
    (shared by every flow-run process on this host), else one pool per process."""
    if root and "://" not in root:
        return FileSlotPool(Path(root) / "_runtime" / "market_data_lines.json", budget)
    return _PROCESS_POOLS.setdefault(budget, MemorySlotPool(budget))


# -- requests, plans, reports ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SlotRequest(Generic[K]):
    """Market data wanted for `key` (e.g. a con_id); higher `priority` streams first."""

    key: K
    contract: Contract
    priority: float = 0.0


@dataclass(frozen=True)
class SlotPlan(Generic[K]):
    streamed: tuple[K, ...]  # served by a live stream, highest priority first
    snapshot: tuple[K, ...]  # serve these by snapshot (`SlotRegistry.snapshot`)


@dataclass(frozen=True)
class SlotReport:
    """Lines per cycle, for the run's artifact."""

    cycle: int
    budget: int
    cap: int  # the budget after shrinking on capacity errors
    in_use: int  # streaming lines held after the cycle
    requested: int
    streamed: int
    snapshot: int
    subscribed: int  # new streams this cycle
    released: int  # streams cancelled this cycle
    capacity_errors: int
    peak_in_use: int  # the most lines held at once (streams + snapshots) so far
    account_in_use: int  # lines held by every owner on the pool

    def as_dict(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.__dict__.items()}


@dataclass
class _Lease:
    request: SlotRequest[Any]
    handle: Any


@dataclass
class _Counters:
    subscribed: int = 0
    released: int = 0
    capacity_errors: int = 0
    clean_cycles: int = 0
    history: list[SlotReport] = field(default_factory=list)


# -- the registry ------------------------------------------------------------------------------


class SlotRegistry(Generic[K]):
    """Leases market-data lines by priority within a budget; see the module docstring."""

    def __init__(
        self,
        subscribe: Subscribe,
        cancel: Cancel,
        *,
        budget: int,
        pool: SlotPool | None = None,
        owner: str | None = None,
        snapshot_reserve: int | None = None,
        regrow_after: int = 12,
    ) -> None:
        if budget < 1:
            raise ValueError(
                f"SlotRegistry budget must be >= 1 line, got {budget}; set "
                "broker.market_data_lines to the account's line allowance"
            )
        self._subscribe = subscribe
        self._cancel = cancel
        self.budget = budget
        self.pool: SlotPool = pool or MemorySlotPool(budget)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        # lines kept free of streams so snapshots can always run
        reserve = max(1, budget // 10) if snapshot_reserve is None else snapshot_reserve
        if not 0 <= reserve < budget:
            raise ValueError(
                f"snapshot_reserve must be in [0, budget), got {reserve} for budget {budget}"
            )
        self.snapshot_reserve = reserve
        self.regrow_after = regrow_after
        self.cap = budget
        self._leases: dict[K, _Lease] = {}
        self._doomed: set[K] = set()  # leases the broker refused after the fact (async 101)
        self._snapshot_lines = 0
        self._peak = 0
        self._cycle = 0
        self._n = _Counters()
        self._lock = asyncio.Lock()

    # -- state ----------------------------------------------------------------------------
    @property
    def in_use(self) -> int:
        """Lines held right now (streams + outstanding snapshot lines)."""
        return len(self._leases) + self._snapshot_lines

    @property
    def streamed(self) -> tuple[K, ...]:
        return tuple(self._leases)

    @property
    def stream_capacity(self) -> int:
        return max(0, self.cap - self.snapshot_reserve)

    def handle(self, key: K) -> Any:
        """The subscription handle of a streamed key (e.g. an ib_async Ticker)."""
        return self._leases[key].handle

    def _note_peak(self) -> None:
        self._peak = max(self._peak, self.in_use)

    # -- capacity errors --------------------------------------------------------------------
    def on_capacity_error(self, key: K | None = None) -> None:
        """IB said 101 (possibly asynchronously, after a subscribe 'succeeded'): the account
        has fewer lines than we thought. Shrink the cap to what is held now (minus the
        offending subscription when named); the next `assign` sheds the lowest priorities."""
        self._n.capacity_errors += 1
        self._n.clean_cycles = 0
        held = len(self._leases) - (1 if key is not None and key in self._leases else 0)
        new_cap = max(1, min(self.cap, held + self._snapshot_lines))
        if key is not None and key in self._leases:
            # the line was never really granted: forget it (cancel is still sent on assign)
            self._doomed.add(key)
        if new_cap < self.cap:
            log.warning("market-data capacity error: line cap %d -> %d", self.cap, new_cap)
        self.cap = new_cap

    # -- cycles -------------------------------------------------------------------------------
    async def assign(self, requests: Sequence[SlotRequest[K]]) -> SlotPlan[K]:
        """Stream the top requests within the cap; everything else is to be snapshot."""
        async with self._lock:
            self._cycle += 1
            errors_before = self._n.capacity_errors
            subscribed_before, released_before = self._n.subscribed, self._n.released
            ranked = _rank(requests)
            wanted = [r.key for r in ranked[: self.stream_capacity]]
            wanted_set = set(wanted)
            for key in [k for k in self._leases if k not in wanted_set or k in self._doomed]:
                await self._release(key)
            by_key = {r.key: r for r in ranked}
            for key in wanted:
                if key in self._leases:
                    continue
                if len(self._leases) + self._snapshot_lines >= self.stream_capacity:
                    break
                if not await self._lease(by_key[key]):
                    break
            if self._n.capacity_errors == errors_before:
                self._n.clean_cycles += 1
                if self._n.clean_cycles >= self.regrow_after and self.cap < self.budget:
                    self.cap += 1
                    self._n.clean_cycles = 0
            streamed = tuple(r.key for r in ranked if r.key in self._leases)
            snapshot = tuple(r.key for r in ranked if r.key not in self._leases)
            report = SlotReport(
                cycle=self._cycle,
                budget=self.budget,
                cap=self.cap,
                in_use=self.in_use,
                requested=len(ranked),
                streamed=len(streamed),
                snapshot=len(snapshot),
                subscribed=self._n.subscribed - subscribed_before,
                released=self._n.released - released_before,
                capacity_errors=self._n.capacity_errors - errors_before,
                peak_in_use=self._peak,
                account_in_use=self.pool.in_use(),
            )
            self._n.history.append(report)
            return SlotPlan(streamed, snapshot)

    async def _lease(self, request: SlotRequest[K]) -> bool:
        """Subscribe one request; False when no further line can be had."""
        if self.pool.try_acquire(self.owner, 1) != 1:
            return False
        try:
            handle = await self._subscribe(request.contract)
        except BrokerError as exc:
            self.pool.release(self.owner, 1)
            if exc.kind is ErrorClass.CAPACITY:
                self.on_capacity_error()
                return False
            raise
        except BaseException:
            self.pool.release(self.owner, 1)
            raise
        self._leases[request.key] = _Lease(request, handle)
        self._n.subscribed += 1
        self._note_peak()
        return True

    async def _release(self, key: K) -> None:
        lease = self._leases.pop(key)
        self._doomed.discard(key)
        try:
            await self._cancel(lease.handle)
        except Exception:
            log.warning(
                "cancelling market data for %s failed; line dropped anyway", key, exc_info=True
            )
        finally:
            self.pool.release(self.owner, 1)
            self._n.released += 1

    async def release(self, key: K) -> None:
        async with self._lock:
            if key in self._leases:
                await self._release(key)

    async def release_all(self) -> None:
        async with self._lock:
            for key in list(self._leases):
                await self._release(key)

    async def snapshot(
        self,
        contracts: Sequence[Contract],
        fetch: Callable[[Sequence[Contract]], Awaitable[list[Any]]],
    ) -> list[Any]:
        """Fetch snapshots in batches that fit the free lines; results in the order asked."""
        out: list[Any] = []
        async with self._lock:
            i = 0
            while i < len(contracts):
                free = max(0, self.cap - self.in_use)
                grant = self.pool.try_acquire(self.owner, free) if free else 0
                if grant == 0:
                    raise SlotsExhausted(
                        f"no market-data line free for a snapshot ({self.in_use} held by this "
                        f"registry of cap {self.cap}, {self.pool.in_use()} on the account of "
                        f"{self.pool.budget}); lower the stream count or raise "
                        "broker.market_data_lines"
                    )
                batch = contracts[i : i + grant]
                unused = grant - len(batch)
                if unused:
                    self.pool.release(self.owner, unused)
                self._snapshot_lines += len(batch)
                self._note_peak()
                try:
                    out.extend(await fetch(batch))
                except BrokerError as exc:
                    if exc.kind is ErrorClass.CAPACITY:
                        self.on_capacity_error()
                    raise
                finally:
                    self._snapshot_lines -= len(batch)
                    self.pool.release(self.owner, len(batch))
                i += len(batch)
        return out

    # -- reporting and lifetime ---------------------------------------------------------------
    def report(self) -> SlotReport | None:
        """The last cycle's report (None before the first `assign`)."""
        return self._n.history[-1] if self._n.history else None

    @property
    def reports(self) -> list[SlotReport]:
        return list(self._n.history)

    async def __aenter__(self) -> SlotRegistry[K]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release_all()


def _rank(requests: Sequence[SlotRequest[K]]) -> list[SlotRequest[K]]:
    """Highest priority first; ties by key text so the plan is deterministic; one per key."""
    best: dict[K, SlotRequest[K]] = {}
    for r in requests:
        if r.key not in best or r.priority > best[r.key].priority:
            best[r.key] = r
    return sorted(best.values(), key=lambda r: (-r.priority, str(r.key)))


def leg_priorities(
    legs: pl.DataFrame,
    *,
    threshold_distance: str = "threshold_distance",
    open_order: str = "has_open_order",
) -> pl.Series:
    """Priority per leg for `SlotRequest.priority`, vectorised.

    Legs with a working order come first (priority 2 + closeness), then legs by how close
    their strategy is to a rule threshold: `threshold_distance` is the relative distance to
    the nearest threshold (0 = at it, 1 or more = far; null = unknown, ranked last).
    """
    dist = pl.col(threshold_distance).cast(pl.Float64).clip(0.0, 1.0)
    closeness = (1.0 - dist).fill_null(0.0).fill_nan(0.0)
    order = pl.col(open_order).fill_null(False) if open_order in legs.columns else pl.lit(False)
    return legs.select(
        pl.when(order).then(2.0 + closeness).otherwise(closeness).alias("priority")
    ).to_series()


def registry_from_settings(
    broker: BrokerSettings,
    subscribe: Subscribe,
    cancel: Cancel,
    *,
    pool: SlotPool | None = None,
    owner: str | None = None,
) -> SlotRegistry[Any]:
    """A registry sized by `Settings.broker` (market_data_lines, snapshot reserve, regrow)."""
    budget = broker.market_data_lines
    return SlotRegistry(
        subscribe,
        cancel,
        budget=budget,
        pool=pool,
        owner=owner,
        snapshot_reserve=min(broker.market_data_snapshot_reserve, budget - 1),
        regrow_after=broker.market_data_regrow_cycles,
    )
