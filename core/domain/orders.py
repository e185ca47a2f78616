"""Orders, their lifecycle, executions and positions."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from core.domain.contracts import Contract


class Action(StrEnum):
    BUY = "BUY"
    SELL = "SELL"

    @property
    def sign(self) -> int:
        return 1 if self is Action.BUY else -1


class OrderType(StrEnum):
    LMT = "LMT"
    MKT = "MKT"


class OrderStatus(StrEnum):
    """V6's order states; adapters map broker-specific states onto these."""

    PENDING = "PENDING"  # accepted by the broker, not yet working (IB PendingSubmit/PreSubmitted)
    SUBMITTED = "SUBMITTED"  # working at the exchange (may be partially filled)
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"

    @property
    def is_done(self) -> bool:
        return self in (OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED)


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """What V6 asks the broker to do. `order_ref` is deterministic and makes retries safe:
    a broker that already knows the ref must not receive the order again."""

    contract: Contract
    action: Action
    quantity: int
    order_type: OrderType = OrderType.LMT
    limit_price: float | None = None
    order_ref: str = ""
    tif: str = "DAY"
    what_if: bool = False

    def __post_init__(self) -> None:
        if (
            not isinstance(self.quantity, int)
            or isinstance(self.quantity, bool)
            or self.quantity <= 0
        ):
            raise ValueError(
                f"OrderRequest.quantity must be a positive integer, got {self.quantity!r}"
            )
        if self.order_type is OrderType.LMT:
            if self.limit_price is None or not math.isfinite(self.limit_price):
                raise ValueError(
                    f"OrderRequest.limit_price must be a finite number for a LMT order, "
                    f"got {self.limit_price!r}"
                )
        elif self.limit_price is not None:
            raise ValueError("OrderRequest.limit_price must be None for a MKT order")
        if not self.order_ref:
            raise ValueError("OrderRequest.order_ref is required: it is what makes a retry safe")


@dataclass(frozen=True, slots=True)
class OrderState:
    """The broker's view of one order at one moment."""

    order_id: int
    order_ref: str
    contract: Contract
    action: Action
    quantity: int
    status: OrderStatus
    filled: int = 0
    avg_fill_price: float = math.nan
    limit_price: float | None = None
    order_type: OrderType = OrderType.LMT
    perm_id: int = 0
    message: str = ""  # reject reason or broker note

    @property
    def remaining(self) -> int:
        return self.quantity - self.filled


@dataclass(frozen=True, slots=True)
class Execution:
    """One fill. `exec_id` is globally unique and is the key the book merges on."""

    exec_id: str
    order_id: int
    order_ref: str
    contract: Contract
    side: Action
    quantity: int
    price: float
    time: datetime
    account: str
    commission: float = math.nan
    perm_id: int = 0

    @property
    def signed_quantity(self) -> int:
        return self.side.sign * self.quantity


@dataclass(frozen=True, slots=True)
class Position:
    account: str
    contract: Contract
    quantity: int  # signed: negative is short
    avg_cost: float  # per contract incl. multiplier, as IB reports it
