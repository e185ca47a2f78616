"""Orders, idempotent by `order_ref`: before placing, this session's trades, open orders,
completed orders and executions are searched for the ref, also after a disconnect that
hid the acknowledgement. IB's errors for an order become its state's message."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from ib_async import Fill, Trade
from ib_async import OrderState as IBOrderState

from core.broker.base import BrokerError, ErrorClass
from core.broker.ib.connection import Connection
from core.broker.ib.contracts import Contracts
from core.broker.ib.convert import (
    classify_error,
    from_ib_contract,
    is_bag_fill,
    latest_fills,
    order_state_from_trade,
    to_ib_contract,
    to_ib_order,
)
from core.broker.ib.executions import ExecutionJournal
from core.broker.ib.logs import v6_logger
from core.broker.ib.margin import margin_impact
from core.broker.ib.requests import Requests
from core.domain import (
    Action,
    ComboLeg,
    Contract,
    MarginImpact,
    OrderRequest,
    OrderState,
    OrderStatus,
)

logger = v6_logger(__name__)

_UNACKED = frozenset({"PendingSubmit", "ApiPending"})
# Answers to a cancel that say only that it did not apply (not found / not cancellable);
# ib_async still marks the order Cancelled locally on them, whatever really became of it.
_CANCEL_REFUSALS = frozenset({161, 10147, 10148})
MASTER_CLIENT_ID = 0  # IB lets clientId 0 cancel orders of every client


class Orders:
    """Placing, finding, cancelling and margin-checking orders over one connection."""

    def __init__(
        self,
        conn: Connection,
        requests: Requests,
        contracts: Contracts,
        executions: ExecutionJournal,
    ) -> None:
        self._conn = conn
        self._requests = requests
        self._contracts = contracts
        self._executions = executions
        conn.ib.errorEvent += self._on_error
        self._order_errors: dict[int, tuple[int, str]] = {}
        self._contracts_by_ref: dict[str, Contract] = {}

    def reset(self) -> None:
        """Errors noted on the last connection name request ids of that connection."""
        self._order_errors.clear()

    async def open_orders(self) -> list[OrderState]:
        await self._conn.ready()
        async with self._requests.lock("openOrders"):
            trades: list[Trade] = await self._requests.request(
                "open orders", self._conn.ib.reqAllOpenOrdersAsync()
            )
        out = []
        seen: set[int] = set()
        for t in trades:
            if t.isDone() or t.order.permId in seen:
                continue
            seen.add(t.order.permId)
            out.append(self._state(t))
        return out

    async def find_order(self, order_ref: str) -> OrderState | None:
        """Search this session's live orders, then open orders, completed orders and
        executions at the broker (all clients), for an order carrying `order_ref`."""
        if not order_ref:
            raise ValueError("order_ref must be non-empty")
        await self._conn.ready()
        ib = self._conn.ib
        async with self._requests.lock("lookup"):
            own = [
                t
                for t in ib.trades()
                if self._own(t) and t.order.orderRef == order_ref and not _guessed(t)
            ]
            if own:
                await self._requests.barrier()
                return self._state(own[-1])
            async with self._requests.lock("openOrders"):
                open_trades: list[Trade] = await self._requests.request(
                    "open orders", ib.reqAllOpenOrdersAsync()
                )
            for t in open_trades:
                if t.order.orderRef == order_ref:
                    return self._state(t, await self._executions.fetch_fills(None))
            async with self._requests.lock("completedOrders"):
                done: list[Trade] = await self._requests.request(
                    "completed orders", ib.reqCompletedOrdersAsync(False)
                )
            matches = [t for t in done if t.order.orderRef == order_ref]
            fills = await self._executions.fetch_fills(None)
            if matches:
                return self._state(matches[-1], fills)
            ref_fills = [f for f in fills if f.execution.orderRef == order_ref]
            if ref_fills:
                return self._state_from_fills(order_ref, ref_fills)
        return None

    async def place_order(self, order: OrderRequest) -> OrderState:
        """Place once per `order_ref`: an order the broker already has is returned, not
        placed again (also when a disconnect hid the acknowledgement of our own attempt)."""
        if order.what_if:  # a margin check, as SimExchange answers it: nothing is placed
            margin = await self.what_if(order)
            return OrderState(
                order_id=0,
                order_ref=order.order_ref,
                contract=order.contract,
                action=order.action,
                quantity=order.quantity,
                status=OrderStatus.CANCELLED,
                limit_price=order.limit_price,
                order_type=order.order_type,
                message=f"what-if only: initial margin {margin:.2f}",
            )
        await self._conn.ready()
        async with self._requests.lock("orders"):
            existing = await self.find_order(order.order_ref)
            if existing is not None:
                logger.info(
                    "order %s already at the broker (permId %d, %s): not placing again",
                    order.order_ref,
                    existing.perm_id,
                    existing.status.value,
                )
                return existing
            contract = await self._contracts.qualified(order.contract)
            self._contracts_by_ref[order.order_ref] = contract
            ib_order = to_ib_order(order, self._conn.account or "")
            trade = self._conn.ib.placeOrder(to_ib_contract(contract), ib_order)
            logger.info(
                "placed %s %d %s (%s) as orderId %d",
                order.action.value,
                order.quantity,
                contract.describe(),
                order.order_ref,
                trade.order.orderId,
            )
            return await self._await_ack(trade, order)

    async def cancel_order(self, order_id: int) -> OrderState:
        """Request the cancel and wait for IB's answer. The state returned is the broker's:
        a cancel can lose to a fill, and a refused cancel is looked up, not taken as done.
        An order of another clientId is refused here: only that id can cancel it."""
        await self._conn.ready()
        ib = self._conn.ib
        trade = next((t for t in ib.trades() if self._own(t) and t.order.orderId == order_id), None)
        if trade is None:
            async with self._requests.lock("openOrders"):
                trades: list[Trade] = await self._requests.request(
                    "open orders", ib.reqAllOpenOrdersAsync()
                )
            trade = next((t for t in trades if t.order.orderId == order_id), None)
        if trade is None:
            raise BrokerError(
                f"order {order_id} is not known to this session or open at the broker",
                ErrorClass.REJECTION,
                10147,
            )
        if trade.isDone() and not _guessed(trade):
            return self._state(trade)
        placed_by = trade.order.clientId
        if placed_by != self._conn.client_id and self._conn.client_id != MASTER_CLIENT_ID:
            raise BrokerError(
                f"order {order_id} ({trade.order.orderRef}) was placed under clientId "
                f"{placed_by} and this connection is clientId {self._conn.client_id}: only "
                f"clientId {placed_by} (or clientId 0, or a global cancel) can cancel it; it "
                "stays live until cancelled there or it expires",
                ErrorClass.REJECTION,
                10147,
            )
        ib.cancelOrder(trade.order)
        await self._wait_trade(trade, lambda t: t.isDone(), self._conn.settings.request_timeout_s)
        if ib.isConnected():
            await self._requests.barrier()
        if _guessed(trade):  # the cancel was refused: how the order ended is IB's to say
            logger.info(
                "cancel of order %d refused (%s); asking the broker how it ended",
                order_id,
                trade.log[-1].errorCode,
            )
            return await self.find_order(trade.order.orderRef) or self._state(trade)
        return self._state(trade)

    async def what_if(self, order: OrderRequest) -> float:
        """Available funds the order takes: initial margin change less the equity with
        loan change (a credit received). DATA error when IB left either unknown."""
        impact = await self.what_if_margin(order)
        if impact.init_change is None or impact.equity_with_loan_change is None:
            raise BrokerError(
                f"what-if for {order.order_ref} returned no initial margin or equity-with-loan "
                "change",
                ErrorClass.DATA,
            )
        return round(impact.init_change - impact.equity_with_loan_change, 2)

    async def what_if_margin(self, order: OrderRequest) -> MarginImpact:
        """IB's what-if for `order` (whatIfOrderAsync: nothing is placed), its strings
        parsed fail-closed: unset, empty or unparseable figures are None, never 0."""
        await self._conn.ready()
        contract = await self._contracts.qualified(order.contract)
        state = await self._requests.request(
            f"what-if margin for {order.order_ref}",
            self._conn.ib.whatIfOrderAsync(
                to_ib_contract(contract), to_ib_order(order, self._conn.account or "")
            ),
        )
        if not isinstance(state, IBOrderState):  # ib_async answers [] when IB sent an error
            raise BrokerError(
                f"what-if for {order.order_ref} got no answer from IB", ErrorClass.REJECTION
            )
        return margin_impact(state)

    # ------------------------------------------------------------------ order states
    def _state(self, trade: Trade, fills: Iterable[Fill] = ()) -> OrderState:
        ref = trade.order.orderRef
        contract = self._contracts_by_ref.get(ref)
        if contract is None:
            try:
                contract = from_ib_contract(trade.contract)
            except ValueError:
                contract = None
        note = self._order_errors.get(trade.order.orderId) if self._own(trade) else None
        state = order_state_from_trade(trade, contract=contract, fills=fills, error=note)
        if state.order_id == 0:
            for f in fills:
                if f.execution.permId == state.perm_id and f.execution.orderId:
                    return replace(state, order_id=int(f.execution.orderId))
        return state

    def _own(self, trade: Trade) -> bool:
        return trade.order.clientId == self._conn.client_id and trade.order.orderId > 0

    def _state_from_fills(self, order_ref: str, fills: list[Fill]) -> OrderState:
        """Last resort when only executions remember an order: a FILLED state from them.
        A combo's BAG-level executions give its quantity and net price (the legs' only its
        legs); each fill counts once, in its latest corrected version."""
        fills = latest_fills(fills)
        bags = [f for f in fills if is_bag_fill(f)]
        legs = [f for f in fills if not is_bag_fill(f)]
        own = bags or legs
        first = own[0]
        qty = int(sum(f.execution.shares for f in own))
        notional = sum(f.execution.shares * f.execution.price for f in own)
        side = Action.BUY if first.execution.side in ("BOT", "BUY") else Action.SELL
        contract = self._contracts_by_ref.get(order_ref)
        if contract is None:
            contract = from_ib_contract(
                first.contract, _combo_legs(side, qty, legs) if bags else None
            )
        return OrderState(
            order_id=int(first.execution.orderId),
            order_ref=order_ref,
            contract=contract,
            action=side,
            quantity=qty,
            status=OrderStatus.FILLED,
            filled=qty,
            avg_fill_price=notional / qty if qty else math.nan,
            perm_id=int(first.execution.permId),
            message="reconstructed from executions",
        )

    def _on_error(self, req_id: int, code: int, message: str, contract: object) -> None:
        if req_id > 0 and classify_error(code) is not ErrorClass.WARNING:
            # kept per request id; it matters when the id is one of our orders (ids and
            # request ids share one sequence, so the two never collide)
            self._order_errors[req_id] = (code, message)

    # ------------------------------------------------------------------ waiting
    async def _await_ack(self, trade: Trade, order: OrderRequest) -> OrderState:
        ref = order.order_ref
        acked = await self._wait_trade(
            trade,
            lambda t: t.orderStatus.status not in _UNACKED or t.isDone(),
            self._conn.settings.request_timeout_s,
        )
        if acked is None or not self._conn.is_connected:
            # lost the socket or the answer: the order may or may not be at the broker
            logger.warning("no acknowledgement for order %s; looking it up after reconnect", ref)
            await self._conn.ready()
            found = await self.find_order(ref)
            if found is not None:
                return found
            raise BrokerError(
                f"order {ref} was not acknowledged and the broker does not know it; "
                "placing it again is safe",
                ErrorClass.CONNECTIVITY,
            )
        await self._requests.barrier()  # immediate fills sent right after the ack are now in
        return self._state(trade)

    async def _wait_trade(
        self, trade: Trade, done: Callable[[Trade], bool], timeout: float
    ) -> Trade | None:
        """Wait for `done(trade)`; None on timeout or when the connection drops."""
        if done(trade):
            return trade
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Trade | None] = loop.create_future()

        def on_status(t: Trade) -> None:
            if not fut.done() and done(t):
                fut.set_result(t)

        def on_drop() -> None:
            if not fut.done():
                fut.set_result(None)

        ib = self._conn.ib
        trade.statusEvent += on_status
        ib.disconnectedEvent += on_drop
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return None
        finally:
            trade.statusEvent -= on_status
            ib.disconnectedEvent -= on_drop


def _combo_legs(side: Action, units: int, legs: list[Fill]) -> list[ComboLeg]:
    """A combo's legs as its executions show them: ratio per unit, action as written for
    a BUY of the combo (a SELL executes the legs reversed)."""
    shares: dict[int, tuple[float, str]] = {}
    for f in legs:
        q, s = shares.get(f.contract.conId, (0.0, f.execution.side))
        shares[f.contract.conId] = (q + float(f.execution.shares), s)
    out = []
    for con_id, (q, leg_side) in shares.items():
        bought = leg_side in ("BOT", "BUY")
        as_written = bought if side is Action.BUY else not bought
        ratio = max(1, round(q / units)) if units else 1
        out.append(ComboLeg(con_id=con_id, ratio=ratio, action="BUY" if as_written else "SELL"))
    return out


def _guessed(trade: Trade) -> bool:
    """Is the trade's Cancelled only ib_async's reading of a refused cancel?"""
    return (
        trade.orderStatus.status == "Cancelled"
        and bool(trade.log)
        and trade.log[-1].errorCode in _CANCEL_REFUSALS
    )


def _float(text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan
