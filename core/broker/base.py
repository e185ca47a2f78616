"""The `Broker` protocol: everything V6 asks of a broker, and nothing else.

Both `SimBroker` (in-process) and `IBBroker` (ib_async) implement it, and one contract
test suite runs against both, so the flows cannot tell them apart. All calls are async
because the production broker is a socket; the simulator just answers immediately.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol, runtime_checkable

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


class ErrorClass(StrEnum):
    """How a broker error should be handled by callers."""

    CONNECTIVITY = "connectivity"  # retry after reconnect; breaker input if it persists
    REJECTION = "rejection"  # the order was refused: never retry blindly
    DATA = "data"  # missing/unsubscribed/paced data: degrade, flag NO_DATA
    CAPACITY = "capacity"  # market-data lines exhausted (IB 101): shrink the stream set
    WARNING = "warning"  # informational (farm status etc.)


class BrokerError(Exception):
    """A broker-side failure with a classification and (when known) IB's error code."""

    def __init__(self, message: str, kind: ErrorClass, code: int | None = None) -> None:
        super().__init__(message if code is None else f"[{code}] {message}")
        self.kind = kind
        self.code = code


HISTORICAL_WHAT: tuple[str, ...] = ("TRADES", "MIDPOINT", "OPTION_IMPLIED_VOLATILITY")


def check_what(what: str) -> str:
    """`what` (IB's whatToShow) if V6 supports it, else a ValueError naming the fix."""
    if what not in HISTORICAL_WHAT:
        raise ValueError(
            f"historical_bars: what={what!r} is not supported; use one of {HISTORICAL_WHAT}"
        )
    return what


@runtime_checkable
class Broker(Protocol):
    """Async broker interface. Implementations never place an order twice for one `order_ref`."""

    async def connect(self) -> None: ...

    async def disconnect(self) -> None: ...

    @property
    def is_connected(self) -> bool: ...

    async def current_time(self) -> datetime: ...

    async def account_summary(self) -> AccountSummary: ...

    async def positions(self) -> list[Position]: ...

    async def open_orders(self) -> list[OrderState]: ...

    async def executions(self, since: datetime | None = None) -> list[Execution]:
        """Fills at or after `since` (all the broker still has when None), each exec_id once."""
        ...

    async def qualify(self, contracts: Sequence[Contract]) -> list[Contract | None]:
        """The contracts with con_id filled in; None where the broker knows no such contract."""
        ...

    async def option_chain(self, underlying: str) -> list[OptionChain]: ...

    async def quotes(self, contracts: Sequence[Contract]) -> list[Quote]:
        """Snapshot quotes (with greeks for options), in the order asked; NaN where unknown."""
        ...

    async def dividends(self, contract: Contract) -> Dividends:
        """The stock's dividends (IB generic tick 456). DATA error when none arrive."""
        ...

    async def historical_bars(
        self,
        contract: Contract,
        *,
        end: datetime,
        duration: timedelta,
        bar_size: str = "1 min",
        what: str = "TRADES",
    ) -> list[Bar]:
        """Completed bars in [end - duration, end), as IB's reqHistoricalData answers them.

        `what` is IB's whatToShow (one of `HISTORICAL_WHAT`):
        - "TRADES": traded prices (the value of an index). Options and combos have sparse
          prints, so for them TRADES is served as MIDPOINT.
        - "MIDPOINT": bid/ask midpoints (the simulator's MIDPOINT equals its TRADES: its
          trades print at the mid).
        - "OPTION_IMPLIED_VOLATILITY": for an optionable underlying, the 30-day ATM implied
          vol (decimal, 0.18 = 18%) as OHLC; daily bars' close is the day's closing IV.
        A daily bar from IB is stamped at midnight UTC of its session date; the simulator
        stamps it at the session open (both carry the session date, see
        `core.marketdata.iv_history.session_dates`).
        """
        ...

    async def place_order(self, order: OrderRequest) -> OrderState:
        """Submit, or return the existing order when `order.order_ref` is already known."""
        ...

    async def find_order(self, order_ref: str) -> OrderState | None:
        """The order carrying this ref, open or done, if the broker has it."""
        ...

    async def cancel_order(self, order_id: int) -> OrderState: ...

    async def what_if(self, order: OrderRequest) -> float:
        """Available funds the order would take, in account currency: its initial margin
        change less the premium it receives (Reg-T)."""
        ...

    async def what_if_margin(self, order: OrderRequest) -> MarginImpact:
        """The broker's what-if answer for `order` (nothing is placed): initial and
        maintenance margin and equity with loan before, change and after; None where the
        broker did not say."""
        ...
