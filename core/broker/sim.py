"""`SimBroker`: the `Broker` protocol in-process, over one `SimExchange`.

It is how demos, backtests and flow tests trade without IB: same protocol, same
observable behaviour as the gateway simulator (both sit on a SimExchange), answers
immediately. Connection state is real enough to rehearse failures: while disconnected
every call raises `BrokerError(kind=CONNECTIVITY)`, and `drop_connection()` /
`connect_failures` let a test cut the line or refuse reconnects.

Before answering, each call lets the exchange catch up with the clock (`on_clock`) if
time has moved, so resting orders fill and options expire without the caller having to
remember to pump the exchange.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime, timedelta

from core.broker.base import BrokerError, ErrorClass, check_what
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
from core.sim.calendar import to_epoch
from core.sim.exchange import SimExchange, SimExchangeError
from core.sim.market import MarketSimulator

NOT_CONNECTED = 504  # IB: "Not connected"
ORDER_ID_SPAN = 1_000_000_000  # run bases stay below this, so perm ids fit IB's int32


def run_order_base() -> int:
    """A first order id unique to this run (milliseconds of the wall clock, wrapped).

    The simulator's execIds start with the order's permId, so a new process numbering its
    orders from 1 again would report fills under execIds an earlier process already booked,
    and the book would take the new fill for a repeat. Runs started apart number apart."""
    return 1 + time.time_ns() // 1_000_000 % ORDER_ID_SPAN


class SimBroker:
    """In-process broker over a SimExchange (implements `core.broker.base.Broker`)."""

    def __init__(
        self, exchange: SimExchange, *, client_id: int = 0, first_order_id: int = 1
    ) -> None:
        if first_order_id <= 0:
            raise ValueError(f"first_order_id must be > 0, got {first_order_id}")
        self.exchange = exchange
        self.client_id = client_id
        self.first_order_id = first_order_id  # see `run_order_base`
        self.connect_failures = 0  # chaos: refuse this many connect() attempts
        self._connected = False
        self._synced_at: int | None = None

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock | None = None) -> SimBroker:
        """Market + exchange + broker from settings (`sim`, `universe`, `broker.account`).

        Without a clock, a SimClock at the regular open of `sim.start` is created; reach
        it as `broker.clock` to advance simulated time.
        """
        return cls(SimExchange.from_settings(settings, clock))

    @property
    def market(self) -> MarketSimulator:
        return self.exchange.market

    @property
    def clock(self) -> Clock:
        return self.exchange.market.clock

    # ------------------------------------------------------------------ connection
    async def connect(self) -> None:
        if self.connect_failures > 0:
            self.connect_failures -= 1
            raise BrokerError(
                "simulated connect failure (SimBroker.connect_failures)",
                ErrorClass.CONNECTIVITY,
                code=502,
            )
        self._connected = True

    async def disconnect(self) -> None:
        self._connected = False

    def drop_connection(self) -> None:
        """Chaos: the socket is gone; calls fail until `connect()` succeeds again."""
        self._connected = False

    @property
    def is_connected(self) -> bool:
        return self._connected

    def _ready(self) -> None:
        """Fail when disconnected; otherwise let the exchange catch up with the clock."""
        if not self._connected:
            raise BrokerError(
                "Not connected: call connect() first (or reconnect after a drop)",
                ErrorClass.CONNECTIVITY,
                code=NOT_CONNECTED,
            )
        ts = to_epoch(self.clock.now())
        if ts != self._synced_at:
            self.exchange.on_clock()
            self._synced_at = ts

    # ------------------------------------------------------------------ read side
    async def current_time(self) -> datetime:
        self._ready()
        return self.clock.now()

    async def account_summary(self) -> AccountSummary:
        self._ready()
        return self.exchange.account_summary()

    async def positions(self) -> list[Position]:
        self._ready()
        return self.exchange.positions()

    async def open_orders(self) -> list[OrderState]:
        self._ready()
        return self.exchange.open_orders()

    async def executions(self, since: datetime | None = None) -> list[Execution]:
        self._ready()
        return self.exchange.executions(since)

    async def qualify(self, contracts: Sequence[Contract]) -> list[Contract | None]:
        self._ready()
        return [self.exchange.qualify(c) for c in contracts]

    async def option_chain(self, underlying: str) -> list[OptionChain]:
        self._ready()
        return self.exchange.option_chains(underlying)

    async def quotes(self, contracts: Sequence[Contract]) -> list[Quote]:
        """Quotes in the order asked; an unknown contract gets an all-NaN quote."""
        self._ready()
        known = [(i, self.exchange.qualify(c)) for i, c in enumerate(contracts)]
        good = [(i, c) for i, c in known if c is not None]
        got = self.exchange.quotes([c for _, c in good]) if good else []
        now = self.clock.now()
        out: list[Quote] = [Quote(contract=c, time=now) for c in contracts]
        for (i, _), q in zip(good, got, strict=True):
            out[i] = q
        return out

    async def historical_bars(
        self,
        contract: Contract,
        *,
        end: datetime,
        duration: timedelta,
        bar_size: str = "1 min",
        what: str = "TRADES",
    ) -> list[Bar]:
        check_what(what)
        self._ready()
        try:
            return self.exchange.bars(
                contract, end=end, duration=duration, bar_size=bar_size, what=what
            )
        except SimExchangeError as exc:
            raise BrokerError(str(exc), ErrorClass.DATA, code=exc.code) from exc

    # ------------------------------------------------------------------ trading
    async def place_order(self, order: OrderRequest) -> OrderState:
        """Submit once per order_ref; a known ref returns the existing order unchanged.

        The exchange, like IB, accepts any number of orders with one ref: idempotency is
        this broker's, through `find_order` as IBBroker does it."""
        self._ready()
        existing = self.exchange.find_order(order.order_ref) if not order.what_if else None
        if existing is not None:
            return existing
        try:
            order_id = max(self.exchange.next_order_id, self.first_order_id)
            return self.exchange.place_order(order, client_id=self.client_id, order_id=order_id)
        except SimExchangeError as exc:
            raise BrokerError(str(exc), ErrorClass.REJECTION, code=exc.code) from exc

    async def find_order(self, order_ref: str) -> OrderState | None:
        self._ready()
        return self.exchange.find_order(order_ref)

    async def cancel_order(self, order_id: int) -> OrderState:
        self._ready()
        try:
            return self.exchange.cancel_order(order_id)
        except SimExchangeError as exc:
            raise BrokerError(str(exc), ErrorClass.REJECTION, code=exc.code) from exc

    async def dividends(self, contract: Contract) -> Dividends:
        self._ready()
        got = self.exchange.dividends(contract)
        if got is None:
            raise BrokerError(f"no dividend data for {contract}", ErrorClass.DATA)
        return got

    async def what_if(self, order: OrderRequest) -> float:
        self._ready()
        try:
            return self.exchange.what_if(order)
        except SimExchangeError as exc:
            raise BrokerError(str(exc), ErrorClass.REJECTION, code=exc.code) from exc

    async def what_if_margin(self, order: OrderRequest) -> MarginImpact:
        self._ready()
        try:
            return self.exchange.margin_impact(order)
        except SimExchangeError as exc:
            raise BrokerError(str(exc), ErrorClass.REJECTION, code=exc.code) from exc
