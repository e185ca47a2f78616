"""Decoders of the requests a TWS API client sends (as ib_async 2.1 writes them at v178).

Each decoder walks the fields in exactly the order `ib_async.client.Client` writes them
(placeOrder included: optional sections shift every later position, so it is walked,
never indexed) and ends with `FieldReader.done()`, so any drift from the real layout is
a `ProtocolError` naming the message and field.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from core.domain import ComboLeg, Contract, Right, SecType
from core.sim.gateway.wire import SERVER_VERSION, UNSET_DOUBLE, FieldReader, ProtocolError

# incoming message ids
REQ_MKT_DATA = 1
CANCEL_MKT_DATA = 2
PLACE_ORDER = 3
CANCEL_ORDER = 4
REQ_OPEN_ORDERS = 5
REQ_ACCOUNT_UPDATES = 6
REQ_EXECUTIONS = 7
REQ_IDS = 8
REQ_CONTRACT_DETAILS = 9
REQ_AUTO_OPEN_ORDERS = 15
REQ_ALL_OPEN_ORDERS = 16
REQ_MANAGED_ACCTS = 17
REQ_HISTORICAL_DATA = 20
CANCEL_HISTORICAL_DATA = 25
REQ_CURRENT_TIME = 49
REQ_GLOBAL_CANCEL = 58
REQ_MARKET_DATA_TYPE = 59
REQ_POSITIONS = 61
REQ_ACCOUNT_SUMMARY = 62
CANCEL_ACCOUNT_SUMMARY = 63
CANCEL_POSITIONS = 64
START_API = 71
REQ_ACCOUNT_UPDATES_MULTI = 76
CANCEL_ACCOUNT_UPDATES_MULTI = 77
REQ_SEC_DEF_OPT_PARAMS = 78
REQ_COMPLETED_ORDERS = 99

BAG_CON_ID = 28812380  # the conId IB reports for every combo

# API names of the incoming messages (as ib_async's Client methods call them): what the
# gateway's `request_counts` is keyed by, so a pacing rehearsal reads like the API it drives
REQUEST_NAMES: dict[int, str] = {
    REQ_MKT_DATA: "reqMktData",
    CANCEL_MKT_DATA: "cancelMktData",
    PLACE_ORDER: "placeOrder",
    CANCEL_ORDER: "cancelOrder",
    REQ_OPEN_ORDERS: "reqOpenOrders",
    REQ_ACCOUNT_UPDATES: "reqAccountUpdates",
    REQ_EXECUTIONS: "reqExecutions",
    REQ_IDS: "reqIds",
    REQ_CONTRACT_DETAILS: "reqContractDetails",
    REQ_AUTO_OPEN_ORDERS: "reqAutoOpenOrders",
    REQ_ALL_OPEN_ORDERS: "reqAllOpenOrders",
    REQ_MANAGED_ACCTS: "reqManagedAccts",
    REQ_HISTORICAL_DATA: "reqHistoricalData",
    CANCEL_HISTORICAL_DATA: "cancelHistoricalData",
    REQ_CURRENT_TIME: "reqCurrentTime",
    REQ_GLOBAL_CANCEL: "reqGlobalCancel",
    REQ_MARKET_DATA_TYPE: "reqMarketDataType",
    REQ_POSITIONS: "reqPositions",
    REQ_ACCOUNT_SUMMARY: "reqAccountSummary",
    CANCEL_ACCOUNT_SUMMARY: "cancelAccountSummary",
    CANCEL_POSITIONS: "cancelPositions",
    START_API: "startApi",
    REQ_ACCOUNT_UPDATES_MULTI: "reqAccountUpdatesMulti",
    CANCEL_ACCOUNT_UPDATES_MULTI: "cancelAccountUpdatesMulti",
    REQ_SEC_DEF_OPT_PARAMS: "reqSecDefOptParams",
    REQ_COMPLETED_ORDERS: "reqCompletedOrders",
}


def request_name(msg_id: str) -> str:
    """The API name of an incoming message id as sent (the id itself when not known)."""
    try:
        return REQUEST_NAMES.get(int(msg_id), msg_id)
    except ValueError:
        return msg_id


# ----------------------------------------------------------------------------- contracts
@dataclass(frozen=True, slots=True)
class WireComboLeg:
    con_id: int
    ratio: int
    action: str
    exchange: str


@dataclass(frozen=True, slots=True)
class WireContract:
    """A contract exactly as the client described it (C12 plus combo legs)."""

    con_id: int
    symbol: str
    sec_type: str
    expiry: str
    strike: float | None
    right: str
    multiplier: str
    exchange: str
    primary_exchange: str
    currency: str
    local_symbol: str
    trading_class: str
    legs: tuple[WireComboLeg, ...] = ()

    def to_domain(self) -> Contract:
        """The V6 contract this describes; ValueError names the field that does not fit."""
        try:
            sec_type = SecType(self.sec_type)
        except ValueError:
            raise ValueError(
                f"secType {self.sec_type!r} is not simulated; use one of "
                f"{[s.value for s in SecType]}"
            ) from None
        symbol = self.symbol or ("COMBO" if sec_type is SecType.BAG else "")
        if not symbol:
            raise ValueError("symbol is empty; give the contract's symbol or its conId")
        expiry = parse_expiry(self.expiry) if self.expiry else None
        right = _parse_right(self.right) if self.right else None
        default_mult = 100 if sec_type in (SecType.OPT, SecType.BAG) else 1
        multiplier = _parse_multiplier(self.multiplier, default_mult)
        strike = self.strike if self.strike else None
        legs = tuple(
            ComboLeg(con_id=leg.con_id, ratio=leg.ratio, action=leg.action.upper())
            for leg in self.legs
        )
        return Contract(
            symbol=symbol,
            sec_type=sec_type,
            expiry=expiry,
            strike=strike if sec_type is SecType.OPT else None,
            right=right if sec_type is SecType.OPT else None,
            multiplier=multiplier,
            exchange=self.exchange or "SMART",
            currency=self.currency or "USD",
            con_id=self.con_id if self.con_id > 0 and sec_type is not SecType.BAG else 0,
            local_symbol=self.local_symbol,
            trading_class=self.trading_class,
            combo_legs=legs,
        )


def parse_expiry(text: str) -> date:
    """YYYYMMDD (a last trading day) as a date; YYYYMM is ambiguous and refused."""
    raw = text.strip().split(" ")[0].split("-")[0]
    if len(raw) != 8 or not raw.isdigit():
        raise ValueError(
            f"lastTradeDateOrContractMonth {text!r} must be YYYYMMDD (the simulator does not "
            "resolve contract months)"
        )
    return date(int(raw[:4]), int(raw[4:6]), int(raw[6:]))


def _parse_right(text: str) -> Right:
    up = text.upper()
    if up in ("C", "CALL"):
        return Right.CALL
    if up in ("P", "PUT"):
        return Right.PUT
    raise ValueError(f"right {text!r} must be C, CALL, P or PUT")


def _parse_multiplier(text: str, default: int) -> int:
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"multiplier {text!r} must be a number") from None
    if value <= 0 or value != int(value):
        raise ValueError(f"multiplier {text!r} must be a positive integer")
    return int(value)


def read_contract(r: FieldReader) -> WireContract:
    """The 12 contract fields every request carries (C12)."""
    return WireContract(
        con_id=r.integer("conId"),
        symbol=r.text("symbol"),
        sec_type=r.text("secType"),
        expiry=r.text("lastTradeDateOrContractMonth"),
        strike=r.number("strike"),
        right=r.text("right"),
        multiplier=r.text("multiplier"),
        exchange=r.text("exchange"),
        primary_exchange=r.text("primaryExchange"),
        currency=r.text("currency"),
        local_symbol=r.text("localSymbol"),
        trading_class=r.text("tradingClass"),
    )


def _read_short_legs(r: FieldReader, contract: WireContract) -> WireContract:
    """BAG legs as reqMktData / reqHistoricalData write them (4 fields each)."""
    if contract.sec_type != "BAG":
        return contract
    n = r.integer("comboLegsCount")
    legs = tuple(
        WireComboLeg(
            con_id=r.integer("leg.conId"),
            ratio=r.integer("leg.ratio"),
            action=r.text("leg.action"),
            exchange=r.text("leg.exchange"),
        )
        for _ in range(n)
    )
    return _with_legs(contract, legs)


def _with_legs(contract: WireContract, legs: tuple[WireComboLeg, ...]) -> WireContract:
    return WireContract(
        con_id=contract.con_id,
        symbol=contract.symbol,
        sec_type=contract.sec_type,
        expiry=contract.expiry,
        strike=contract.strike,
        right=contract.right,
        multiplier=contract.multiplier,
        exchange=contract.exchange,
        primary_exchange=contract.primary_exchange,
        currency=contract.currency,
        local_symbol=contract.local_symbol,
        trading_class=contract.trading_class,
        legs=legs,
    )


def _read_delta_neutral(r: FieldReader) -> None:
    if r.flag("deltaNeutralContractPresent"):
        r.skip(3, "deltaNeutralContract")


# ----------------------------------------------------------------------------- time text
def parse_ib_time(text: str) -> datetime | None:
    """IB request timestamps: 'YYYYMMDD HH:MM:SS[ TZ]', 'YYYYMMDD-HH:MM:SS' (UTC), 'YYYYMMDD'.

    A missing zone means UTC (the simulator has no 'TWS local time')."""
    s = text.strip()
    if not s:
        return None
    if s.isdigit() and len(s) == 8:
        return datetime(int(s[:4]), int(s[4:6]), int(s[6:]), tzinfo=UTC)
    if s.isdigit():
        return datetime.fromtimestamp(int(s), UTC)
    zone: ZoneInfo | None = None
    if "-" in s[:9] and s[8] == "-":
        day, clock = s[:8], s[9:]
    else:
        parts = s.split()
        if len(parts) < 2:
            raise ValueError(
                f"time {text!r} is not 'YYYYMMDD HH:MM:SS [TZ]' or 'YYYYMMDD-HH:MM:SS'"
            )
        day, clock = parts[0], parts[1]
        if len(parts) > 2:
            zone = ZoneInfo(parts[2])
    try:
        naive = datetime.strptime(day + clock, "%Y%m%d%H:%M:%S")
    except ValueError:
        raise ValueError(f"time {text!r} is not 'YYYYMMDD HH:MM:SS [TZ]'") from None
    return naive.replace(tzinfo=zone or UTC).astimezone(UTC)


_DURATION_UNITS = {"S": 1, "D": 86400, "W": 7 * 86400, "M": 30 * 86400, "Y": 365 * 86400}


def parse_duration(text: str) -> timedelta:
    """IB durationStr ('3600 S', '2 D', '1 W', '1 M', '1 Y') as a timedelta."""
    parts = text.split()
    if len(parts) != 2 or parts[1] not in _DURATION_UNITS or not parts[0].isdigit():
        raise ValueError(f"durationStr {text!r} must be '<integer> <S|D|W|M|Y>'")
    return timedelta(seconds=int(parts[0]) * _DURATION_UNITS[parts[1]])


# ----------------------------------------------------------------------------- requests
@dataclass(frozen=True, slots=True)
class StartApi:
    client_id: int
    opt_capab: str


@dataclass(frozen=True, slots=True)
class Simple:
    """A request with no parameters the simulator needs (just the message id)."""

    msg_id: int


@dataclass(frozen=True, slots=True)
class WithReqId:
    msg_id: int
    req_id: int


@dataclass(frozen=True, slots=True)
class ReqCompletedOrders:
    api_only: bool


@dataclass(frozen=True, slots=True)
class ReqAccountUpdates:
    subscribe: bool
    account: str


@dataclass(frozen=True, slots=True)
class ReqAccountUpdatesMulti:
    req_id: int
    account: str
    model_code: str
    ledger_and_nlv: bool


@dataclass(frozen=True, slots=True)
class ReqAccountSummary:
    req_id: int
    group: str
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ReqExecutions:
    req_id: int
    client_id: int
    account: str
    time: str
    symbol: str
    sec_type: str
    exchange: str
    side: str


@dataclass(frozen=True, slots=True)
class ReqIds:
    count: int


@dataclass(frozen=True, slots=True)
class ReqContractDetails:
    req_id: int
    contract: WireContract
    include_expired: bool
    sec_id_type: str
    sec_id: str
    issuer_id: str


@dataclass(frozen=True, slots=True)
class ReqSecDefOptParams:
    req_id: int
    underlying_symbol: str
    fut_fop_exchange: str
    underlying_sec_type: str
    underlying_con_id: int


@dataclass(frozen=True, slots=True)
class ReqMarketDataType:
    market_data_type: int


@dataclass(frozen=True, slots=True)
class ReqMktData:
    req_id: int
    contract: WireContract
    generic_ticks: str
    snapshot: bool
    regulatory_snapshot: bool
    options: str


@dataclass(frozen=True, slots=True)
class ReqHistoricalData:
    req_id: int
    contract: WireContract
    include_expired: bool
    end: str
    bar_size: str
    duration: str
    use_rth: bool
    what_to_show: str
    format_date: int
    keep_up_to_date: bool
    chart_options: str


@dataclass(frozen=True, slots=True)
class PlaceOrder:
    """The parts of placeOrder the simulator acts on (the rest is walked and checked)."""

    order_id: int
    contract: WireContract
    action: str
    total_quantity: float
    order_type: str
    lmt_price: float | None
    aux_price: float | None
    tif: str
    account: str
    order_ref: str
    transmit: bool
    parent_id: int
    what_if: bool
    n_conditions: int
    algo_strategy: str
    order_combo_leg_prices: tuple[float | None, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class CancelOrder:
    order_id: int
    manual_cancel_time: str


Request = (
    StartApi
    | Simple
    | WithReqId
    | ReqCompletedOrders
    | ReqAccountUpdates
    | ReqAccountUpdatesMulti
    | ReqAccountSummary
    | ReqExecutions
    | ReqIds
    | ReqContractDetails
    | ReqSecDefOptParams
    | ReqMarketDataType
    | ReqMktData
    | ReqHistoricalData
    | PlaceOrder
    | CancelOrder
)


def _version(r: FieldReader, expected: int) -> None:
    v = r.integer("version")
    if v != expected:
        raise ProtocolError(
            f"{r.name}: version {v} is not the {expected} the client writes at v178"
        )


def _start_api(r: FieldReader) -> StartApi:
    _version(r, 2)
    return StartApi(client_id=r.integer("clientId"), opt_capab=r.text("optCapab"))


def _simple_v1(msg_id: int) -> Callable[[FieldReader], Request]:
    def dec(r: FieldReader) -> Request:
        _version(r, 1)
        return Simple(msg_id)

    return dec


def _req_id_v1(msg_id: int, version: int = 1) -> Callable[[FieldReader], Request]:
    def dec(r: FieldReader) -> Request:
        _version(r, version)
        return WithReqId(msg_id, r.integer("reqId"))

    return dec


def _req_id_no_version(msg_id: int) -> Callable[[FieldReader], Request]:
    def dec(r: FieldReader) -> Request:
        return WithReqId(msg_id, r.integer("reqId"))

    return dec


def _auto_open_orders(r: FieldReader) -> Request:
    _version(r, 1)
    r.flag("autoBind")
    return Simple(REQ_AUTO_OPEN_ORDERS)


def _completed_orders(r: FieldReader) -> ReqCompletedOrders:
    return ReqCompletedOrders(api_only=r.flag("apiOnly"))


def _account_updates(r: FieldReader) -> ReqAccountUpdates:
    _version(r, 2)
    return ReqAccountUpdates(subscribe=r.flag("subscribe"), account=r.text("acctCode"))


def _account_updates_multi(r: FieldReader) -> ReqAccountUpdatesMulti:
    _version(r, 1)
    return ReqAccountUpdatesMulti(
        req_id=r.integer("reqId"),
        account=r.text("account"),
        model_code=r.text("modelCode"),
        ledger_and_nlv=r.flag("ledgerAndNLV"),
    )


def _account_summary(r: FieldReader) -> ReqAccountSummary:
    _version(r, 1)
    req_id = r.integer("reqId")
    group = r.text("groupName")
    tags = tuple(t.strip() for t in r.text("tags").split(",") if t.strip())
    return ReqAccountSummary(req_id=req_id, group=group, tags=tags)


def _executions(r: FieldReader) -> ReqExecutions:
    _version(r, 3)
    return ReqExecutions(
        req_id=r.integer("reqId"),
        client_id=r.integer("filter.clientId"),
        account=r.text("filter.acctCode"),
        time=r.text("filter.time"),
        symbol=r.text("filter.symbol"),
        sec_type=r.text("filter.secType"),
        exchange=r.text("filter.exchange"),
        side=r.text("filter.side"),
    )


def _req_ids(r: FieldReader) -> ReqIds:
    _version(r, 1)
    return ReqIds(count=r.integer("numIds"))


def _contract_details(r: FieldReader) -> ReqContractDetails:
    _version(r, 8)
    req_id = r.integer("reqId")
    contract = read_contract(r)
    include_expired = r.flag("includeExpired")
    sec_id_type = r.text("secIdType")
    sec_id = r.text("secId")
    issuer_id = r.text("issuerId") if SERVER_VERSION >= 176 else ""
    return ReqContractDetails(req_id, contract, include_expired, sec_id_type, sec_id, issuer_id)


def _sec_def_opt_params(r: FieldReader) -> ReqSecDefOptParams:
    return ReqSecDefOptParams(
        req_id=r.integer("reqId"),
        underlying_symbol=r.text("underlyingSymbol"),
        fut_fop_exchange=r.text("futFopExchange"),
        underlying_sec_type=r.text("underlyingSecType"),
        underlying_con_id=r.integer("underlyingConId"),
    )


def _market_data_type(r: FieldReader) -> ReqMarketDataType:
    _version(r, 1)
    return ReqMarketDataType(market_data_type=r.integer("marketDataType"))


def _mkt_data(r: FieldReader) -> ReqMktData:
    _version(r, 11)
    req_id = r.integer("reqId")
    contract = _read_short_legs(r, read_contract(r))
    _read_delta_neutral(r)
    return ReqMktData(
        req_id=req_id,
        contract=contract,
        generic_ticks=r.text("genericTickList"),
        snapshot=r.flag("snapshot"),
        regulatory_snapshot=r.flag("regulatorySnapshot"),
        options=r.text("mktDataOptions"),
    )


def _cancel_mkt_data(r: FieldReader) -> WithReqId:
    _version(r, 2)
    return WithReqId(CANCEL_MKT_DATA, r.integer("reqId"))


def _historical_data(r: FieldReader) -> ReqHistoricalData:
    req_id = r.integer("reqId")
    contract = read_contract(r)
    include_expired = r.flag("includeExpired")
    end = r.text("endDateTime")
    bar_size = r.text("barSizeSetting")
    duration = r.text("durationStr")
    use_rth = r.flag("useRTH")
    what_to_show = r.text("whatToShow")
    format_date = r.integer("formatDate", default=1)
    contract = _read_short_legs(r, contract)
    return ReqHistoricalData(
        req_id=req_id,
        contract=contract,
        include_expired=include_expired,
        end=end,
        bar_size=bar_size,
        duration=duration,
        use_rth=use_rth,
        what_to_show=what_to_show,
        format_date=format_date,
        keep_up_to_date=r.flag("keepUpToDate"),
        chart_options=r.text("chartOptions"),
    )


def _place_order(r: FieldReader) -> PlaceOrder:
    """Walk placeOrder in `Client.placeOrder` order for server version 178."""
    order_id = r.integer("orderId")
    contract = read_contract(r)
    r.text("secIdType")
    r.text("secId")
    action = r.text("action")
    qty = r.number("totalQuantity")
    order_type = r.text("orderType")
    lmt_price = r.number("lmtPrice")
    aux_price = r.number("auxPrice")
    tif = r.text("tif")
    r.text("ocaGroup")
    account = r.text("account")
    r.text("openClose")
    r.integer("origin")
    order_ref = r.text("orderRef")
    transmit = r.flag("transmit")
    parent_id = r.integer("parentId")
    r.flag("blockOrder")
    r.flag("sweepToFill")
    r.integer("displaySize")
    r.integer("triggerMethod")
    r.flag("outsideRth")
    r.flag("hidden")
    combo_prices: tuple[float | None, ...] = ()
    if contract.sec_type == "BAG":
        n = r.integer("comboLegsCount")
        legs = []
        for _ in range(n):
            legs.append(
                WireComboLeg(
                    con_id=r.integer("leg.conId"),
                    ratio=r.integer("leg.ratio"),
                    action=r.text("leg.action"),
                    exchange=r.text("leg.exchange"),
                )
            )
            r.integer("leg.openClose")
            r.integer("leg.shortSaleSlot")
            r.text("leg.designatedLocation")
            r.integer("leg.exemptCode", default=-1)
        contract = _with_legs(contract, tuple(legs))
        n_prices = r.integer("orderComboLegsCount")
        combo_prices = tuple(r.number("orderComboLeg.price") for _ in range(n_prices))
        n_params = r.integer("smartComboRoutingParamsCount")
        r.skip(2 * n_params, "smartComboRoutingParam")
    r.text("deprecated sharesAllocation")
    r.number("discretionaryAmt")
    r.text("goodAfterTime")
    r.text("goodTillDate")
    r.text("faGroup")
    r.text("faMethod")
    r.text("faPercentage")
    # no faProfile at version >= 177
    r.text("modelCode")
    r.integer("shortSaleSlot")
    r.text("designatedLocation")
    r.integer("exemptCode", default=-1)
    r.integer("ocaType")
    r.text("rule80A")
    r.text("settlingFirm")
    r.flag("allOrNone")
    r.integer("minQty")
    r.number("percentOffset")
    r.flag("eTradeOnly")
    r.flag("firmQuoteOnly")
    r.number("nbboPriceCap")
    r.integer("auctionStrategy")
    r.number("startingPrice")
    r.number("stockRefPrice")
    r.number("delta")
    r.number("stockRangeLower")
    r.number("stockRangeUpper")
    r.flag("overridePercentageConstraints")
    r.number("volatility")
    r.integer("volatilityType")
    dn_order_type = r.text("deltaNeutralOrderType")
    r.number("deltaNeutralAuxPrice")
    if dn_order_type:
        r.skip(8, "deltaNeutral order fields")
    r.flag("continuousUpdate")
    r.integer("referencePriceType")
    r.number("trailStopPrice")
    r.number("trailingPercent")
    r.integer("scaleInitLevelSize")
    r.integer("scaleSubsLevelSize")
    increment = r.number("scalePriceIncrement")
    if increment is not None and 0 < increment < UNSET_DOUBLE:
        r.skip(7, "scale fields")
    r.text("scaleTable")
    r.text("activeStartTime")
    r.text("activeStopTime")
    if r.text("hedgeType"):
        r.text("hedgeParam")
    r.flag("optOutSmartRouting")
    r.text("clearingAccount")
    r.text("clearingIntent")
    r.flag("notHeld")
    _read_delta_neutral(r)
    algo = r.text("algoStrategy")
    if algo:
        n_algo = r.integer("algoParamsCount")
        r.skip(2 * n_algo, "algoParam")
    r.text("algoId")
    what_if = r.flag("whatIf")
    r.text("orderMiscOptions")
    r.flag("solicited")
    r.flag("randomizeSize")
    r.flag("randomizePrice")
    if order_type in ("PEG BENCH", "PEGBENCH"):
        r.skip(5, "pegged-to-benchmark fields")
    n_conditions = r.integer("conditionsCount")
    if n_conditions:
        # condition layouts vary by type; the simulator refuses such orders (see server)
        return PlaceOrder(
            order_id=order_id,
            contract=contract,
            action=action,
            total_quantity=qty or 0.0,
            order_type=order_type,
            lmt_price=lmt_price,
            aux_price=aux_price,
            tif=tif,
            account=account,
            order_ref=order_ref,
            transmit=transmit,
            parent_id=parent_id,
            what_if=what_if,
            n_conditions=n_conditions,
            algo_strategy=algo,
            order_combo_leg_prices=combo_prices,
        )
    r.text("adjustedOrderType")
    r.number("triggerPrice")
    r.number("lmtPriceOffset")
    r.number("adjustedStopPrice")
    r.number("adjustedStopLimitPrice")
    r.number("adjustedTrailingAmount")
    r.integer("adjustableTrailingUnit")
    r.text("extOperator")
    r.text("softDollarTier.name")
    r.text("softDollarTier.val")
    r.number("cashQty")
    r.text("mifid2DecisionMaker")
    r.text("mifid2DecisionAlgo")
    r.text("mifid2ExecutionTrader")
    r.text("mifid2ExecutionAlgo")
    r.flag("dontUseAutoPriceForHedge")
    r.flag("isOmsContainer")
    r.flag("discretionaryUpToLimitPrice")
    r.flag("usePriceMgmtAlgo")
    r.integer("duration")  # >= 158
    r.integer("postToAts")  # >= 160
    r.flag("autoCancelParent")  # >= 162
    r.text("advancedErrorOverride")  # >= 166
    r.text("manualOrderTime")  # >= 169
    if contract.exchange == "IBKRATS":  # >= 170
        r.integer("minTradeQty")
    if order_type in ("PEG BEST", "PEGBEST"):
        r.integer("minCompeteSize")
        offset = r.number("competeAgainstBestOffset")
        if offset == math.inf:
            r.skip(2, "midOffsets")
    elif order_type in ("PEG MID", "PEGMID"):
        r.skip(2, "midOffsets")
    r.done()
    return PlaceOrder(
        order_id=order_id,
        contract=contract,
        action=action,
        total_quantity=qty or 0.0,
        order_type=order_type,
        lmt_price=lmt_price,
        aux_price=aux_price,
        tif=tif,
        account=account,
        order_ref=order_ref,
        transmit=transmit,
        parent_id=parent_id,
        what_if=what_if,
        n_conditions=0,
        algo_strategy=algo,
        order_combo_leg_prices=combo_prices,
    )


def _cancel_order(r: FieldReader) -> CancelOrder:
    _version(r, 1)
    order_id = r.integer("orderId")
    manual = r.text("manualCancelOrderTime")  # >= 169
    return CancelOrder(order_id=order_id, manual_cancel_time=manual)


DECODERS: dict[int, Callable[[FieldReader], Request]] = {
    START_API: _start_api,
    REQ_MKT_DATA: _mkt_data,
    CANCEL_MKT_DATA: _cancel_mkt_data,
    PLACE_ORDER: _place_order,
    CANCEL_ORDER: _cancel_order,
    REQ_OPEN_ORDERS: _simple_v1(REQ_OPEN_ORDERS),
    REQ_ALL_OPEN_ORDERS: _simple_v1(REQ_ALL_OPEN_ORDERS),
    REQ_AUTO_OPEN_ORDERS: _auto_open_orders,
    REQ_MANAGED_ACCTS: _simple_v1(REQ_MANAGED_ACCTS),
    REQ_ACCOUNT_UPDATES: _account_updates,
    REQ_EXECUTIONS: _executions,
    REQ_IDS: _req_ids,
    REQ_CONTRACT_DETAILS: _contract_details,
    REQ_HISTORICAL_DATA: _historical_data,
    CANCEL_HISTORICAL_DATA: _req_id_v1(CANCEL_HISTORICAL_DATA),
    REQ_CURRENT_TIME: _simple_v1(REQ_CURRENT_TIME),
    REQ_GLOBAL_CANCEL: _simple_v1(REQ_GLOBAL_CANCEL),
    REQ_MARKET_DATA_TYPE: _market_data_type,
    REQ_POSITIONS: _simple_v1(REQ_POSITIONS),
    CANCEL_POSITIONS: _simple_v1(CANCEL_POSITIONS),
    REQ_ACCOUNT_SUMMARY: _account_summary,
    CANCEL_ACCOUNT_SUMMARY: _req_id_v1(CANCEL_ACCOUNT_SUMMARY),
    REQ_ACCOUNT_UPDATES_MULTI: _account_updates_multi,
    CANCEL_ACCOUNT_UPDATES_MULTI: _req_id_v1(CANCEL_ACCOUNT_UPDATES_MULTI),
    REQ_SEC_DEF_OPT_PARAMS: _sec_def_opt_params,
    REQ_COMPLETED_ORDERS: _completed_orders,
}

_CHECK_DONE_EXEMPT = frozenset({PLACE_ORDER})  # placeOrder checks itself (conditions branch)


class UnsupportedRequest(ProtocolError):
    """A well-formed request the simulator does not implement."""

    def __init__(self, msg_id: int) -> None:
        super().__init__(f"request id {msg_id} is not supported by the V6 gateway simulator")
        self.msg_id = msg_id


def decode(fields: list[str]) -> Request:
    """One incoming message as a typed request; ProtocolError when it does not parse."""
    if not fields:
        raise ProtocolError("empty message")
    try:
        msg_id = int(fields[0])
    except ValueError:
        raise ProtocolError(f"message id {fields[0]!r} is not an integer") from None
    decoder = DECODERS.get(msg_id)
    if decoder is None:
        raise UnsupportedRequest(msg_id)
    r = FieldReader(fields[1:], name=f"request {msg_id}")
    request = decoder(r)
    if msg_id not in _CHECK_DONE_EXEMPT:
        r.done()
    return request
