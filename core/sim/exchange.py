"""`SimExchange`: the single simulated world behind both SimBroker and the IB gateway.

It owns reference data, the account, order matching and executions on top of a
`MarketSimulator`, so the in-process broker and the TCP gateway observe exactly the same
behaviour. Everything is synchronous and in memory; "now" is the market's clock.

Fill model
----------
* A LMT order fills when marketable against the simulated touch: BUY when limit >= ask,
  SELL when limit <= bid. It fills at the touch moved `slippage_ticks` against the
  trader, never beyond the limit. MKT orders fill at the touch plus slippage.
* Fill size is limited by the displayed size (a bigger order fills partly, the rest
  rests and fills on later `on_clock` calls while marketable).
* Options and stocks match only in regular hours, futures in the Globex session; orders
  placed while closed are PENDING until the market opens. DAY orders are cancelled at
  their session's close; GTC orders stay.
* Commissions: `commission_per_contract` per option/future contract; stock pays
  $0.005/share with a $1.00 minimum (IB fixed pricing).

Combos (BAG) follow IB's convention: the combo's legs carry their own BUY/SELL; a BUY
order executes the legs as written, a SELL order executes them reversed. The limit is the
net price per combo in the order's direction: for BUY, the net debit paid (negative =
credit received); for SELL, the net credit received. So a bull put spread written as
(SELL the higher put, BUY the lower put) is entered with BUY at a negative limit, or,
written as (BUY higher, SELL lower), with SELL at a positive limit. The combo's quote is
the net of the legs for the BUY direction (a credit combo quotes negative). A combo fills
all legs atomically: one Execution per leg, same order_id and order_ref.

Accounting is IB Reg-T style: net liquidation = cash + securities at the mid + futures
P&L; equity with loan value excludes option values; available funds (and buying power;
no stock leverage multiple is applied) = equity with loan - initial margin
(`margin.py`). Options expire at their expiry's regular close: a synthetic execution
(order_id 0, order_ref "EXPIRY:<local symbol>", price = intrinsic at the official close)
closes the position and cash-settles it, so positions always equal the sum of
executions.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Final

import numpy as np

from core.clock import Clock, SimClock
from core.config import Settings
from core.domain import (
    AccountSummary,
    Action,
    Bar,
    Contract,
    Execution,
    OptionChain,
    OrderRequest,
    OrderState,
    OrderStatus,
    OrderType,
    Position,
    Quote,
    Right,
    SecType,
)
from core.sim.calendar import MarketCalendar, from_epoch, to_epoch
from core.sim.margin import portfolio_margin
from core.sim.market import MarketSimulator
from core.sim.volsurface import OPTION_TICK

log = logging.getLogger(f"v6.{__name__}")

PERM_ID_BASE: Final = 0x10000000
STOCK_COMMISSION_PER_SHARE: Final = 0.005
STOCK_COMMISSION_MIN: Final = 1.0
SUPPORTED_TIF: Final = ("DAY", "GTC")


# ---------------------------------------------------------------------------- faults
@dataclass
class FaultPlan:
    """Mutable fault knobs for tests and chaos runs; one-shot knobs reset after use."""

    reject_next: int = 0  # reject the next N orders (IB error 201)
    partial_fill_next: int | None = None  # next order fills only this many, rest rests
    delay_fills_s: float = 0.0  # marketable orders fill only after the clock advances this much
    duplicate_next_execution: bool = False  # report the next execution twice (same exec_id)
    nan_greeks: bool = False  # option quotes carry NaN greeks
    stale_quotes: bool = False  # quotes frozen at their last value, flagged stale
    crossed_quotes: bool = False  # bid > ask on the next quotes (one batch)
    partial_hold_s: float = 60.0  # the rest of a partial_fill_next order waits this long

    def __post_init__(self) -> None:
        if self.reject_next < 0:
            raise ValueError(f"FaultPlan.reject_next must be >= 0, got {self.reject_next}")
        if self.partial_fill_next is not None and self.partial_fill_next < 0:
            raise ValueError(
                f"FaultPlan.partial_fill_next must be >= 0 or None, got {self.partial_fill_next}"
            )
        if self.delay_fills_s < 0 or self.partial_hold_s < 0:
            raise ValueError("FaultPlan delays must be >= 0 seconds")


# ---------------------------------------------------------------------------- events
@dataclass(frozen=True, slots=True)
class OrderUpdated:
    state: OrderState


@dataclass(frozen=True, slots=True)
class ExecutionReported:
    execution: Execution
    duplicate: bool = False  # True on the second report of a FaultPlan duplicate


@dataclass(frozen=True, slots=True)
class PositionChanged:
    position: Position  # quantity 0 when the position was closed


ExchangeEvent = OrderUpdated | ExecutionReported | PositionChanged


class SimExchangeError(ValueError):
    """A request the exchange refuses outright; `code` is the matching IB error code."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message if code is None else f"[{code}] {message}")
        self.code = code


