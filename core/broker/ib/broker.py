"""`IBBroker`: the `Broker` protocol on unmodified ib_async, composed of one object per
concern over a shared connection (the split of NautilusTrader's IB client)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from ib_async import IB

from core.broker.ib.account import Account
from core.broker.ib.connection import Connection
from core.broker.ib.contracts import QUALIFY_BATCH_MIN, Contracts
from core.broker.ib.executions import ExecutionBreak, ExecutionJournal
from core.broker.ib.live_guard import check_live_settings
from core.broker.ib.market_data import MarketData
from core.broker.ib.orders import Orders
from core.broker.ib.requests import Requests
from core.clock import Clock, SystemClock
from core.config import BrokerSettings
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


class IBBroker:
    """`Broker` over ib_async. One instance = one API connection (one clientId)."""

    def __init__(
        self,
        settings: BrokerSettings,
        *,
        clock: Clock | None = None,
        qualify_batch_min: int = QUALIFY_BATCH_MIN,
    ) -> None:
        check_live_settings(settings)
        self.settings = settings
        clock = clock or SystemClock()
        ib = IB()
        ib.RaiseRequestErrors = True  # request errors raise RequestError with the code
        ib.client.MaxRequests = settings.max_messages_per_s  # ib_async's pacer; 0 = off
        self._conn = Connection(
            ib, settings, on_connected=self._on_connected, on_data_lost=self._on_data_lost
        )
        self._requests = Requests(ib, settings)
        self._executions = ExecutionJournal(self._conn, self._requests)
        self._contracts = Contracts(self._conn, self._requests, clock, qualify_batch_min)
        self._market_data = MarketData(self._conn, self._requests, self._contracts, clock)
        self._account = Account(self._conn, self._requests)
        self._orders = Orders(self._conn, self._requests, self._contracts, self._executions)

    async def _on_connected(self) -> None:
        """Per-connection state starts afresh, then fills made while away are recovered."""
        self._account.reset()
        self._orders.reset()
        await self._executions.recover()

    def _on_data_lost(self) -> None:
        """IB 1101 dropped the account-summary subscription: the next read subscribes again
        (quotes in flight re-request their own lines)."""
        self._account.reset()

    @property
    def data_lost(self) -> int:
        """IB 1101s (restored, data lost) seen since this broker was made."""
        return self._conn.data_lost

    # ------------------------------------------------------------------ connection
    @property
    def is_connected(self) -> bool:
        return self._conn.is_connected

    @property
    def client_id(self) -> int | None:
        return self._conn.client_id

    @property
    def account(self) -> str | None:
        """The managed account in use (print it with `core.domain.accounts.mask_account`)."""
        return self._conn.account

    @property
    def ib(self) -> IB:
        """The underlying ib_async client (for diagnostics; do not disconnect it directly)."""
        return self._conn.ib

    @property
    def reconnects(self) -> int:
        """Reconnects after a drop since this broker was made."""
        return self._conn.reconnects

    @property
    def qualify_batch_min(self) -> int:
        """Options of one expiry asked together from this many on go out as ONE request."""
        return self._contracts.qualify_batch_min

    async def connect(self) -> None:
        await self._conn.connect()

    async def disconnect(self) -> None:
        await self._conn.disconnect()

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Block until connected (e.g. after a drop); BrokerError when reconnecting gave up."""
        await asyncio.wait_for(self._conn.ready(), timeout)

    async def current_time(self) -> datetime:
        await self._conn.ready()
        return await self._requests.current_time()

    # ------------------------------------------------------------------ executions
    def execution_journal(self) -> list[Execution]:
        """Every execution this broker has seen (live, recovered or requested), once each."""
        return self._executions.journal()

    def execution_breaks(self) -> list[ExecutionBreak]:
        """Execution reports that could not be booked as they came (raw fields kept)."""
        return self._executions.breaks()

    def add_execution_listener(self, listener: Callable[[Execution], None]) -> Callable[[], None]:
        """Call `listener` for each new execution (live fills and recovered ones)."""
        return self._executions.add_listener(listener)

    async def executions(self, since: datetime | None = None) -> list[Execution]:
        """Fills at or after `since` (seconds resolution on the wire), each exec_id once."""
        return await self._executions.executions(since)

    # ------------------------------------------------------------------ account
    async def account_summary(self) -> AccountSummary:
        return await self._account.account_summary()

    async def positions(self) -> list[Position]:
        return await self._account.positions()

    # ------------------------------------------------------------------ contracts
    async def qualify(self, contracts: Sequence[Contract]) -> list[Contract | None]:
        """Qualified contracts in the order asked (None: IB does not know it); batched and
        cached, see `core.broker.ib.contracts`."""
        return await self._contracts.qualify(contracts)

    async def option_chain(self, underlying: str) -> list[OptionChain]:
        return await self._contracts.option_chain(underlying)

    # ------------------------------------------------------------------ market data
    async def quotes(self, contracts: Sequence[Contract]) -> list[Quote]:
        """Snapshot quotes, in the order asked; see `MarketData.quotes`."""
        return await self._market_data.quotes(contracts)

    async def dividends(self, contract: Contract) -> Dividends:
        """The stock's dividends; see `MarketData.dividends`."""
        return await self._market_data.dividends(contract)

    async def historical_bars(
        self,
        contract: Contract,
        *,
        end: datetime,
        duration: timedelta,
        bar_size: str = "1 min",
        what: str = "TRADES",
    ) -> list[Bar]:
        return await self._market_data.historical_bars(
            contract, end=end, duration=duration, bar_size=bar_size, what=what
        )

    # ------------------------------------------------------------------ orders
    async def open_orders(self) -> list[OrderState]:
        return await self._orders.open_orders()

    async def find_order(self, order_ref: str) -> OrderState | None:
        """This session's live orders, then open orders, completed orders and executions at
        the broker (all clients): the order carrying `order_ref`, if any."""
        return await self._orders.find_order(order_ref)

    async def place_order(self, order: OrderRequest) -> OrderState:
        """Place once per `order_ref`: an order the broker already has is returned, not
        placed again (also when a disconnect hid the acknowledgement of our own attempt)."""
        return await self._orders.place_order(order)

    async def cancel_order(self, order_id: int) -> OrderState:
        return await self._orders.cancel_order(order_id)

    async def what_if(self, order: OrderRequest) -> float:
        return await self._orders.what_if(order)

    async def what_if_margin(self, order: OrderRequest) -> MarginImpact:
        return await self._orders.what_if_margin(order)
