"""Conversions between V6 domain types and ib_async types, and IB error classification.

Kept apart from the IBBroker modules so the mapping rules (NaN for every "IB did not say"
sentinel, status words, contract fields) are small, pure and unit-testable without a socket.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from ib_async import (
    AccountValue,
    Bag,
    BarData,
    Fill,
    LimitOrder,
    MarketOrder,
    Order,
    Ticker,
    Trade,
)
from ib_async import ComboLeg as IBComboLeg
from ib_async import Contract as IBContract
from ib_async import OptionChain as IBOptionChain
from ib_async import Position as IBPosition

from core.broker.base import ErrorClass
from core.domain import (
    AccountSummary,
    Action,
    Bar,
    ComboLeg,
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

UNSET_DOUBLE = 1.7976931348623157e308
UNSET_INTEGER = 2**31 - 1

# ---------------------------------------------------------------------------- errors
CONNECTIVITY_CODES = frozenset({502, 503, 504, 1100, 1300})
REJECTION_CODES = frozenset(
    {103, 104, 105, 106, 107, 109, 110, 111, 113, 116, 117, 135, 161, 201, 202, 203, 383}
    | {387, 388, 434, 10147, 10148, 10149}
)
DATA_CODES = frozenset({162, 165, 166, 200, 300, 321, 322, 354, 366, 420, 10090, 10168, 10197})
CAPACITY_CODES = frozenset({101})
WARNING_CODES = frozenset({399, 404, 1101, 1102, 10167})  # plus every 2100..2199


# Market-data entitlement answers (TWS API message codes) and what fixes each: the quote
# carries this text (`Quote.unavailable`), and the cycle summary repeats it.
ENTITLEMENT_FIXES = {
    354: "not subscribed to real-time data: subscribe to the market-data package in Client "
    'Portal, or set broker.market_data_type = "delayed"',
    10090: "part of the data is not subscribed (no bid/ask): subscribe to the missing "
    "market-data package in Client Portal",
    10168: "not subscribed and delayed data not enabled: subscribe in Client Portal, or "
    "enable delayed market data for the account",
    10197: "a competing live session (TWS, Client Portal or the mobile app logged in as the "
    "same user) holds the market data: close the other session",
}
DELAYED_AGE_S = 15 * 60.0  # IB's delayed feed runs 15-20 minutes behind: at least this old


def entitlement_reason(code: int, contract: str) -> str:
    """`Quote.unavailable` for an entitlement answer: the code, the contract, the fix."""
    return f"IB {code} for {contract}: {ENTITLEMENT_FIXES[code]}"


def classify_error(code: int) -> ErrorClass:
    """How V6 treats an IB error code (IB's message-code table); unknown codes are DATA
    (a request failed), which callers degrade on rather than retry blindly."""
    if code in CAPACITY_CODES:
        return ErrorClass.CAPACITY
    if code in CONNECTIVITY_CODES:
        return ErrorClass.CONNECTIVITY
    if code in WARNING_CODES or 2100 <= code <= 2199:
        return ErrorClass.WARNING
    if code in REJECTION_CODES:
        return ErrorClass.REJECTION
    return ErrorClass.DATA


# ---------------------------------------------------------------------------- numbers
def clean(value: float | Decimal | None, *sentinels: float) -> float:
    """A broker float, or NaN when IB means "unknown" (None, UNSET, non-finite, a sentinel)."""
    if value is None:
        return math.nan
    v = float(value)
    if not math.isfinite(v) or v >= UNSET_DOUBLE or v in sentinels:
        return math.nan
    return v


# A reported quantity no int64 can hold (inf, NaN, 1e20): kept absurd, never made plausible,
# so reconciliation's sanity bounds refuse it (core.reconcile.screen) instead of V6 raising
# on one bad field or reading it as 0.
UNREPRESENTABLE_QUANTITY = 2**62


def reported_quantity(value: float | Decimal) -> int:
    """A position or fill size as reported; unrepresentable ones become +-2**62."""
    v = float(value)
    if math.isfinite(v) and abs(v) < UNREPRESENTABLE_QUANTITY:
        return int(v)
    return -UNREPRESENTABLE_QUANTITY if v < 0 else UNREPRESENTABLE_QUANTITY


def _int(value: float | Decimal | None) -> int:
    v = clean(value)
    return 0 if math.isnan(v) else int(v)


# ---------------------------------------------------------------------------- contracts
def to_ib_contract(c: Contract) -> IBContract:
    """A V6 contract as ib_async describes it (qualified fields carried over)."""
    expiry = c.expiry.strftime("%Y%m%d") if c.expiry else ""
    if c.sec_type is SecType.BAG:
        return Bag(
            symbol=c.symbol,
            exchange=c.exchange or "SMART",
            currency=c.currency,
            comboLegs=[
                IBComboLeg(conId=leg.con_id, ratio=leg.ratio, action=leg.action, exchange="SMART")
                for leg in c.combo_legs
            ],
        )
    return IBContract.create(
        secType=c.sec_type.value,
        conId=c.con_id,
        symbol=c.symbol,
        lastTradeDateOrContractMonth=expiry,
        strike=float(c.strike) if c.strike is not None else 0.0,
        right=c.right.value if c.right is not None else "",
        multiplier=str(c.multiplier) if c.sec_type in (SecType.OPT, SecType.FUT) else "",
        exchange=c.exchange,
        currency=c.currency,
        localSymbol=c.local_symbol,
        tradingClass=c.trading_class,
    )


def _expiry(text: str) -> date | None:
    raw = text.strip().split(" ")[0]
    if len(raw) >= 8 and raw[:8].isdigit():
        return date(int(raw[:4]), int(raw[4:6]), int(raw[6:8]))
    return None


def from_ib_contract(c: IBContract, legs: Sequence[ComboLeg] | None = None) -> Contract:
    """A V6 contract from what ib_async reports (details, positions, orders, fills)."""
    sec_type = SecType(c.secType)
    mult_text = c.multiplier or ""
    try:
        multiplier = int(float(mult_text)) if mult_text else 0
    except ValueError:
        multiplier = 0
    if multiplier <= 0:
        multiplier = 100 if sec_type in (SecType.OPT, SecType.BAG) else 1
    if sec_type is SecType.BAG:
        combo = (
            tuple(legs)
            if legs
            else tuple(
                ComboLeg(con_id=leg.conId, ratio=leg.ratio, action=leg.action)
                for leg in (c.comboLegs or [])
            )
        )
        return Contract(
            symbol=c.symbol,
            sec_type=sec_type,
            multiplier=multiplier,
            exchange=c.exchange or "SMART",
            currency=c.currency or "USD",
            combo_legs=combo,
        )
    is_opt = sec_type is SecType.OPT
    return Contract(
        symbol=c.symbol,
        sec_type=sec_type,
        expiry=_expiry(c.lastTradeDateOrContractMonth),
        strike=float(c.strike) if is_opt else None,
        right=Right(c.right[0].upper()) if is_opt and c.right else None,
        multiplier=multiplier,
        exchange=c.exchange or "SMART",
        currency=c.currency or "USD",
        con_id=int(c.conId or 0),
        local_symbol=c.localSymbol,
        trading_class=c.tradingClass,
    )


def chain_from_ib(underlying: str, ch: IBOptionChain) -> OptionChain:
    exps = tuple(e for e in (_expiry(x) for x in ch.expirations) if e is not None)
    return OptionChain(
        underlying=underlying,
        underlying_con_id=int(ch.underlyingConId),
        exchange=ch.exchange,
        trading_class=ch.tradingClass,
        multiplier=int(float(ch.multiplier or "100")),
        expirations=exps,
        strikes=tuple(float(s) for s in ch.strikes),
    )


# ---------------------------------------------------------------------------- orders
def to_ib_order(o: OrderRequest, account: str = "") -> Order:
    order: Order
    if o.order_type is OrderType.LMT:
        assert o.limit_price is not None
        order = LimitOrder(o.action.value, o.quantity, o.limit_price)
    else:
        order = MarketOrder(o.action.value, o.quantity)
    order.orderRef = o.order_ref
    order.tif = o.tif
    order.account = account
    return order


_STATUS = {
    "PendingSubmit": OrderStatus.PENDING,
    "ApiPending": OrderStatus.PENDING,
    "PreSubmitted": OrderStatus.PENDING,
    "Submitted": OrderStatus.SUBMITTED,
    "PendingCancel": OrderStatus.SUBMITTED,
    "ValidationError": OrderStatus.SUBMITTED,
    "ApiUpdate": OrderStatus.SUBMITTED,
    "Filled": OrderStatus.FILLED,
    "Cancelled": OrderStatus.CANCELLED,
    "ApiCancelled": OrderStatus.CANCELLED,
    "Inactive": OrderStatus.REJECTED,
}


def status_from_ib(status: str) -> OrderStatus:
    return _STATUS.get(status, OrderStatus.PENDING)


def order_state_from_trade(
    trade: Trade,
    *,
    contract: Contract | None = None,
    fills: Iterable[Fill] = (),
    error: tuple[int, str] | None = None,
) -> OrderState:
    """V6's view of an ib_async Trade. `fills` backs up quantities a completed-order
    record lacks; `error` (IB code, text) for this order becomes the message, and a
    rejection code turns the error-cancelled order into REJECTED."""
    o = trade.order
    st = trade.orderStatus
    status = status_from_ib(st.status)
    message = ""
    if error is not None:
        code, text = error
        rejectable = (OrderStatus.CANCELLED, OrderStatus.PENDING, OrderStatus.REJECTED)
        if code != 202 and status in rejectable:
            status = OrderStatus.REJECTED
            message = f"[{code}] {text}"
        elif code == 202 and status is OrderStatus.CANCELLED:
            message = f"[{code}] {text}"
    fill_list = [f for f in fills if f.execution.permId == o.permId] if o.permId else []
    fill_list += [f for f in trade.fills if f not in fill_list]
    filled = _int(st.filled)
    avg = clean(st.avgFillPrice) if filled else math.nan
    if not filled:  # a completed-order record: no orderStatus, only filledQuantity
        units, fill_avg = _fill_totals(o, fill_list, contract) if fill_list else (0, math.nan)
        filled = _int(o.filledQuantity) or units
        avg = fill_avg if units else math.nan
        if status is OrderStatus.FILLED and not filled:
            filled = _int(o.totalQuantity)
    if filled == 0:
        avg = math.nan
    is_lmt = o.orderType == "LMT"
    lmt = clean(o.lmtPrice) if is_lmt else math.nan
    c = contract if contract is not None else from_ib_contract(trade.contract)
    if not message and status is OrderStatus.REJECTED:
        message = next((e.message for e in reversed(trade.log) if e.errorCode), "")
    return OrderState(
        order_id=int(o.orderId),
        order_ref=o.orderRef,
        contract=c,
        action=Action(o.action),
        quantity=_int(o.totalQuantity),
        status=status,
        filled=filled,
        avg_fill_price=avg,
        limit_price=None if math.isnan(lmt) else lmt,
        order_type=OrderType.LMT if is_lmt else OrderType.MKT,
        perm_id=int(o.permId),
        message=message,
    )


def _fill_totals(o: Order, fills: Sequence[Fill], contract: Contract | None) -> tuple[int, float]:
    """Filled combo units and average price from fills. For a combo the BAG-level
    executions are the order's fills (as ib_async's `Trade.filled` counts them); only
    without any, the legs are netted per unit."""
    fills = latest_fills(fills)
    bags = [f for f in fills if is_bag_fill(f)]
    if bags:
        fills = bags
    elif contract is not None and contract.sec_type is SecType.BAG and contract.combo_legs:
        legs = {leg.con_id: leg for leg in contract.combo_legs}
        net = 0.0
        units = 0
        per_leg: dict[int, float] = {}
        for f in fills:
            leg = legs.get(f.contract.conId)
            if leg is None:
                continue
            sign = 1.0 if leg.action == "BUY" else -1.0
            net += sign * f.execution.shares * f.execution.price
            per_leg[leg.con_id] = per_leg.get(leg.con_id, 0.0) + f.execution.shares
        if per_leg:
            units = int(min(per_leg[c] / legs[c].ratio for c in per_leg))
        return units, (net / units if units else math.nan)
    qty = sum(f.execution.shares for f in fills)
    notional = sum(f.execution.shares * f.execution.price for f in fills)
    return int(qty), (notional / qty if qty else math.nan)


def is_bag_fill(f: Fill) -> bool:
    """A combo's BAG-level execution: the order's net fill, which moves no position."""
    return f.contract.secType == SecType.BAG.value


def fill_key(exec_id: str) -> str:
    """The part of an execId that names one fill: a correction repeats it with a new
    version after the final period (IB: the later execution replaces the earlier)."""
    head, dot, _ = exec_id.rpartition(".")
    return head if dot else exec_id


def exec_version(exec_id: str) -> int:
    """The correction version of an execId (the digits after the final period; 0 if none)."""
    _, dot, tail = exec_id.rpartition(".")
    return int(tail) if dot and tail.isdigit() else 0


def latest_fills(fills: Iterable[Fill]) -> list[Fill]:
    """Each fill once, in its latest corrected version (first-seen order kept)."""
    out: dict[str, Fill] = {}
    for f in fills:
        key = fill_key(f.execution.execId)
        seen = out.get(key)
        if seen is None or exec_version(f.execution.execId) >= exec_version(seen.execution.execId):
            out[key] = f
    return list(out.values())


def execution_from_fill(f: Fill, contract: Contract | None = None) -> Execution:
    """V6's execution of a leg or single-contract fill (never a BAG-level one: it names no
    legs; see `is_bag_fill`)."""
    if is_bag_fill(f) and contract is None:
        raise ValueError(f"execution {f.execution.execId} is a BAG-level report, not a fill")
    e = f.execution
    report = f.commissionReport
    commission = report.commission if report.execId == e.execId else math.nan
    when = e.time if e.time.tzinfo else e.time.replace(tzinfo=UTC)
    return Execution(
        exec_id=e.execId,
        order_id=int(e.orderId),
        order_ref=e.orderRef,
        contract=contract if contract is not None else from_ib_contract(f.contract),
        side=Action.BUY if e.side in ("BOT", "BUY") else Action.SELL,
        quantity=reported_quantity(e.shares),
        price=float(e.price),
        time=when.astimezone(UTC),
        account=e.acctNumber,
        commission=commission,
        perm_id=int(e.permId),
    )


def position_from_ib(p: IBPosition) -> Position:
    return Position(
        account=p.account,
        contract=from_ib_contract(p.contract),
        quantity=reported_quantity(p.position),
        avg_cost=float(p.avgCost),
    )


# ---------------------------------------------------------------------------- market data
def quote_from_ticker(ticker: Ticker, contract: Contract, now: datetime) -> Quote:
    """A Quote from an ib_async Ticker. -1 prices, -1/-2 greek sentinels, None, UNSET and
    non-finite values all become NaN: an unknown is never a number."""
    g = ticker.modelGreeks
    if g is None:
        g = ticker.lastGreeks or ticker.bidGreeks or ticker.askGreeks

    def greek(name: str, *sentinels: float) -> float:
        return clean(getattr(g, name), *sentinels) if g is not None else math.nan

    bid = clean(ticker.bid, -1.0)
    ask = clean(ticker.ask, -1.0)
    last = clean(ticker.last, -1.0)
    return Quote(
        contract=contract,
        time=now,
        bid=bid,
        ask=ask,
        last=last,
        bid_size=0 if math.isnan(bid) else _int(ticker.bidSize),
        ask_size=0 if math.isnan(ask) else _int(ticker.askSize),
        volume=_int(ticker.volume),
        iv=greek("impliedVol", -1.0),
        delta=greek("delta", -2.0),
        gamma=greek("gamma", -2.0),
        vega=greek("vega", -2.0),
        theta=greek("theta", -2.0),
        underlying_price=greek("undPrice", -1.0),
        stale=ticker.marketDataType in (2, 4),
        delayed=ticker.marketDataType in (3, 4),
        age_s=DELAYED_AGE_S if ticker.marketDataType in (3, 4) else 0.0,
    )


def bar_from_ib(b: BarData) -> Bar:
    d = b.date
    if isinstance(d, datetime):
        t = d if d.tzinfo else d.replace(tzinfo=UTC)
    else:
        t = datetime(d.year, d.month, d.day, tzinfo=UTC)
    return Bar(
        time=t.astimezone(UTC),
        open=float(b.open),
        high=float(b.high),
        low=float(b.low),
        close=float(b.close),
        volume=int(b.volume),
        wap=clean(b.average),
        count=int(b.barCount),
    )


def duration_str(duration: timedelta) -> str:
    """A timedelta as IB's durationStr: whole seconds up to a day, else whole days (rounded up)."""
    secs = duration.total_seconds()
    if secs <= 0:
        raise ValueError(f"duration must be positive, got {duration}")
    if secs <= 86400:
        return f"{math.ceil(secs)} S"
    return f"{math.ceil(secs / 86400)} D"


