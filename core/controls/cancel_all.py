"""Cancel every open V6 order at the broker and say, per order, how it ended.

Only orders carrying V6's orderRef prefix are touched (a person's own orders at the same
account are left alone and counted). Each cancel waits for the broker's final status:
a cancel can lose to a fill (FILLED: reported, the next reconciliation books it), IB can
refuse it (an order placed under another clientId, 10147: reported with the fix), or the
confirmation may not come in time (reported as unconfirmed: the order may still fill).
Nothing is reported cancelled that the broker did not confirm.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from core.broker.base import Broker, BrokerError
from core.domain import OrderState, OrderStatus
from core.domain.order_refs import is_v6_ref
from core.execution.ladder import Waiter

log = logging.getLogger(f"v6.{__name__}")

CONFIRM_POLLS = 10
"""Polls of the broker after a cancel that did not come back final, `poll_s` apart."""


@dataclass(frozen=True, slots=True)
class OrderCancel:
    """One open V6 order and how the cancel of it ended."""

    order_id: int
    order_ref: str
    symbol: str
    before: OrderStatus
    after: OrderStatus | None  # the broker's last word; None when it gave none
    filled: int
    error: str = ""

    @property
    def final(self) -> bool:
        """The broker confirmed a final state (cancelled, or filled before the cancel)."""
        return self.after is not None and self.after.is_done and not self.error

    def line(self) -> str:
        head = f"order {self.order_id} {self.order_ref} ({self.symbol})"
        if self.error:
            return f"{head}: NOT cancelled: {self.error}"
        if self.after is OrderStatus.CANCELLED:
            done = f", {self.filled} filled before the cancel" if self.filled else ""
            return f"{head}: cancelled (confirmed by the broker{done})"
        if self.after is OrderStatus.FILLED:
            return f"{head}: FILLED before the cancel; the next reconciliation books it"
        if self.after is OrderStatus.REJECTED:
            return f"{head}: rejected by the broker (not working)"
        state = self.after.value if self.after else "unknown"
        return f"{head}: cancel NOT confirmed (last status {state}); it may still fill"


@dataclass(frozen=True, slots=True)
class CancelAllReport:
    orders: tuple[OrderCancel, ...]
    foreign: int  # open orders without a V6 ref, left alone

    @property
    def ok(self) -> bool:
        """Every V6 order reached a final state the broker confirmed."""
        return all(o.final for o in self.orders)

    def lines(self) -> list[str]:
        out = [o.line() for o in self.orders]
        if not self.orders:
            out.append("no open V6 orders at the broker")
        if self.foreign:
            out.append(f"{self.foreign} open order(s) not placed by V6 left alone")
        return out


async def cancel_all(
    broker: Broker, *, wait: Waiter, poll_s: float = 1.0, polls: int = CONFIRM_POLLS
) -> CancelAllReport:
    """Cancel every open V6 order on a connected `broker`; one outcome per order."""
    if poll_s <= 0 or polls < 1:
        raise ValueError(f"cancel_all: poll_s must be > 0 and polls >= 1, got {poll_s}, {polls}")
    working = [o for o in await broker.open_orders() if not o.status.is_done]
    mine = [o for o in working if is_v6_ref(o.order_ref)]
    out = [await _cancel_one(broker, o, wait, poll_s, polls) for o in mine]
    for o in out:
        (log.warning if not o.final else log.info)("cancel-all: %s", o.line())
    return CancelAllReport(tuple(out), len(working) - len(mine))


async def _cancel_one(
    broker: Broker, order: OrderState, wait: Waiter, poll_s: float, polls: int
) -> OrderCancel:
    symbol = order.contract.symbol
    try:
        state = await broker.cancel_order(order.order_id)
    except BrokerError as exc:
        return OrderCancel(
            order.order_id, order.order_ref, symbol, order.status, None, order.filled,
            error=f"{exc}{_fix(exc)}",
        )  # fmt: skip
    for _ in range(polls):
        if state.status.is_done:
            break
        await wait(poll_s)
        state = await broker.find_order(order.order_ref) or state
    return OrderCancel(
        order.order_id, order.order_ref, symbol, order.status, state.status, state.filled
    )


def _fix(exc: BrokerError) -> str:
    if exc.code == 10147:
        return (
            "; connect with the clientId that placed it (broker.client_id_min/max) or as "
            "clientId 0, or cancel it in TWS"
        )
    return ""
