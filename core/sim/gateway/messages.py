"""Encoders of the messages the gateway simulator sends (server version 178).

Every layout here mirrors the matching handler of `ib_async.decoder.Decoder` field by
field (the count is in each docstring). The client swallows a wrong count silently, so
`tests/gateway/test_wire.py` feeds every encoder through the real decoder.
Encoders return field lists; `wire.encode` frames them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from core.domain import Bar, Contract, Execution, OptionChain, Position, SecType
from core.sim.gateway.requests import BAG_CON_ID
from core.sim.gateway.wire import UNSET_DOUBLE_WIRE

Fields = list[object]

# outgoing message ids
TICK_PRICE = 1
TICK_SIZE = 2
ORDER_STATUS = 3
ERR_MSG = 4
OPEN_ORDER = 5
ACCT_VALUE = 6
PORTFOLIO_VALUE = 7
ACCT_UPDATE_TIME = 8
NEXT_VALID_ID = 9
CONTRACT_DATA = 10
EXECUTION_DATA = 11
MANAGED_ACCTS = 15
HISTORICAL_DATA = 17
TICK_OPTION_COMPUTATION = 21
TICK_STRING = 46
CURRENT_TIME = 49
CONTRACT_DATA_END = 52
OPEN_ORDER_END = 53
ACCT_DOWNLOAD_END = 54
EXECUTION_DATA_END = 55
TICK_SNAPSHOT_END = 57
MARKET_DATA_TYPE = 58
COMMISSION_REPORT = 59
POSITION_DATA = 61
POSITION_END = 62
ACCOUNT_SUMMARY = 63
ACCOUNT_SUMMARY_END = 64
ACCOUNT_UPDATE_MULTI = 73
ACCOUNT_UPDATE_MULTI_END = 74
SEC_DEF_OPT_PARAMS = 75
SEC_DEF_OPT_PARAMS_END = 76
COMPLETED_ORDER = 101
COMPLETED_ORDERS_END = 102

# tick types: (live, delayed)
TICK_BID_SIZE = (0, 69)
TICK_BID = (1, 66)
TICK_ASK = (2, 67)
TICK_ASK_SIZE = (3, 70)
TICK_LAST = (4, 68)
TICK_LAST_SIZE = (5, 71)
TICK_VOLUME = (8, 74)
TICK_MODEL_OPTION = (13, 83)


# ----------------------------------------------------------------------------- helpers
def ib_date(d: date | None) -> str:
    """A date as YYYYMMDD ('' for None)."""
    return d.strftime("%Y%m%d") if d is not None else ""


def ib_time(t: datetime) -> str:
    """A timestamp as 'YYYYMMDD HH:MM:SS UTC' (ib_async parses the zone)."""
    return t.astimezone(UTC).strftime("%Y%m%d %H:%M:%S UTC")


def wire_con_id(c: Contract) -> int:
    return c.con_id or (BAG_CON_ID if c.sec_type is SecType.BAG else 0)


def _strike(c: Contract) -> float:
    return float(c.strike) if c.strike is not None else 0.0


def _right(c: Contract) -> str:
    return c.right.value if c.right is not None else ""


def contract11(c: Contract) -> Fields:
    """conId, symbol, secType, lastTradeDate, strike, right, multiplier, exchange,
    currency, localSymbol, tradingClass (11): the block of openOrder/execDetails/position."""
    return [
        wire_con_id(c),
        c.symbol,
        c.sec_type.value,
        ib_date(c.expiry),
        _strike(c),
        _right(c),
        str(c.multiplier),
        c.exchange,
        c.currency,
        c.local_symbol,
        c.trading_class,
    ]


def price_or_unset(value: float | None) -> object:
    return "" if value is None or math.isnan(value) else value


# ----------------------------------------------------------------------------- session
def error(req_id: int, code: int, message: str, advanced: str = "") -> Fields:
    """4, 2, reqId, code, msg, advancedOrderRejectJson (6)."""
    return [ERR_MSG, 2, req_id, code, message, advanced]


def managed_accounts(accounts: Sequence[str]) -> Fields:
    """15, 1, accounts (3)."""
    return [MANAGED_ACCTS, 1, ",".join(accounts)]


def next_valid_id(order_id: int) -> Fields:
    """9, 1, id (3)."""
    return [NEXT_VALID_ID, 1, order_id]


def current_time(now: datetime) -> Fields:
    """49, 1, epochSeconds (3)."""
    return [CURRENT_TIME, 1, int(now.timestamp())]


# ----------------------------------------------------------------------------- account
def position(account: str, p: Position) -> Fields:
    """61, 3, acct, C11, pos, avgCost (16)."""
    return [POSITION_DATA, 3, account, *contract11(p.contract), p.quantity, p.avg_cost]


def position_end() -> Fields:
    return [POSITION_END, 1]


def account_value(key: str, value: str, currency: str, account: str) -> Fields:
    """6, 2, key, value, currency, acct (6)."""
    return [ACCT_VALUE, 2, key, value, currency, account]


def portfolio_value(
    p: Position, market_price: float, unrealized: float, realized: float, account: str
) -> Fields:
    """7, 8, conId..tradingClass (primaryExchange in exchange's place), pos, mktPrice,
    mktValue, avgCost, uPnL, rPnL, acct (20)."""
    c = p.contract
    value = market_price * p.quantity * c.multiplier
    return [
        PORTFOLIO_VALUE,
        8,
        wire_con_id(c),
        c.symbol,
        c.sec_type.value,
        ib_date(c.expiry),
        _strike(c),
        _right(c),
        str(c.multiplier),
        c.exchange,  # primaryExchange slot
        c.currency,
        c.local_symbol,
        c.trading_class,
        p.quantity,
        market_price,
        value,
        p.avg_cost,
        unrealized,
        realized,
        account,
    ]


def account_time(now: datetime) -> Fields:
    """8, 1, 'HH:MM' (3)."""
    return [ACCT_UPDATE_TIME, 1, now.strftime("%H:%M")]


def account_download_end(account: str) -> Fields:
    return [ACCT_DOWNLOAD_END, 1, account]


def account_update_multi(
    req_id: int, account: str, model_code: str, key: str, value: str, currency: str
) -> Fields:
    """73, 1, reqId, acct, modelCode, key, value, currency (8)."""
    return [ACCOUNT_UPDATE_MULTI, 1, req_id, account, model_code, key, value, currency]


def account_update_multi_end(req_id: int) -> Fields:
    return [ACCOUNT_UPDATE_MULTI_END, 1, req_id]


def account_summary(req_id: int, account: str, tag: str, value: str, currency: str) -> Fields:
    """63, 1, reqId, acct, tag, value, currency (7)."""
    return [ACCOUNT_SUMMARY, 1, req_id, account, tag, value, currency]


def account_summary_end(req_id: int) -> Fields:
    return [ACCOUNT_SUMMARY_END, 1, req_id]


# ----------------------------------------------------------------------------- reference
@dataclass(frozen=True, slots=True)
class DetailsExtra:
    """Contract-details fields that are not part of a V6 `Contract`."""

    min_tick: float = 0.01
    under_con_id: int = 0
    long_name: str = ""
    primary_exchange: str = ""
    under_symbol: str = ""
    under_sec_type: str = ""
    valid_exchanges: str = "SMART"
    time_zone: str = "US/Eastern"
    stock_type: str = ""
    sec_type: str = ""  # the secType to report instead of the contract's (CONTFUT)


def contract_details(req_id: int, c: Contract, extra: DetailsExtra) -> Fields:
    """10, reqId, symbol, secType, lastTimes, strike, right, exchange, currency, localSymbol,
    marketName, tradingClass, conId, minTick, multiplier, orderTypes, validExchanges,
    priceMagnifier, underConId, longName, primaryExchange, contractMonth, industry, category,
    subcategory, timeZoneId, tradingHours, liquidHours, evRule, evMultiplier, nSecIds=0,
    aggGroup, underSymbol, underSecType, marketRuleIds, realExpirationDate, stockType,
    minSize, sizeIncrement, suggestedSizeIncrement (40; no version at >= 164)."""
    expiry = ib_date(c.expiry)
    return [
        CONTRACT_DATA,
        req_id,
        c.symbol,
        extra.sec_type or c.sec_type.value,
        expiry,
        _strike(c),
        _right(c),
        c.exchange,
        c.currency,
        c.local_symbol,
        c.symbol,  # marketName
        c.trading_class,
        wire_con_id(c),
        extra.min_tick,
        str(c.multiplier),
        "LMT,MKT",
        extra.valid_exchanges,
        1,  # priceMagnifier
        extra.under_con_id,
        extra.long_name,
        extra.primary_exchange,
        expiry[:6],  # contractMonth
        "",  # industry
        "",  # category
        "",  # subcategory
        extra.time_zone,
        "",  # tradingHours
        "",  # liquidHours
        "",  # evRule
        "",  # evMultiplier
        0,  # secIdList count
        1,  # aggGroup
        extra.under_symbol,
        extra.under_sec_type,
        "26",  # marketRuleIds
        expiry,  # realExpirationDate
        extra.stock_type,
        1,  # minSize
        1,  # sizeIncrement
        1,  # suggestedSizeIncrement
    ]


def contract_details_end(req_id: int) -> Fields:
    return [CONTRACT_DATA_END, 1, req_id]


def sec_def_opt_params(req_id: int, chain: OptionChain) -> Fields:
    """75, reqId, exchange, undConId, tradingClass, multiplier, nExp, exp*, nStrikes,
    strike* (no version; the strikes must be the last fields)."""
    exps = [ib_date(d) for d in chain.expirations]
    strikes = [float(s) for s in chain.strikes]
    return [
        SEC_DEF_OPT_PARAMS,
        req_id,
        chain.exchange,
        chain.underlying_con_id,
        chain.trading_class,
        str(chain.multiplier),
        len(exps),
        *exps,
        len(strikes),
        *strikes,
    ]


def sec_def_opt_params_end(req_id: int) -> Fields:
    return [SEC_DEF_OPT_PARAMS_END, req_id]


# ----------------------------------------------------------------------------- market data
def market_data_type(req_id: int, md_type: int) -> Fields:
    """58, 1, reqId, type (4)."""
    return [MARKET_DATA_TYPE, 1, req_id, md_type]


def tick_price(req_id: int, tick_type: int, price: float, size: int, attr_mask: int = 0) -> Fields:
    """1, 6, reqId, tickType, price, size, attrMask (7)."""
    return [TICK_PRICE, 6, req_id, tick_type, price, size, attr_mask]


TICK_DIVIDENDS = 59  # generic tick 456's answer: "past12,next12,YYYYMMDD,nextAmount"


def tick_string(req_id: int, tick_type: int, value: str) -> Fields:
    """46, 6, reqId, tickType, value (5)."""
    return [TICK_STRING, 6, req_id, tick_type, value]


def tick_size(req_id: int, tick_type: int, size: int) -> Fields:
    """2, 6, reqId, tickType, size (5)."""
    return [TICK_SIZE, 6, req_id, tick_type, size]


def _sentinel(value: float, sentinel: float) -> float:
    return sentinel if not math.isfinite(value) else value


def tick_option_computation(
    req_id: int,
    tick_type: int,
    *,
    iv: float,
    delta: float,
    opt_price: float,
    gamma: float,
    vega: float,
    theta: float,
    und_price: float,
    pv_dividend: float = 0.0,
    tick_attrib: int = 0,
) -> Fields:
    """21, reqId, tickType, tickAttrib, iv, delta, optPrice, pvDividend, gamma, vega, theta,
    undPrice (12; no version). The client parses with a bare float(), so never '':
    unknown values go out as IB's "not computed" sentinels, -1 (prices, iv) / -2 (greeks)."""
    return [
        TICK_OPTION_COMPUTATION,
        req_id,
        tick_type,
        tick_attrib,
        _sentinel(iv, -1.0),
        _sentinel(delta, -2.0),
        _sentinel(opt_price, -1.0),
        _sentinel(pv_dividend, -1.0),
        _sentinel(gamma, -2.0),
        _sentinel(vega, -2.0),
        _sentinel(theta, -2.0),
        _sentinel(und_price, -1.0),
    ]


def tick_snapshot_end(req_id: int) -> Fields:
    """57, 1, reqId (3)."""
    return [TICK_SNAPSHOT_END, 1, req_id]


def historical_data(
    req_id: int, start: str, end: str, bars: Sequence[Bar], format_date: int
) -> Fields:
    """17, reqId, start, end, nBars, {date, open, high, low, close, volume, wap, barCount}*
    (no version). Dates are epoch seconds for formatDate=2, else 'YYYYMMDD HH:MM:SS UTC'."""
    out: Fields = [HISTORICAL_DATA, req_id, start, end, len(bars)]
    for b in bars:
        stamp = str(int(b.time.timestamp())) if format_date == 2 else ib_time(b.time)
        wap = b.wap if math.isfinite(b.wap) else b.close
        out += [stamp, b.open, b.high, b.low, b.close, b.volume, wap, b.count]
    return out


# ----------------------------------------------------------------------------- orders
@dataclass(frozen=True, slots=True)
class WireOrder:
    """An order as the wire describes it (the client's orderId, IB status words)."""

    order_id: int
    client_id: int
    perm_id: int
    contract: Contract
    action: str
    quantity: int
    order_type: str
    limit_price: float | None
    tif: str
    account: str
    order_ref: str
    status: str  # IB words: Submitted, Filled, Cancelled, Inactive, PreSubmitted, ...
    filled: int = 0
    avg_fill_price: float = math.nan
    last_fill_price: float = math.nan
    what_if: bool = False
    # a what-if answer's OrderState margin figures, IB's names; NaN -> IB's unset value,
    # a `what_if_raw` entry -> that text verbatim (what a Gateway that knows nothing sends)
    margins: dict[str, float] = field(default_factory=dict)
    what_if_raw: dict[str, str] = field(default_factory=dict)
    warning: str = ""
    completed_time: str = ""
    completed_status: str = ""


def _combo_legs(c: Contract) -> Fields:
    out: Fields = [len(c.combo_legs)]
    for leg in c.combo_legs:
        out += [leg.con_id, leg.ratio, leg.action, "SMART", 0, 0, "", -1]
    return out


WHAT_IF_FIELDS: tuple[str, ...] = (
    "initMarginBefore",
    "maintMarginBefore",
    "equityWithLoanBefore",
    "initMarginChange",
    "maintMarginChange",
    "equityWithLoanChange",
    "initMarginAfter",
    "maintMarginAfter",
    "equityWithLoanAfter",
)


def _margin(value: float) -> str:
    return UNSET_DOUBLE_WIRE if not math.isfinite(value) else str(value)


def open_order(o: WireOrder) -> Fields:
    """Decoder.openOrder at v178: 127 fields for a plain order (+8 per combo leg)."""
    c = o.contract
    lmt = price_or_unset(o.limit_price)
    f: Fields = [OPEN_ORDER, o.order_id, *contract11(c)]
    f += [
        o.action,
        o.quantity,
        o.order_type,
        lmt,
        "",  # auxPrice
        o.tif,
        "",  # ocaGroup
        o.account,
        "O",  # openClose
        0,  # origin
        o.order_ref,
        o.client_id,
        o.perm_id,
        0,  # outsideRth
        0,  # hidden
        0.0,  # discretionaryAmt
        "",  # goodAfterTime
        "",  # deprecated sharesAllocation
        "",  # faGroup
        "",  # faMethod
        "",  # faPercentage
    ]
    # no faProfile at >= 177
    f += [
        "",  # modelCode
        "",  # goodTillDate
        "",  # rule80A
        "",  # percentOffset
        "",  # settlingFirm
        0,  # shortSaleSlot
        "",  # designatedLocation
        -1,  # exemptCode
        0,  # auctionStrategy
        "",  # startingPrice
        "",  # stockRefPrice
        "",  # delta
        "",  # stockRangeLower
        "",  # stockRangeUpper
        "",  # displaySize
        0,  # blockOrder
        0,  # sweepToFill
        0,  # allOrNone
        "",  # minQty
        3,  # ocaType
        0,  # eTradeOnly
        0,  # firmQuoteOnly
        "",  # nbboPriceCap
        0,  # parentId
        0,  # triggerMethod
        "",  # volatility
        "",  # volatilityType
        "",  # deltaNeutralOrderType (empty: no delta-neutral block follows)
        "",  # deltaNeutralAuxPrice
    ]
    f += [
        0,  # continuousUpdate
        "",  # referencePriceType
        "",  # trailStopPrice
        "",  # trailingPercent
        "",  # basisPoints
        "",  # basisPointsType
        "",  # comboLegsDescrip
    ]
    f += _combo_legs(c)
    f += [0]  # orderComboLegs count
    f += [0]  # smartComboRoutingParams count
    f += ["", "", ""]  # scaleInitLevelSize, scaleSubsLevelSize, scalePriceIncrement
    f += [""]  # hedgeType
    f += [0, "", "", 0, 0]  # optOutSmartRouting, clearingAccount, clearingIntent, notHeld, dnc
    f += [""]  # algoStrategy
    f += [
        0,  # solicited
        1 if o.what_if else 0,
        o.status,
    ]
    if o.what_if:
        f += [
            o.what_if_raw[name] if name in o.what_if_raw else _margin(o.margins.get(name, math.nan))
            for name in WHAT_IF_FIELDS
        ]
    else:
        f += ["", "", "", "", "", "", "", "", ""]
    f += [
        "",  # commission
        "",  # minCommission
        "",  # maxCommission
        "",  # commissionCurrency
        o.warning,
        0,  # randomizeSize
        0,  # randomizePrice
    ]
    f += [0]  # conditions count
    f += [
        "",  # adjustedOrderType
        "",  # triggerPrice
        "",  # trailStopPrice
        "",  # lmtPriceOffset
        "",  # adjustedStopPrice
        "",  # adjustedStopLimitPrice
        "",  # adjustedTrailingAmount
        0,  # adjustableTrailingUnit
        "",  # softDollarTier.name
        "",  # softDollarTier.val
        "",  # softDollarTier.displayName
        "",  # cashQty
        0,  # dontUseAutoPriceForHedge
        0,  # isOmsContainer
        0,  # discretionaryUpToLimitPrice
        0,  # usePriceMgmtAlgo
    ]
    f += ["", "", 0]  # duration (>=159), postToAts (>=160), autoCancelParent (>=162)
    f += ["", "", "", "", ""]  # minTradeQty .. midOffsetAtHalf (>=170)
    return f


def open_order_end() -> Fields:
    return [OPEN_ORDER_END, 1]


def order_status(o: WireOrder) -> Fields:
    """3, orderId, status, filled, remaining, avgFillPrice, permId, parentId,
    lastFillPrice, clientId, whyHeld, mktCapPrice (12; no version)."""
    avg = o.avg_fill_price if math.isfinite(o.avg_fill_price) and o.filled else 0.0
    last = o.last_fill_price if math.isfinite(o.last_fill_price) else 0.0
    return [
        ORDER_STATUS,
        o.order_id,
        o.status,
        o.filled,
        o.quantity - o.filled,
        avg,
        o.perm_id,
        0,
        last,
        o.client_id,
        "",
        0.0,
    ]


def completed_order(o: WireOrder) -> Fields:
    """Decoder.completedOrder at v178 (101, no version, no orderId)."""
    c = o.contract
    f: Fields = [COMPLETED_ORDER, *contract11(c)]
    f += [
        o.action,
        o.quantity,
        o.order_type,
        price_or_unset(o.limit_price),
        "",  # auxPrice
        o.tif,
        "",  # ocaGroup
        o.account,
        "O",  # openClose
        0,  # origin
        o.order_ref,
        o.perm_id,
        0,  # outsideRth
        0,  # hidden
        0.0,  # discretionaryAmt
        "",  # goodAfterTime
        "",  # faGroup
        "",  # faMethod
        "",  # faPercentage
    ]
    f += [
        "",  # modelCode
        "",  # goodTillDate
        "",  # rule80A
        "",  # percentOffset
        "",  # settlingFirm
        0,  # shortSaleSlot
        "",  # designatedLocation
        -1,  # exemptCode
        "",  # startingPrice
        "",  # stockRefPrice
        "",  # delta
        "",  # stockRangeLower
        "",  # stockRangeUpper
        "",  # displaySize
        0,  # sweepToFill
        0,  # allOrNone
        "",  # minQty
        3,  # ocaType
        0,  # triggerMethod
        "",  # volatility
        "",  # volatilityType
        "",  # deltaNeutralOrderType
        "",  # deltaNeutralAuxPrice
    ]
    f += [0, "", "", "", ""]  # continuousUpdate, referencePriceType, trailStop, trailing%, descr
    f += _combo_legs(c)
    f += [0, 0]  # orderComboLegs, smartComboRoutingParams
    f += ["", "", ""]  # scale sizes, increment
    f += [""]  # hedgeType
    f += ["", "", 0, 0]  # clearingAccount, clearingIntent, notHeld, dnc
    f += [""]  # algoStrategy
    f += [0, o.status, 0, 0]  # solicited, status, randomizeSize, randomizePrice
    f += [0]  # conditions
    f += [
        "",  # trailStopPrice
        "",  # lmtPriceOffset
        "",  # cashQty
        0,  # dontUseAutoPriceForHedge
        0,  # isOmsContainer
        "",  # autoCancelDate
        o.filled,  # filledQuantity
        0,  # refFuturesConId
        0,  # autoCancelParent
        "",  # shareholder
        0,  # imbalanceOnly
        0,  # routeMarketableToBbo
        0,  # parentPermId
        o.completed_time,
        o.completed_status,
    ]
    f += ["", "", "", "", ""]  # minTradeQty .. midOffsetAtHalf (>=170)
    return f


def completed_orders_end() -> Fields:
    """102 (1 field: no version)."""
    return [COMPLETED_ORDERS_END]


# ----------------------------------------------------------------------------- executions
def exec_details(
    req_id: int,
    e: Execution,
    *,
    order_id: int,
    client_id: int,
    cum_qty: int,
    avg_price: float,
) -> Fields:
    """11, reqId, orderId, C11, execId, time, acct, exchange, side, shares, price, permId,
    clientId, liquidation, cumQty, avgPrice, orderRef, evRule, evMultiplier, modelCode,
    lastLiquidity, pendingPriceRevision (32; no version)."""
    return [
        EXECUTION_DATA,
        req_id,
        order_id,
        *contract11(e.contract),
        e.exec_id,
        ib_time(e.time),
        e.account,
        e.contract.exchange,
        "BOT" if e.side.value == "BUY" else "SLD",
        e.quantity,
        e.price,
        e.perm_id,
        client_id,
        0,  # liquidation
        cum_qty,
        avg_price,
        e.order_ref,
        "",  # evRule
        "",  # evMultiplier
        "",  # modelCode
        1,  # lastLiquidity (added)
        0,  # pendingPriceRevision (>= 178)
    ]


def exec_details_end(req_id: int) -> Fields:
    return [EXECUTION_DATA_END, 1, req_id]


def commission_report(exec_id: str, commission: float, currency: str = "USD") -> Fields:
    """59, 1, execId, commission, currency, realizedPNL, yield, yieldRedemptionDate (8)."""
    return [COMMISSION_REPORT, 1, exec_id, commission, currency, "", "", ""]