def ib_filter_time(t: datetime) -> str:
    """An execution-filter time: 'YYYYMMDD-HH:MM:SS' in UTC (seconds resolution)."""
    if t.tzinfo is None:
        raise ValueError(f"since must be tz-aware UTC, got {t!r}")
    return t.astimezone(UTC).strftime("%Y%m%d-%H:%M:%S")


# ---------------------------------------------------------------------------- account
def account_summary_from_values(account: str, values: Iterable[AccountValue]) -> AccountSummary:
    """AccountSummary from reqAccountSummary tags; a missing money tag is NaN, not 0."""
    table: dict[str, tuple[str, str]] = {}
    for v in values:
        if v.account == account and (v.currency in ("USD", "BASE", "") or v.tag not in table):
            table[v.tag] = (v.value, v.currency)

    def num(tag: str) -> float:
        raw = table.get(tag, ("", ""))[0]
        try:
            return float(raw)
        except ValueError:
            return math.nan

    currency = table.get("NetLiquidation", ("", "USD"))[1] or "USD"
    realized = num("RealizedPnL")
    unrealized = num("UnrealizedPnL")
    return AccountSummary(
        account=account,
        net_liquidation=num("NetLiquidation"),
        buying_power=num("BuyingPower"),
        available_funds=num("AvailableFunds"),
        maintenance_margin=num("MaintMarginReq"),
        realized_pnl=0.0 if math.isnan(realized) else realized,
        unrealized_pnl=0.0 if math.isnan(unrealized) else unrealized,
        currency=currency,
    )