# ---------------------------------------------------------------------------- internals
@dataclass
class _Leg:
    contract: Contract
    ratio: int
    action: Action  # effective action of this leg for this order


@dataclass
class _Working:
    state: OrderState
    legs: list[_Leg]
    client_id: int
    eligible_at: int
    expires_at: int | None
    cap: int | None = None  # FaultPlan.partial_fill_next for the first fill
    hold_until: int = 0
    fills: int = 0
    paid: float = 0.0  # sum of combo price x quantity, for avg_fill_price


@dataclass
class _Book:
    contract: Contract
    quantity: int = 0
    avg_cost: float = 0.0  # per contract incl. multiplier and commission (IB style)


@dataclass
class _Account:
    cash: float
    realized: float = 0.0
    books: dict[int, _Book] = field(default_factory=dict)


class SimExchange:
    """Market + reference data + account + matching + executions (API: exchange_api.md)."""

    def __init__(
        self,
        market: MarketSimulator,
        *,
        account: str = "DU1234567",
        commission_per_contract: float = 0.65,
        slippage_ticks: int = 0,
        net_liquidation: float = 100_000.0,
    ) -> None:
        if commission_per_contract < 0:
            raise ValueError(f"commission_per_contract must be >= 0, got {commission_per_contract}")
        if slippage_ticks < 0:
            raise ValueError(f"slippage_ticks must be >= 0, got {slippage_ticks}")
        if not (math.isfinite(net_liquidation) and net_liquidation > 0):
            raise ValueError(f"net_liquidation must be finite and > 0, got {net_liquidation}")
        self.market = market
        self.account = account
        self.commission_per_contract = float(commission_per_contract)
        self.slippage_ticks = int(slippage_ticks)
        self.faults = FaultPlan()
        self._acct = _Account(cash=float(net_liquidation))
        self._orders: dict[int, _Working] = {}
        self._by_ref: dict[str, int] = {}
        self._next_id = 1
        self._executions: list[Execution] = []
        self._exec_ids: set[str] = set()
        self._listeners: list[Callable[[ExchangeEvent], None]] = []
        self._last_quotes: dict[object, Quote] = {}
        self._lock = threading.RLock()

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock | None = None) -> SimExchange:
        """Market + exchange from `settings.sim`/`settings.universe`; without a clock, a
        SimClock at the regular open of `sim.start`."""
        if clock is None:
            clock = default_clock(settings)
        market = MarketSimulator.from_settings(settings, clock)
        sim = settings.sim
        return cls(
            market,
            account=settings.broker.account or "DU1234567",
            commission_per_contract=sim.commission_per_contract,
            slippage_ticks=sim.slippage_ticks,
            net_liquidation=sim.net_liquidation,
        )

    # ------------------------------------------------------------------ helpers
    def _ts(self) -> int:
        return to_epoch(self.market.clock.now())

    def _emit(self, event: ExchangeEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # a broken listener must not corrupt the exchange
                log.exception("SimExchange listener failed on %s", type(event).__name__)

    def subscribe(self, listener: Callable[[ExchangeEvent], None]) -> Callable[[], None]:
        """Receive every event; returns a function that unsubscribes."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    @property
    def next_order_id(self) -> int:
        """The next id place_order will assign (IB's nextValidId)."""
        return self._next_id

    @property
    def cash(self) -> float:
        return self._acct.cash

    def _tick(self, contract: Contract) -> float:
        """Minimum price variation: the future's tick, else a penny (options, stock, BAG)."""
        if contract.sec_type is SecType.FUT:
            return self.market.f_profiles[self.market.futures.index(contract.symbol)].tick
        return OPTION_TICK

    # ------------------------------------------------------------------ reference data
    def qualify(self, contract: Contract) -> Contract | None:
        return self.market.qualify(contract)

    def contract_by_id(self, con_id: int) -> Contract | None:
        return self.market.contract_by_id(con_id)

    def option_chains(self, underlying: str) -> list[OptionChain]:
        return self.market.option_chains(underlying)

    def _resolve(self, contract: Contract) -> Contract:
        q = self.market.qualify(contract)
        if q is None:
            raise SimExchangeError(
                f"No security definition has been found for the request: {contract.describe()} "
                f"(con_id={contract.con_id}); qualify it against option_chains() first",
                code=200,
            )
        return q

    # ------------------------------------------------------------------ market data
    def quote(self, contract: Contract) -> Quote:
        return self.quotes([contract])[0]

    def quotes(self, contracts: Sequence[Contract]) -> list[Quote]:
        """Snapshots with FaultPlan applied (stale / NaN greeks / crossed)."""
        with self._lock:
            found = self.market.qualify_many(contracts)
            for asked, known in zip(contracts, found, strict=True):
                if known is None:
                    self._resolve(asked)  # raises the IB-200 error naming the contract
            resolved = [k for k in found if k is not None]
            fresh = self.market.quotes_qualified(resolved)
            out: list[Quote] = []
            for c, q in zip(resolved, fresh, strict=True):
                key = _quote_key(c)
                if self.faults.stale_quotes:
                    q = replace(self._last_quotes.get(key, q), stale=True)
                else:
                    self._last_quotes[key] = q
                if self.faults.nan_greeks and c.sec_type in (SecType.OPT, SecType.BAG):
                    q = replace(
                        q, iv=math.nan, delta=math.nan, gamma=math.nan, vega=math.nan,
                        theta=math.nan,
                    )  # fmt: skip
                if self.faults.crossed_quotes and math.isfinite(q.bid) and math.isfinite(q.ask):
                    q = replace(q, bid=q.ask + self._tick(c), ask=q.bid)
                out.append(q)
            self.faults.crossed_quotes = False
            return out

    def bars(
        self,
        contract: Contract,
        *,
        end: datetime,
        duration: timedelta,
        bar_size: str = "1 min",
        what: str = "TRADES",
    ) -> list[Bar]:
        """Historical bars (`MarketSimulator.bars`); `what` is IB's whatToShow."""
        c = self._resolve(contract)
        try:
            return self.market.bars(c, end=end, duration=duration, bar_size=bar_size, what=what)
        except ValueError as exc:
            raise SimExchangeError(f"historical data request invalid: {exc}", code=321) from exc

    # ------------------------------------------------------------------ orders
    def place_order(
        self, order: OrderRequest, *, client_id: int = 0, order_id: int | None = None
    ) -> OrderState:
        """Place (or, for a known order_ref, return the existing order without placing).

        `order_id` lets a socket client choose its id as IB clients do; it must be unused.
        """
        with self._lock:
            if order.what_if:
                margin = self.what_if(order)
                return OrderState(
                    order_id=0, order_ref=order.order_ref, contract=order.contract,
                    action=order.action, quantity=order.quantity, status=OrderStatus.CANCELLED,
                    limit_price=order.limit_price, order_type=order.order_type,
                    message=f"what-if only: initial margin {margin:.2f}",
                )  # fmt: skip
            known = self._by_ref.get(order.order_ref)
            if known is not None:
                return self._orders[known].state
            if order_id is not None:
                if order_id in self._orders or order_id <= 0:
                    raise SimExchangeError(f"Duplicate order id {order_id}", code=103)
                oid = order_id
            else:
                oid = self._next_id
            self._next_id = max(self._next_id, oid + 1)
            perm_id = PERM_ID_BASE + oid
            base = OrderState(
                order_id=oid, order_ref=order.order_ref, contract=order.contract,
                action=order.action, quantity=order.quantity, status=OrderStatus.PENDING,
                limit_price=order.limit_price, order_type=order.order_type, perm_id=perm_id,
            )  # fmt: skip
            ts = self._ts()
            reason, contract = self._validate(order)
            if reason is None and self.faults.reject_next > 0:
                self.faults.reject_next -= 1
                reason = (
                    "[201] Order rejected - reason: simulated rejection (FaultPlan.reject_next)"
                )
            legs: list[_Leg] = []
            if reason is None and contract is not None:
                legs = self._legs(contract, order.action)
                needed = self._funds_needed(legs, order, contract) + self._commission_estimate(
                    legs, order.quantity
                )
                available = self._summary().available_funds
                if needed > 0 and needed > available:
                    reason = (
                        "[201] Order rejected - reason: insufficient buying power: the order "
                        f"needs {needed:,.2f} of available funds but the account has "
                        f"{available:,.2f}; reduce the quantity or close positions first"
                    )
            if reason is not None:
                state = replace(base, status=OrderStatus.REJECTED, message=reason)
                self._orders[oid] = _Working(state, legs, client_id, ts, None)
                self._by_ref[order.order_ref] = oid
                log.info("order %s (%s) rejected: %s", oid, order.order_ref, reason)
                self._emit(OrderUpdated(state))
                return state
            assert contract is not None
            state = replace(base, contract=contract)
            expires = None if order.tif == "GTC" else self._session_close(contract, ts)
            w = _Working(
                state=state,
                legs=legs,
                client_id=client_id,
                eligible_at=ts + math.ceil(self.faults.delay_fills_s),
                expires_at=expires,
                cap=self.faults.partial_fill_next,
            )
            self.faults.partial_fill_next = None
            w.state = replace(state, status=self._working_status(contract, ts))
            self._orders[oid] = w
            self._by_ref[order.order_ref] = oid
            self._emit(OrderUpdated(w.state))
            self._match(w, ts, [])
            return w.state

    def _validate(self, order: OrderRequest) -> tuple[str | None, Contract | None]:
        """(reject reason, qualified contract): bad contract, price or tif -> a reason."""
        contract = self.market.qualify(order.contract)
        if contract is None:
            return (
                f"[200] No security definition has been found for the request: "
                f"{order.contract.describe()} (con_id={order.contract.con_id})",
                None,
            )
        if contract.sec_type is SecType.IND:
            return (
                f"[201] Order rejected - reason: {contract.symbol} is an index, not tradable",
                None,
            )
        if order.tif not in SUPPORTED_TIF:
            return (
                f"[201] Order rejected - reason: tif {order.tif!r} is not supported; "
                f"use one of {SUPPORTED_TIF}",
                None,
            )
        if contract.sec_type is SecType.BAG:
            legs = self.market.combo_legs(contract)
            symbols = {c.symbol for c, _ in legs}
            if len(symbols) != 1 or any(c.sec_type is not SecType.OPT for c, _ in legs):
                return (
                    "[201] Order rejected - reason: combo legs must all be options on one "
                    f"underlying, got {sorted(symbols)}",
                    None,
                )
            gone = [c.describe() for c, _ in legs if self.market.qualify(c) is None]
            if gone:
                return (
                    f"[200] No security definition has been found for combo legs {gone} "
                    "(expired or no longer listed)",
                    None,
                )
        lp = order.limit_price
        if order.order_type is OrderType.LMT and lp is not None:
            if contract.sec_type is not SecType.BAG and lp <= 0:
                return (
                    f"[201] Order rejected - reason: limit_price must be > 0 for "
                    f"{contract.sec_type.value} orders, got {lp}; only BAG combos may use a "
                    "negative (credit) limit",
                    None,
                )
            tick = self._tick(contract)
            if abs(lp / tick - round(lp / tick)) > 1e-6:
                return (
                    f"[110] The price does not conform to the minimum price variation for this "
                    f"contract: limit_price {lp} is not a multiple of {tick}",
                    None,
                )
        return None, contract

    def _legs(self, contract: Contract, action: Action) -> list[_Leg]:
        if contract.sec_type is not SecType.BAG:
            return [_Leg(contract, 1, action)]
        out = []
        for leg_c, leg in self.market.combo_legs(contract):
            leg_action = Action(leg.action)
            if action is Action.SELL:
                leg_action = Action.SELL if leg_action is Action.BUY else Action.BUY
            out.append(_Leg(leg_c, leg.ratio, leg_action))
        return out

    def _working_status(self, contract: Contract, ts: int) -> OrderStatus:
        return (
            OrderStatus.SUBMITTED
            if self.market.is_open(_session_contract(contract), from_epoch(ts))
            else OrderStatus.PENDING
        )

    def _session_close(self, contract: Contract, ts: int) -> int:
        """When a DAY order placed at `ts` expires: its session's (next) close."""
        tab = self.market.calendar.table
        if _session_contract(contract).sec_type is SecType.FUT:
            i = int(np.searchsorted(tab.fut_close, ts, side="right"))
            return int(tab.fut_close[i])
        i = int(np.searchsorted(tab.rth_close, ts, side="right"))
        return int(tab.rth_close[i])

    def cancel_order(self, order_id: int) -> OrderState:
        """Cancel a working order; a finished order is returned unchanged."""
        with self._lock:
            w = self._get(order_id)
            if w.state.status.is_done:
                return w.state
            w.state = replace(
                w.state,
                status=OrderStatus.CANCELLED,
                message="[202] Order Canceled - reason: cancelled by client",
            )
            self._emit(OrderUpdated(w.state))
            return w.state

    def _get(self, order_id: int) -> _Working:
        w = self._orders.get(order_id)
        if w is None:
            raise SimExchangeError(f"order id {order_id} is not known to the exchange", code=10147)
        return w

    def order(self, order_id: int) -> OrderState:
        with self._lock:
            return self._get(order_id).state

    def find_order(self, order_ref: str) -> OrderState | None:
        with self._lock:
            oid = self._by_ref.get(order_ref)
            return None if oid is None else self._orders[oid].state

    def open_orders(self) -> list[OrderState]:
        with self._lock:
            return [w.state for w in self._orders.values() if not w.state.status.is_done]

    def completed_orders(self) -> list[OrderState]:
        with self._lock:
            return [w.state for w in self._orders.values() if w.state.status.is_done]

    def executions(self, since: datetime | None = None) -> list[Execution]:
        """Every fill (including expiry settlements) at or after `since`, each exec_id once."""
        with self._lock:
            if since is None:
                return list(self._executions)
            return [e for e in self._executions if e.time >= since]

    # ------------------------------------------------------------------ matching
    def _match(self, w: _Working, ts: int, out: list[Execution]) -> None:
        """Fill what is marketable now (respecting delays, holds, sizes and session)."""
        st = w.state
        if st.status.is_done or ts < w.eligible_at or ts < w.hold_until:
            return
        contract = st.contract
        now = from_epoch(ts)
        if not self.market.is_open(_session_contract(contract), now):
            return
        if st.status is OrderStatus.PENDING:
            w.state = st = replace(st, status=OrderStatus.SUBMITTED)
            self._emit(OrderUpdated(st))
        quotes = self.market.quotes_qualified([leg.contract for leg in w.legs])
        prices: list[float] = []
        size = st.remaining
        for leg, q in zip(w.legs, quotes, strict=True):
            px, avail = (q.ask, q.ask_size) if leg.action is Action.BUY else (q.bid, q.bid_size)
            if not math.isfinite(px) or avail <= 0:
                return
            prices.append(px)
            size = min(size, avail // leg.ratio)
        signs = [1 if leg.action is Action.BUY else -1 for leg in w.legs]
        # cash paid per combo unit, in the order's direction (SELL orders: received = -net)
        direction = 1 if st.action is Action.BUY else -1
        natural = direction * sum(
            s * leg.ratio * p for s, leg, p in zip(signs, w.legs, prices, strict=True)
        )
        limit = st.limit_price if st.order_type is OrderType.LMT else None
        if limit is not None and (
            (direction > 0 and limit < natural - 1e-9) or (direction < 0 and limit > natural + 1e-9)
        ):
            return
        if w.cap is not None and w.fills == 0:
            if w.cap == 0:  # fault: nothing now, the whole order is held
                w.cap = None
                w.hold_until = ts + math.ceil(self.faults.partial_hold_s)
                return
            size = min(size, w.cap)
        if size <= 0:
            return
        prices = self._slip(w.legs, signs, prices, natural, limit, direction)
        price = direction * sum(
            s * leg.ratio * p for s, leg, p in zip(signs, w.legs, prices, strict=True)
        )
        w.fills += 1
        for n, (leg, px) in enumerate(zip(w.legs, prices, strict=True), start=1):
            qty = size * leg.ratio
            ex = Execution(
                exec_id=f"{st.perm_id:08x}.{w.fills:02d}.{n:02d}",
                order_id=st.order_id,
                order_ref=st.order_ref,
                contract=leg.contract,
                side=leg.action,
                quantity=qty,
                price=round(px, 6),
                time=now,
                account=self.account,
                commission=self._commission(leg.contract, qty),
                perm_id=st.perm_id,
            )
            self._book_execution(ex, out)
        w.paid += price * size
        filled = st.filled + size
        w.state = replace(
            st,
            filled=filled,
            avg_fill_price=round(w.paid / filled, 6),
            status=OrderStatus.FILLED if filled >= st.quantity else OrderStatus.SUBMITTED,
        )
        if w.cap is not None and filled < st.quantity:
            w.hold_until = ts + math.ceil(self.faults.partial_hold_s)
        w.cap = None
        self._emit(OrderUpdated(w.state))

    def _slip(
        self,
        legs: list[_Leg],
        signs: list[int],
        prices: list[float],
        natural: float,
        limit: float | None,
        direction: int,
    ) -> list[float]:
        """Move leg prices `slippage_ticks` against the trader, never past the limit."""
        out = list(prices)
        if self.slippage_ticks == 0:
            return out
        room = math.inf if limit is None else direction * (limit - natural)
        for _ in range(self.slippage_ticks):
            for i, leg in enumerate(legs):
                tick = self._tick(leg.contract)
                cost = tick * leg.ratio  # every tick of slippage costs the trader this much
                if cost > room + 1e-9:
                    continue
                if signs[i] < 0 and out[i] - tick < 0:
                    continue
                out[i] = round(out[i] + signs[i] * tick, 6)
                room -= cost
        return out

    def _commission(self, contract: Contract, qty: int) -> float:
        if contract.sec_type is SecType.STK:
            return round(max(STOCK_COMMISSION_MIN, STOCK_COMMISSION_PER_SHARE * qty), 4)
        return round(self.commission_per_contract * qty, 4)

    def _commission_estimate(self, legs: list[_Leg], qty: int) -> float:
        return sum(self._commission(leg.contract, qty * leg.ratio) for leg in legs)

    def _book_execution(self, ex: Execution, out: list[Execution]) -> None:
        """Record one fill: execution list, cash, position, events (duplicate fault)."""
        if ex.exec_id in self._exec_ids:
            raise AssertionError(f"exec_id {ex.exec_id} generated twice")
        self._exec_ids.add(ex.exec_id)
        self._executions.append(ex)
        book = self._apply(ex)
        out.append(ex)
        self._emit(ExecutionReported(ex))
        if self.faults.duplicate_next_execution:
            self.faults.duplicate_next_execution = False
            out.append(ex)
            self._emit(ExecutionReported(ex, duplicate=True))
        self._emit(PositionChanged(_position(self.account, book)))

    def _apply(self, ex: Execution) -> _Book:
        """Update cash, realized P&L and the position (IB avg_cost incl. commission)."""
        acct = self._acct
        c = ex.contract
        book = acct.books.get(c.con_id)
        if book is None:
            book = acct.books[c.con_id] = _Book(c)
        mult = c.multiplier
        unit = ex.price * mult
        comm = 0.0 if math.isnan(ex.commission) else ex.commission
        signed = ex.signed_quantity
        sgn = 1 if signed > 0 else -1
        q = book.quantity
        is_future = c.sec_type is SecType.FUT
        if not is_future:
            acct.cash -= signed * unit + comm
        if q == 0 or (q > 0) == (signed > 0):
            total = abs(q) + abs(signed)
            book.avg_cost = (book.avg_cost * abs(q) + unit * abs(signed) + sgn * comm) / total
            book.quantity = q + signed
            return book
        closed = min(abs(q), abs(signed))
        comm_closed = comm * closed / abs(signed)
        pos_sign = 1 if q > 0 else -1
        realized = pos_sign * (unit - book.avg_cost) * closed - comm_closed
        acct.realized += realized
        if is_future:
            acct.cash += realized
        new_q = q + signed
        residual = abs(signed) - closed
        if new_q == 0:
            book.avg_cost = 0.0
        elif residual > 0:  # flipped through zero: the rest opens at this price
            book.avg_cost = unit + sgn * (comm - comm_closed) / residual
        book.quantity = new_q
        return book

    # ------------------------------------------------------------------ clock
    def on_clock(self) -> list[Execution]:
        """Catch up with the clock: expire DAY orders, settle expiries, match resting
        orders. Returns the executions reported by this call (a duplicate-fault
        execution appears twice, as it was reported twice)."""
        with self._lock:
            ts = self._ts()
            out: list[Execution] = []
            for w in list(self._orders.values()):
                if not w.state.status.is_done and w.expires_at is not None and ts >= w.expires_at:
                    w.state = replace(
                        w.state,
                        status=OrderStatus.CANCELLED,
                        message="[202] Order Canceled - reason: DAY order expired at the close",
                    )
                    self._emit(OrderUpdated(w.state))
            self._settle_expiries(ts, out)
            for w in sorted(self._orders.values(), key=lambda x: x.state.order_id):
                self._match(w, ts, out)
            return out

    def _settle_expiries(self, ts: int, out: list[Execution]) -> None:
        books = sorted(self._acct.books.values(), key=lambda b: b.contract.con_id)
        for book in books:
            c = book.contract
            if book.quantity == 0 or c.expiry is None:
                continue
            close_ts = int(
                self.market.calendar.table.rth_close[self.market.calendar.index(c.expiry)]
            )
            if ts < close_ts:
                continue
            settle = self.market.settlement_price(c, c.expiry)
            if c.sec_type is SecType.OPT:
                assert c.strike is not None
                value = (
                    max(0.0, settle - c.strike)
                    if c.right is Right.CALL
                    else max(0.0, c.strike - settle)
                )
            else:
                value = settle
            for w in self._orders.values():  # nothing may rest on an expired contract
                if not w.state.status.is_done and any(
                    leg.contract.con_id == c.con_id for leg in w.legs
                ):
                    w.state = replace(
                        w.state,
                        status=OrderStatus.CANCELLED,
                        message=f"[202] Order Canceled - reason: {c.describe()} expired",
                    )
                    self._emit(OrderUpdated(w.state))
            ex = Execution(
                exec_id=f"EXP.{c.con_id}.{c.expiry:%Y%m%d}",
                order_id=0,
                order_ref=f"EXPIRY:{c.local_symbol or c.describe()}",
                contract=c,
                side=Action.SELL if book.quantity > 0 else Action.BUY,
                quantity=abs(book.quantity),
                price=round(value, 6),
                time=from_epoch(close_ts),
                account=self.account,
                commission=0.0,
                perm_id=0,
            )
            log.info("settling %s x %d at %.4f (expiry)", c.describe(), book.quantity, value)
            self._book_execution(ex, out)

    # ------------------------------------------------------------------ account
    def positions(self) -> list[Position]:
        with self._lock:
            books = sorted(self._acct.books.values(), key=lambda b: b.contract.con_id)
            return [_position(self.account, b) for b in books if b.quantity != 0]

    def _marks(self, contracts: Sequence[Contract]) -> dict[int, float]:
        if not contracts:
            return {}
        out = {}
        for c, q in zip(contracts, self.market.quotes_qualified(contracts), strict=True):
            m = q.mid
            out[c.con_id] = m if math.isfinite(m) else q.last
        return out

    def _holdings(self) -> list[tuple[Contract, int]]:
        return [(b.contract, b.quantity) for b in self._acct.books.values() if b.quantity != 0]

    def _margin(self, holdings: list[tuple[Contract, int]], marks: dict[int, float]) -> float:
        missing = [c for c, _ in holdings if c.con_id not in marks]
        marks = {**marks, **self._marks(missing)}
        return portfolio_margin(
            holdings,
            price=lambda c: marks[c.con_id],
            spot=self.market.price,
            futures_rate=lambda s: self.market.f_profiles[self.market.futures.index(s)].margin_rate,
        )

    def _summary(self) -> AccountSummary:
        holdings = self._holdings()
        marks = self._marks([c for c, _ in holdings])
        acct = self._acct
        securities = options = futures_pnl = unrealized = 0.0
        for b in acct.books.values():
            if b.quantity == 0:
                continue
            value = b.quantity * marks[b.contract.con_id] * b.contract.multiplier
            pnl = value - b.quantity * b.avg_cost
            unrealized += pnl
            if b.contract.sec_type is SecType.FUT:
                futures_pnl += pnl
            else:
                securities += value
                if b.contract.sec_type is SecType.OPT:
                    options += value
        net_liq = acct.cash + securities + futures_pnl
        margin = self._margin(holdings, marks)
        available = net_liq - options - margin
        return AccountSummary(
            account=self.account,
            net_liquidation=round(net_liq, 2),
            buying_power=round(available, 2),
            available_funds=round(available, 2),
            maintenance_margin=round(margin, 2),
            realized_pnl=round(acct.realized, 2),
            unrealized_pnl=round(unrealized, 2),
        )

    def account_summary(self) -> AccountSummary:
        with self._lock:
            return self._summary()

    def what_if(self, order: OrderRequest) -> float:
        """Initial margin the order would take from available funds, premium included:
        margin after - margin before - premium received (plus premium paid for long
        options). A defined-risk credit spread gives width x multiplier x qty - credit;
        risk-reducing orders give a negative number. Commissions are not included."""
        with self._lock:
            contract = self._resolve(order.contract)
            legs = self._legs(contract, order.action)
            return round(self._funds_needed(legs, order, contract), 2)

    def _funds_needed(self, legs: list[_Leg], order: OrderRequest, contract: Contract) -> float:
        before = self._holdings()
        after_map: dict[int, tuple[Contract, int]] = {c.con_id: (c, q) for c, q in before}
        for leg in legs:
            c, q = after_map.get(leg.contract.con_id, (leg.contract, 0))
            after_map[leg.contract.con_id] = (c, q + leg.action.sign * leg.ratio * order.quantity)
        after = list(after_map.values())
        marks = self._marks([c for c, _ in after])
        d_margin = self._margin(after, marks) - self._margin(before, marks)
        # premium: equity with loan value excludes options, so paying/receiving premium
        # moves available funds one for one; stock and futures trades do not (at the mark)
        if all(leg.contract.sec_type is not SecType.OPT for leg in legs):
            return d_margin
        if order.order_type is OrderType.LMT and order.limit_price is not None:
            combo_price = order.limit_price
        else:
            touch = self.market.quotes([contract])[0]
            combo_price = touch.ask if order.action is Action.BUY else touch.bid
        direction = 1 if order.action is Action.BUY else -1
        mult = legs[0].contract.multiplier
        premium_paid = direction * combo_price * mult * order.quantity
        return d_margin + premium_paid


# ---------------------------------------------------------------------------- helpers
def default_clock(settings: Settings) -> SimClock:
    """A SimClock at the regular-hours open of the first session on/after `sim.start`."""
    cal = MarketCalendar()
    day = cal.next_session(date.fromisoformat(settings.sim.start))
    return SimClock(cal.rth_open(day))


def build_exchange(settings: Settings, clock: Clock | None = None) -> SimExchange:
    """Factory used by the gateway: `SimExchange.from_settings`."""
    return SimExchange.from_settings(settings, clock)


def _session_contract(contract: Contract) -> Contract:
    """The contract whose trading hours apply (a BAG trades when its options do)."""
    if contract.sec_type is SecType.BAG:
        return Contract.stock(contract.symbol)
    return contract


def _quote_key(contract: Contract) -> object:
    if contract.sec_type is SecType.BAG:
        return ("BAG", contract.combo_legs)
    return contract.con_id


def _position(account: str, book: _Book) -> Position:
    return Position(
        account=account,
        contract=book.contract,
        quantity=book.quantity,
        avg_cost=round(book.avg_cost, 6) if book.quantity else 0.0,
    )
