"""The broker as one trading cycle uses it: quotes through the slot registry, and a record
of when the line was last known to be up.

Why a wrapper rather than changes to the brokers:
- `IBBroker.quotes` opens a short-lived stream per contract, so asking it for more contracts
  than the account's market-data lines at once is refused (IB 101). Every quote request of
  the cycle (held legs, chains, the executor's combo quotes) goes through
  `SlotRegistry.snapshot`, which fetches in batches that fit the lines free on the account
  (the pool is shared with every other flow run on this host).
- The breaker trips on "disconnected longer than T". Only the caller sees when a call
  failed for connectivity and when the line came back, so every call updates a small
  tracker here; `disconnected_s` turns it into the number the breaker wants.

Leases: the cycle only snapshots (a cycle is one short-lived connection; streams would not
outlive it), so the registry never subscribes and holds no line after a batch returns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from core.broker.base import Broker, BrokerError, ErrorClass
from core.clock import Clock
from core.config import Settings
from core.domain import (
    AccountSummary,
    Bar,
    Contract,
    Dividends,
    Execution,
    MarginImpact,
    OptionChain,
    OrderRequest,
    OrderState,
    Position,
    Quote,
)
from core.marketdata.slots import SlotRegistry, default_slot_pool, registry_from_settings

log = logging.getLogger(f"v6.{__name__}")
T = TypeVar("T")


async def _no_stream(contract: Contract) -> Any:
    raise BrokerError(
        f"the trading cycle does not stream {contract.describe()}; it snapshots",
        ErrorClass.DATA,
    )


async def _no_cancel(handle: Any) -> None:
    return None


def cycle_registry(settings: Settings, owner: str) -> SlotRegistry[Any]:
    """A registry over the account-wide line pool (a file under the store root when local)."""
    budget = settings.broker.market_data_lines
    return registry_from_settings(
        settings.broker,
        _no_stream,
        _no_cancel,
        pool=default_slot_pool(budget, settings.storage.root),
        owner=owner,
    )


class CycleBroker:
    """`Broker` for one cycle over `inner` (implements `core.broker.base.Broker`).

    `last_connected_at` seeds the tracker with the last time a previous cycle had the line
    up (from `cycle_health`), so a cycle that cannot connect at all still reports how long
    the broker has been gone.
    """

    def __init__(
        self,
        inner: Broker,
        registry: SlotRegistry[Any],
        clock: Clock,
        *,
        last_connected_at: datetime | None = None,
    ) -> None:
        self.inner = inner
        self.registry = registry
        self.clock = clock
        self.started_at = clock.now()
        self._started_wall = time.monotonic()
        self.last_ok_at: datetime | None = last_connected_at  # clock time
        self._last_ok_wall: float | None = None  # monotonic, this process only
        self.connectivity_errors = 0
        self.calls = 0
        self.quoted = 0

    # ------------------------------------------------------------------ tracking
    def _ok(self) -> None:
        self.last_ok_at = self.clock.now()
        self._last_ok_wall = time.monotonic()

    async def _call(self, awaitable: Awaitable[T]) -> T:
        self.calls += 1
        try:
            out = await awaitable
        except BrokerError as exc:
            if exc.kind is ErrorClass.CONNECTIVITY:
                self.connectivity_errors += 1
            else:
                self._ok()  # the broker answered (with a refusal): the line is up
            raise
        self._ok()
        return out

    def disconnected_s(self) -> float:
        """0 while connected; else how long since the line was last known up.

        Both clocks count: the cycle's clock (simulated in tests and backtests, where a
        reconnect loop takes no simulated time) and the wall clock (where it does). A cycle
        that never got through reports at least the wall time it spent trying.
        """
        if self.inner.is_connected and self.connectivity_errors == 0:
            return 0.0
        if self.inner.is_connected and self._last_ok_wall is not None:
            return 0.0  # it failed, then came back within the cycle
        now_wall = time.monotonic()
        wall = now_wall - (self._last_ok_wall or self._started_wall)
        anchor = self.last_ok_at or self.started_at
        clock = (self.clock.now() - anchor).total_seconds()
        return max(wall, clock, 1e-3)

    # ------------------------------------------------------------------ connection
    async def connect(self) -> None:
        await self._call(self.inner.connect())

    async def disconnect(self) -> None:
        await self.inner.disconnect()

    @property
    def is_connected(self) -> bool:
        return self.inner.is_connected

    async def ensure_connected(self) -> None:
        """Reconnect when the line dropped (a retried read-only step starts here)."""
        if not self.inner.is_connected:
            await self.connect()

    # ------------------------------------------------------------------ read side
    async def current_time(self) -> datetime:
        return await self._call(self.inner.current_time())

    async def account_summary(self) -> AccountSummary:
        return await self._call(self.inner.account_summary())

    async def positions(self) -> list[Position]:
        return await self._call(self.inner.positions())

    async def open_orders(self) -> list[OrderState]:
        return await self._call(self.inner.open_orders())

    async def executions(self, since: datetime | None = None) -> list[Execution]:
        return await self._call(self.inner.executions(since))

    async def qualify(self, contracts: Sequence[Contract]) -> list[Contract | None]:
        return await self._call(self.inner.qualify(contracts))

    async def option_chain(self, underlying: str) -> list[OptionChain]:
        return await self._call(self.inner.option_chain(underlying))

    async def quotes(self, contracts: Sequence[Contract]) -> list[Quote]:
        """Snapshots in batches that fit the free market-data lines, in the order asked.

        A capacity error (IB 101: fewer lines than the registry thought) shrinks the cap;
        the request is then tried once more in smaller batches.
        """
        if not contracts:
            return []
        wanted = list(contracts)
        self.quoted += len(wanted)
        try:
            return await self.registry.snapshot(wanted, self._fetch)
        except BrokerError as exc:
            if exc.kind is not ErrorClass.CAPACITY:
                raise
            log.warning("quotes: %s; retrying in batches of at most %d", exc, self.registry.cap)
            return await self.registry.snapshot(wanted, self._fetch)

    async def _fetch(self, batch: Sequence[Contract]) -> list[Any]:
        return list(await self._call(self.inner.quotes(batch)))

    async def historical_bars(
        self,
        contract: Contract,
        *,
        end: datetime,
        duration: timedelta,
        bar_size: str = "1 min",
        what: str = "TRADES",
    ) -> list[Bar]:
        return await self._call(
            self.inner.historical_bars(
                contract, end=end, duration=duration, bar_size=bar_size, what=what
            )
        )

    # ------------------------------------------------------------------ trading
    async def place_order(self, order: OrderRequest) -> OrderState:
        return await self._call(self.inner.place_order(order))

    async def find_order(self, order_ref: str) -> OrderState | None:
        return await self._call(self.inner.find_order(order_ref))

    async def cancel_order(self, order_id: int) -> OrderState:
        return await self._call(self.inner.cancel_order(order_id))

    async def what_if(self, order: OrderRequest) -> float:
        return await self._call(self.inner.what_if(order))

    async def what_if_margin(self, order: OrderRequest) -> MarginImpact:
        return await self._call(self.inner.what_if_margin(order))

    async def dividends(self, contract: Contract) -> Dividends:
        return await self._call(self.inner.dividends(contract))


__all__ = ["CycleBroker", "cycle_registry"]
