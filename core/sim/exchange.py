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
all legs atomically: one Execution per leg, same order_id and order_ref, and, as IB does,
one BAG-level report (the combo's net price and quantity) that moves no position.

IB's habits (`habits`, the `sim` settings; seeded, on by default; docs/IB_ASSUMPTIONS.md)
--------------------------------------------------------------------------------------
* execIds read `permId.fillTime.FFLL.VV` (fill FF, leg LL, 00 = the BAG report): everything
  before the final period names one fill; VV is its version. A fill may first be reported
  wrong (price or quantity) as version 01, then corrected as 02; the account books the
  correction only.
* orderRef is free text: a second order with a known ref is a new order.
* A cancel may lose the race: the order fills at its limit (fully, or partly and the rest
  is cancelled) before the cancel lands.
* Options on the ETFs are American and physically settled: short calls ITM with extrinsic
  below the next dividend may be assigned on the eve of the ex-date, deep ITM short puts
  near expiry may be assigned, and at expiry an option ITM by >= $0.01 is exercised
  (exercise by exception). The option position goes and stock comes at the strike, with
  no execution and no commission: a `Delivery` records it.

`executions()` are the fills that moved the account (what positions add up to, with
deliveries); `reports()` are the execution reports IB sends (BAG-level ones and corrected
versions included), which the gateway serves.

Accounting is IB Reg-T style: net liquidation = cash + securities at the mid + futures
P&L; equity with loan value excludes option values; available funds (and buying power;
no stock leverage multiple is applied) = equity with loan - initial margin
(`margin.py`). Options settle at their expiry's regular close (above); futures expire
at theirs with a synthetic cash-settling execution (order_id 0, order_ref
"EXPIRY:<local symbol>", price = the official close).
"""

from __future__ import annotations

import logging
import math
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Final

import numpy as np

from core.clock import Clock, SimClock
from core.config import Settings, SimSettings
from core.domain import (
    AccountSummary,
    Action,
    Bar,
    Contract,
    Dividends,
    Execution,
    MarginImpact,
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
from core.sim.dividends import next_dividend
from core.sim.margin import portfolio_margin
from core.sim.market import MarketSimulator
from core.sim.volsurface import OPTION_TICK

log = logging.getLogger(f"v6.{__name__}")

PERM_ID_BASE: Final = 0x10000000
EXERCISE_BY_EXCEPTION: Final = 0.01  # OCC: exercised at expiry when ITM by at least this
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
    correct_next_execution: bool = False  # the next fill is reported wrong, then corrected
    fill_on_next_cancel: bool = False  # the next cancel of a live order loses to a fill
    assign_next: bool = False  # the next clock step assigns a short option position
    exercise_next: bool = False  # the next clock step settles an option as at its expiry

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
    booked: bool = True  # False: a BAG-level report, or a version a correction replaces


@dataclass(frozen=True, slots=True)
class PositionChanged:
    position: Position  # quantity 0 when the position was closed


ExchangeEvent = OrderUpdated | ExecutionReported | PositionChanged


class DeliveryKind(StrEnum):
    ASSIGNED = "assignment"  # a short option exercised against the account
    EXERCISED = "exercise"  # a long option exercised (by exception, at expiry)
    EXPIRED = "expired"  # out of the money at expiry: gone, nothing delivered


@dataclass(frozen=True, slots=True)
class Delivery:
    """An option position settled without an execution: IB shows it only as position
    changes (the option goes; for an assignment or exercise, stock comes at the strike)."""

    kind: DeliveryKind
    option: Contract
    quantity: int  # option contracts settled, signed as held (short < 0)
    stock: Contract | None  # None when it expired worthless
    shares: int  # signed shares delivered to the account
    price: float  # per share: the strike (0 when it expired worthless)
    time: datetime
    at_expiry: bool


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
        habits: SimSettings | None = None,
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
        # IB's seeded habits (corrections, cancel races, assignments); the gateway reads the
        # socket-level ones (late commissions, clientId linger) from here too
        self.habits = habits if habits is not None else SimSettings(seed=market.seed)
        seed = self.habits.seed
        self._rng_correction = random.Random(f"{seed}:correction")
        self._rng_cancel = random.Random(f"{seed}:cancel")
        self._rng_assignment = random.Random(f"{seed}:assignment")
        self._acct = _Account(cash=float(net_liquidation))
        self._orders: dict[int, _Working] = {}
        self._by_ref: dict[str, int] = {}  # orderRef -> the latest order carrying it
        self._next_id = 1
        self._executions: list[Execution] = []
        self._exec_ids: set[str] = set()
        self._reports: list[ExecutionReported] = []
        self._deliveries: list[Delivery] = []
        self._assessed_close = self._last_close(self._ts())[0]  # early assignment done up to
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
            habits=sim,
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

    def quotes(self, contracts: Sequence[Contract], at: datetime | None = None) -> list[Quote]:
        """Snapshots with FaultPlan applied (stale / NaN greeks / crossed); `at` prices them
        at an earlier time (a delayed feed), which neither feeds nor reads the stale cache."""
        with self._lock:
            found = self.market.qualify_many(contracts)
            for asked, known in zip(contracts, found, strict=True):
                if known is None:
                    self._resolve(asked)  # raises the IB-200 error naming the contract
            resolved = [k for k in found if k is not None]
            fresh = self.market.quotes_qualified(resolved, at)
            out: list[Quote] = []
            for c, q in zip(resolved, fresh, strict=True):
                key = _quote_key(c)
                if self.faults.stale_quotes:  # a delayed feed freezes at its own past
                    q = replace(self._last_quotes.get(key, q) if at is None else q, stale=True)
                elif at is None:
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
        """Place an order. The order_ref is free text, as at IB: a known one places another
        order (idempotency is the client's job). `order_id` lets a socket client choose its
        id as IB clients do; it must be unused.
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
        """Cancel a working order; a finished order is returned unchanged.

        A cancel is a request, as at IB: now and then (`habits.cancel_fill_rate`, or
        `faults.fill_on_next_cancel`) the order fills at its limit before the cancel lands,
        fully (the result is FILLED) or partly (the rest is then cancelled)."""
        with self._lock:
            w = self._get(order_id)
            if w.state.status.is_done:
                return w.state
            self._race_cancel(w)
            if w.state.status.is_done:
                return w.state
            w.state = replace(
                w.state,
                status=OrderStatus.CANCELLED,
                message="[202] Order Canceled - reason: cancelled by client",
            )
            self._emit(OrderUpdated(w.state))
            return w.state

    def _race_cancel(self, w: _Working) -> None:
        """Maybe fill `w` at its limit just before its cancel lands (IB: 10148/161)."""
        st = w.state
        ts = self._ts()
        forced = self.faults.fill_on_next_cancel
        can_fill = (
            st.order_type is OrderType.LMT
            and st.limit_price is not None
            and st.status is OrderStatus.SUBMITTED
            and self.market.is_open(_session_contract(st.contract), from_epoch(ts))
        )
        if not can_fill or not (forced or self._rng_cancel.random() < self.habits.cancel_fill_rate):
            return
        self.faults.fill_on_next_cancel = False
        assert st.limit_price is not None
        size = st.remaining
        if size > 1 and self._rng_cancel.random() < 0.5:
            size = self._rng_cancel.randint(1, size - 1)
        quotes = self.market.quotes_qualified([leg.contract for leg in w.legs])
        mids = [q.mid if math.isfinite(q.mid) else q.last for q in quotes]
        prices = _leg_prices_at(w.legs, mids, st.limit_price, st.action)
        log.info("order %s (%s) fills %d before its cancel lands", st.order_id, st.order_ref, size)
        self._fill(w, size, prices, ts, [])

    def _get(self, order_id: int) -> _Working:
        w = self._orders.get(order_id)
        if w is None:
            raise SimExchangeError(f"order id {order_id} is not known to the exchange", code=10147)
        return w

    def order(self, order_id: int) -> OrderState:
        with self._lock:
            return self._get(order_id).state

    def find_order(self, order_ref: str) -> OrderState | None:
        """The latest order placed with `order_ref` (refs are not unique at IB)."""
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
        """Every fill that moved the account (futures expiry settlements included) at or
        after `since`, each once, as finally corrected; per leg for combos."""
        with self._lock:
            if since is None:
                return list(self._executions)
            return [e for e in self._executions if e.time >= since]

    def reports(self, since: datetime | None = None) -> list[ExecutionReported]:
        """The execution reports IB sent, in order: the booked fills, the BAG-level report
        of each combo fill and every version a correction replaced (`booked` False)."""
        with self._lock:
            return [r for r in self._reports if since is None or r.execution.time >= since]

    def deliveries(self) -> list[Delivery]:
        """Option positions settled by assignment, exercise or expiry, in order."""
        with self._lock:
            return list(self._deliveries)

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
        self._fill(w, size, prices, ts, out)
        if w.cap is not None and w.state.filled < st.quantity:
            w.hold_until = ts + math.ceil(self.faults.partial_hold_s)
        w.cap = None

    def _fill(
        self, w: _Working, size: int, prices: list[float], ts: int, out: list[Execution]
    ) -> None:
        """Book `size` combo units at these leg prices: one execution per leg, the BAG-level
        report for a combo, the order's new state."""
        st = w.state
        now = from_epoch(ts)
        direction = 1 if st.action is Action.BUY else -1
        signs = [1 if leg.action is Action.BUY else -1 for leg in w.legs]
        price = direction * sum(
            s * leg.ratio * p for s, leg, p in zip(signs, w.legs, prices, strict=True)
        )
        w.fills += 1
        for n, (leg, px) in enumerate(zip(w.legs, prices, strict=True), start=1):
            qty = size * leg.ratio
            ex = Execution(
                exec_id=exec_id(st.perm_id, ts, w.fills, n),
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
        if st.contract.sec_type is SecType.BAG:
            bag = Execution(
                exec_id=exec_id(st.perm_id, ts, w.fills, 0),
                order_id=st.order_id,
                order_ref=st.order_ref,
                contract=st.contract,
                side=st.action,
                quantity=size,
                price=round(price, 6),
                time=now,
                account=self.account,
                perm_id=st.perm_id,
            )
            self._report(bag, booked=False)
        w.paid += price * size
        filled = st.filled + size
        w.state = replace(
            st,
            filled=filled,
            avg_fill_price=round(w.paid / filled, 6),
            status=OrderStatus.FILLED if filled >= st.quantity else OrderStatus.SUBMITTED,
        )
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

    def _report(self, ex: Execution, *, booked: bool) -> None:
        event = ExecutionReported(ex, booked=booked)
        self._reports.append(event)
        self._emit(event)

    def _book_execution(self, ex: Execution, out: list[Execution]) -> None:
        """Record one fill: execution list, cash, position, events (a wrong first report
        and its correction; the duplicate fault)."""
        wrong = self._wrong_first_report(ex)
        if wrong is not None:
            self._report(wrong, booked=False)
            ex = replace(ex, exec_id=corrected_exec_id(ex.exec_id))
        if ex.exec_id in self._exec_ids:
            raise AssertionError(f"exec_id {ex.exec_id} generated twice")
        self._exec_ids.add(ex.exec_id)
        self._executions.append(ex)
        book = self._apply(ex)
        out.append(ex)
        self._report(ex, booked=True)
        if self.faults.duplicate_next_execution:
            self.faults.duplicate_next_execution = False
            out.append(ex)
            self._emit(ExecutionReported(ex, duplicate=True))
        self._emit(PositionChanged(_position(self.account, book)))

    def _wrong_first_report(self, ex: Execution) -> Execution | None:
        """The version IB reports before correcting it (same, or price or quantity off), or
        None (the usual case). Only order fills are corrected, never BAG-level reports."""
        forced = self.faults.correct_next_execution
        if ex.order_id == 0 or not (
            forced or self._rng_correction.random() < self.habits.correction_rate
        ):
            return None
        self.faults.correct_next_execution = False
        rng = self._rng_correction
        wrong = replace(ex, commission=math.nan)  # the commission comes with the correction
        match rng.choice(("same", "price", "quantity")):
            case "price":
                tick = self._tick(ex.contract)
                step = tick if ex.price - tick <= 0 or rng.random() < 0.5 else -tick
                wrong = replace(wrong, price=round(ex.price + step, 6))
            case "quantity":
                step = 1 if ex.quantity == 1 or rng.random() < 0.5 else -1
                wrong = replace(wrong, quantity=ex.quantity + step)
        log.info("execution %s is reported wrong first, then corrected", ex.exec_id)
        return wrong

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
            self._assign_early(ts)
            if self.faults.exercise_next:
                self._exercise_now(ts)
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
            if c.sec_type is SecType.OPT:
                self._settle_option(book, book.quantity, settle, close_ts, at_expiry=True)
                continue
            ex = Execution(
                exec_id=exec_id(0, close_ts, 0, 0, prefix=f"EXP{c.con_id:08x}"),
                order_id=0,
                order_ref=f"EXPIRY:{c.local_symbol or c.describe()}",
                contract=c,
                side=Action.SELL if book.quantity > 0 else Action.BUY,
                quantity=abs(book.quantity),
                price=round(settle, 6),
                time=from_epoch(close_ts),
                account=self.account,
                commission=0.0,
                perm_id=0,
            )
            log.info("settling %s x %d at %.4f (expiry)", c.describe(), book.quantity, settle)
            self._book_execution(ex, out)

    def _settle_option(
        self, book: _Book, held: int, spot: float, ts: int, *, at_expiry: bool
    ) -> None:
        """Settle `held` (signed) contracts of an option position: at expiry an option ITM by
        >= $0.01 is exercised (exercise by exception), else it lapses; before expiry it is an
        early assignment. The option leaves at 0; stock comes at the strike; no execution."""
        c = book.contract
        assert c.strike is not None and c.right is not None
        sign = 1 if c.right is Right.CALL else -1
        intrinsic = max(0.0, sign * (spot - c.strike))
        delivers = not at_expiry or intrinsic >= EXERCISE_BY_EXCEPTION - 1e-9
        when = from_epoch(ts)
        self._apply(_internal_fill(c, -held, 0.0, when, self.account))
        changed = [book]
        stock: Contract | None = None
        shares = 0
        if delivers:
            stock = self.market.qualify(Contract.stock(c.symbol))
            assert stock is not None, f"{c.symbol} options must deliver a listed stock"
            shares = held * c.multiplier * sign
            changed.append(self._apply(_internal_fill(stock, shares, c.strike, when, self.account)))
        kind = (
            DeliveryKind.EXPIRED
            if not delivers
            else DeliveryKind.ASSIGNED
            if held < 0
            else DeliveryKind.EXERCISED
        )
        self._deliveries.append(
            Delivery(kind, c, held, stock, shares, c.strike if delivers else 0.0, when, at_expiry)
        )
        log.info("%s: %s x %d -> %d shares", kind.value, c.describe(), held, shares)
        for b in changed:
            self._emit(PositionChanged(_position(self.account, b)))

    def _last_close(self, ts: int) -> tuple[int, date | None]:
        """The latest regular close at or before `ts` and its session (0, None: none yet)."""
        tab = self.market.calendar.table
        i = int(np.searchsorted(tab.rth_close, ts, side="right")) - 1
        return (int(tab.rth_close[i]), tab.days[i]) if i >= 0 else (0, None)

    def _assign_early(self, ts: int) -> None:
        """After each regular close (assessed once, with the quotes of the first clock step
        after it), short options may be assigned early, per contract, seeded: ITM calls
        whose extrinsic is below the dividend going ex on the next session, deep ITM puts
        near expiry. `faults.assign_next` assigns the first short position outright."""
        close, day = self._last_close(ts)
        due = day is not None and close > self._assessed_close
        if not (due or self.faults.assign_next):
            return
        shorts = sorted(
            (
                b
                for b in self._acct.books.values()
                if b.quantity < 0 and b.contract.sec_type is SecType.OPT
            ),
            key=lambda b: b.contract.con_id,
        )
        if self.faults.assign_next and shorts:
            self.faults.assign_next = False
            first = shorts.pop(0)
            self._settle_option(first, first.quantity, self.market.price(first.contract.symbol),
                                ts, at_expiry=False)  # fmt: skip
        if not due or day is None:
            return
        self._assessed_close = close
        if not shorts:
            return
        quotes = self.market.quotes_qualified([b.contract for b in shorts])
        for book, q in zip(shorts, quotes, strict=True):
            n = self._assigned_contracts(book, q, day)
            if n:
                spot = self.market.settlement_price(book.contract, day)
                self._settle_option(book, -n, spot, ts, at_expiry=False)

    def _assigned_contracts(self, book: _Book, q: Quote, day: date) -> int:
        """How many of a short position's contracts are assigned after `day`'s close."""
        c = book.contract
        assert c.strike is not None and c.expiry is not None
        h = self.habits
        spot = self.market.settlement_price(c, day)
        value = q.mid if math.isfinite(q.mid) else q.last
        if not math.isfinite(value) or c.expiry <= day:
            return 0
        if c.right is Right.CALL:
            intrinsic = max(0.0, spot - c.strike)
            profile = self.market.u_profiles[self.market.underlyings.index(c.symbol)]
            div = next_dividend(self.market.calendar, day, spot, profile.dividend_yield)
            next_day = self.market.calendar.next_session(day + timedelta(days=1))
            eve = next_day == div.ex_date <= c.expiry
            rate = h.dividend_assignment_rate
            likely = intrinsic > 0 and eve and value - intrinsic < div.amount
        else:
            intrinsic = max(0.0, c.strike - spot)
            rate = h.put_assignment_rate
            likely = (
                (c.expiry - day).days <= h.put_assignment_days
                and intrinsic >= c.strike * h.put_assignment_itm_pct / 100
                and value - intrinsic < h.put_assignment_extrinsic
            )
        if not likely:
            return 0
        rng = self._rng_assignment
        return sum(1 for _ in range(-book.quantity) if rng.random() < rate)

    def _exercise_now(self, ts: int) -> None:
        """Fault: exercise one in-the-money option position now, as OCC's exercise by
        exception would at its expiry: the option goes, stock comes at the strike. Only an
        ITM option: at IB an option never lapses before its expiry date, so an out-of-money
        one vanishing early would be a position change no real account shows. With none
        in the money the fault stays armed."""

        def itm(b: _Book) -> bool:
            c = b.contract
            assert c.strike is not None
            sign = 1 if c.right is Right.CALL else -1
            return sign * (self.market.price(c.symbol) - c.strike) >= EXERCISE_BY_EXCEPTION

        options = [
            b
            for b in self._acct.books.values()
            if b.quantity != 0 and b.contract.sec_type is SecType.OPT and itm(b)
        ]
        if not options:
            return
        self.faults.exercise_next = False
        book = min(options, key=lambda b: (b.contract.expiry or date.max, b.contract.con_id))
        spot = self.market.price(book.contract.symbol)
        self._settle_option(book, book.quantity, spot, ts, at_expiry=True)

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

    def dividends(self, contract: Contract) -> Dividends | None:
        """What IB's generic tick 456 would say of a simulated stock (None: not a stock the
        simulator pays dividends on): the quarterly schedule of `core.sim.dividends`, the
        same one the early-assignment model uses."""
        m = self.market
        symbol = contract.symbol.upper()
        if contract.sec_type is not SecType.STK or symbol not in m.underlyings:
            return None
        annual_yield = m.u_profiles[m.underlyings.index(symbol)].dividend_yield
        if annual_yield <= 0:
            return Dividends(0.0, 0.0, None, None)
        with self._lock:
            div = next_dividend(m.calendar, m.trading_day(), m.price(symbol), annual_yield)
        return Dividends(div.amount * 4, div.amount * 4, div.ex_date, div.amount)

    def what_if(self, order: OrderRequest) -> float:
        """Initial margin the order would take from available funds, premium included:
        margin after - margin before - premium received (plus premium paid for long
        options). A defined-risk credit spread gives width x multiplier x qty - credit;
        risk-reducing orders give a negative number. Commissions are not included."""
        impact = self.margin_impact(order)
        assert impact.init_change is not None and impact.equity_with_loan_change is not None
        return round(impact.init_change - impact.equity_with_loan_change, 2)

    def margin_impact(self, order: OrderRequest) -> MarginImpact:
        """What IB's what-if would answer for `order` (nothing is placed).

        Initial margin change is Reg-T's requirement alone: a defined-risk spread adds
        width x multiplier x qty, the credit NOT subtracted; the premium moves equity with
        loan value instead (options have no loan value, so cash received counts one for
        one). Maintenance equals initial in this model. Commissions are not included."""
        with self._lock:
            contract = self._resolve(order.contract)
            legs = self._legs(contract, order.action)
            m_before, m_after = self._margins(legs, order.quantity)
            premium = round(self._premium_paid(legs, order, contract), 2)
            summary = self._summary()
        m_before, m_after = round(m_before, 2), round(m_after, 2)
        ewl_before = round(summary.available_funds + summary.maintenance_margin, 2)
        return MarginImpact(
            init_before=m_before,
            init_change=round(m_after - m_before, 2),
            init_after=m_after,
            maint_before=m_before,
            maint_change=round(m_after - m_before, 2),
            maint_after=m_after,
            equity_with_loan_before=ewl_before,
            equity_with_loan_change=-premium,
            equity_with_loan_after=round(ewl_before - premium, 2),
        )

    def _margins(self, legs: list[_Leg], quantity: int) -> tuple[float, float]:
        """Initial margin of the account's holdings before and after `quantity` of `legs`."""
        before = self._holdings()
        after_map: dict[int, tuple[Contract, int]] = {c.con_id: (c, q) for c, q in before}
        for leg in legs:
            c, q = after_map.get(leg.contract.con_id, (leg.contract, 0))
            after_map[leg.contract.con_id] = (c, q + leg.action.sign * leg.ratio * quantity)
        after = list(after_map.values())
        marks = self._marks([c for c, _ in after])
        return self._margin(before, marks), self._margin(after, marks)

    def _funds_needed(self, legs: list[_Leg], order: OrderRequest, contract: Contract) -> float:
        """Available funds the order takes: margin change plus premium paid (Reg-T)."""
        m_before, m_after = self._margins(legs, order.quantity)
        return m_after - m_before + self._premium_paid(legs, order, contract)

    def _premium_paid(self, legs: list[_Leg], order: OrderRequest, contract: Contract) -> float:
        """Option premium the order pays (negative: received) at its limit, else the touch.
        Stock and futures trades at the mark leave equity with loan unchanged."""
        if all(leg.contract.sec_type is not SecType.OPT for leg in legs):
            return 0.0
        if order.order_type is OrderType.LMT and order.limit_price is not None:
            combo_price = order.limit_price
        else:
            touch = self.market.quotes([contract])[0]
            combo_price = touch.ask if order.action is Action.BUY else touch.bid
        direction = 1 if order.action is Action.BUY else -1
        mult = legs[0].contract.multiplier
        return direction * combo_price * mult * order.quantity


# ---------------------------------------------------------------------------- helpers
def exec_id(perm_id: int, ts: int, fill: int, leg: int, *, prefix: str | None = None) -> str:
    """`permId.fillTime.FFLL.01`: all before the final period names one fill (leg 00 is a
    combo's BAG-level report); the final part is the version a correction bumps."""
    head = prefix if prefix is not None else f"{perm_id:08x}"
    return f"{head}.{ts:08x}.{fill:02d}{leg:02d}.01"


def corrected_exec_id(original: str) -> str:
    """The execId of the next version of a fill: only the part after the final period moves."""
    head, _, version = original.rpartition(".")
    return f"{head}.{int(version) + 1:02d}"


def _internal_fill(
    contract: Contract, signed: int, price: float, when: datetime, account: str
) -> Execution:
    """A position change that IB reports without an execution (assignment, exercise)."""
    return Execution(
        exec_id="",
        order_id=0,
        order_ref="",
        contract=contract,
        side=Action.BUY if signed > 0 else Action.SELL,
        quantity=abs(signed),
        price=price,
        time=when,
        account=account,
        commission=0.0,
    )


def _leg_prices_at(legs: list[_Leg], mids: list[float], net: float, action: Action) -> list[float]:
    """Leg prices near the mids whose combo net (in the order's direction) is `net`: the
    difference goes to the first leg that stays at or above a tick."""
    direction = 1 if action is Action.BUY else -1
    signs = [1 if leg.action is Action.BUY else -1 for leg in legs]
    prices = [max(OPTION_TICK, round(m, 2)) if math.isfinite(m) else OPTION_TICK for m in mids]
    gap = net - direction * sum(
        s * leg.ratio * p for s, leg, p in zip(signs, legs, prices, strict=True)
    )
    for i, leg in enumerate(legs):
        moved = prices[i] + gap / (direction * signs[i] * leg.ratio)
        if moved >= OPTION_TICK - 1e-9:
            prices[i] = round(moved, 6)
            break
    return prices


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
