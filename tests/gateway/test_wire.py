"""Every layout against the installed ib_async: our encoders through its Decoder, its
Client's requests through our decoders. A wrong field count is silently swallowed by the
client at run time, so it is caught here instead, field by field."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from typing import Any

import pytest
from ib_async import (
    Bag,
    ComboLeg,
    ExecutionFilter,
    LimitOrder,
    MarketOrder,
    Option,
    Order,
    Stock,
    TagValue,
)
from ib_async.client import Client
from ib_async.decoder import Decoder

from core.domain import (
    Action,
    Bar,
    Contract,
    Execution,
    OptionChain,
    Position,
)
from core.domain import ComboLeg as V6Leg
from core.sim.gateway import messages as m
from core.sim.gateway import requests as rq
from core.sim.gateway.faults import HistoricalPacing, Pacer
from core.sim.gateway.wire import Framer, ProtocolError, encode

pytestmark = pytest.mark.gateway

OPT = Contract.option("SPY", date(2026, 4, 17), 500.0, "P").with_con_id(
    1234, local_symbol="SPY   260417P00500000", trading_class="SPY"
)
BAG = Contract.combo("SPY", [V6Leg(1234, 1, "SELL"), V6Leg(1235, 2, "BUY")])


class Recorder:
    """A stand-in ib_async wrapper that records every callback."""

    defaultTimezone = UTC

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        def record(*args: Any) -> None:
            self.calls.append((name, args))

        return record


def decode_out(fields: list[object]) -> tuple[str, tuple[Any, ...]]:
    """Frame our message, split it as the client does, run the client's handler."""
    (wire,) = Framer().feed(encode(fields))
    rec = Recorder()
    dec = Decoder(rec, 178)  # type: ignore[arg-type]
    dec.handlers[int(wire[0])](wire)
    assert len(rec.calls) >= 1, f"decoder produced no callback for {wire[:4]}"
    return rec.calls[-1]


def client_sends(call: Any) -> list[list[str]]:
    """What ib_async's Client writes for `call(client)`, as field lists."""
    sent: list[bytes] = []
    client = Client(Recorder())  # type: ignore[arg-type]
    client.connState = Client.CONNECTED
    client._serverVersion = 178
    client.MaxRequests = 0
    client.conn.sendMsg = sent.append  # type: ignore[method-assign]
    call(client)
    framer = Framer()
    return [f for data in sent for f in framer.feed(data)]


# --------------------------------------------------------------------------- outgoing
async def test_open_order_plain_is_127_fields_and_parses_exactly() -> None:
    w = m.WireOrder(
        order_id=5,
        client_id=7,
        perm_id=99,
        contract=OPT,
        action="BUY",
        quantity=2,
        order_type="LMT",
        limit_price=1.25,
        tif="GTC",
        account="DU1",
        order_ref="ref-1",
        status="Submitted",
    )
    fields = m.open_order(w)
    assert len(fields) == 127
    name, (order_id, c, o, st) = decode_out(fields)
    assert name == "openOrder" and order_id == 5
    assert (c.conId, c.symbol, c.secType, c.lastTradeDateOrContractMonth) == (
        1234,
        "SPY",
        "OPT",
        "20260417",
    )
    assert (c.strike, c.right, c.multiplier, c.localSymbol) == (
        500.0,
        "P",
        "100",
        "SPY   260417P00500000",
    )
    assert (o.action, o.totalQuantity, o.orderType, o.lmtPrice, o.tif) == (
        "BUY",
        2.0,
        "LMT",
        1.25,
        "GTC",
    )
    assert (o.orderRef, o.clientId, o.permId, o.account, o.whatIf) == ("ref-1", 7, 99, "DU1", False)
    assert st.status == "Submitted"
    # the tail is positional: a shifted field would land here
    assert o.autoCancelParent is False and o.usePriceMgmtAlgo is False


async def test_open_order_bag_carries_legs_and_what_if_margins() -> None:
    w = m.WireOrder(
        order_id=6,
        client_id=7,
        perm_id=0,
        contract=BAG,
        action="SELL",
        quantity=1,
        order_type="LMT",
        limit_price=-0.85,
        tif="DAY",
        account="DU1",
        order_ref="w",
        status="PreSubmitted",
        what_if=True,
        margins={
            "initMarginBefore": 0.0,
            "initMarginChange": 500.0,
            "initMarginAfter": 500.0,
            "equityWithLoanChange": 85.0,
        },
        what_if_raw={"maintMarginAfter": ""},
    )
    fields = m.open_order(w)
    assert len(fields) == 127 + 8 * 2
    _, (_, c, o, st) = decode_out(fields)
    assert c.secType == "BAG" and c.conId == rq.BAG_CON_ID
    assert [(leg.conId, leg.ratio, leg.action) for leg in c.comboLegs] == [
        (1234, 1, "SELL"),
        (1235, 2, "BUY"),
    ]
    assert o.whatIf is True and o.lmtPrice == -0.85
    assert (st.initMarginChange, st.initMarginAfter, st.equityWithLoanChange) == (
        "500.0",
        "500.0",
        "85.0",
    )
    # what the simulator does not know goes out as IB's unset double, as text
    assert st.maintMarginChange == st.equityWithLoanBefore == "1.7976931348623157E308"
    assert st.maintMarginAfter == ""


async def test_completed_order_parses() -> None:
    w = m.WireOrder(
        order_id=6,
        client_id=7,
        perm_id=77,
        contract=OPT,
        action="SELL",
        quantity=3,
        order_type="MKT",
        limit_price=None,
        tif="DAY",
        account="DU1",
        order_ref="done",
        status="Filled",
        filled=3,
        completed_status="Filled",
    )
    rec = Recorder()
    dec = Decoder(rec, 178)  # type: ignore[arg-type]
    (wire,) = Framer().feed(encode(m.completed_order(w)))
    dec.completedOrder(wire)
    name, (c, o, st) = rec.calls[-1]
    assert name == "completedOrder"
    assert (c.conId, o.permId, o.orderRef, o.filledQuantity, st.status) == (
        1234,
        77,
        "done",
        3.0,
        "Filled",
    )
    assert st.completedStatus == "Filled"


async def test_order_status_exec_details_and_commission() -> None:
    w = m.WireOrder(
        order_id=5,
        client_id=7,
        perm_id=99,
        contract=OPT,
        action="BUY",
        quantity=2,
        order_type="MKT",
        limit_price=None,
        tif="DAY",
        account="DU1",
        order_ref="r",
        status="Filled",
        filled=2,
        avg_fill_price=1.5,
        last_fill_price=1.5,
    )
    name, args = decode_out(m.order_status(w))
    assert name == "orderStatus"
    assert args == (5, "Filled", 2.0, 0.0, 1.5, 99, 0, 1.5, 7, "", 0.0)

    e = Execution(
        exec_id="E1",
        order_id=1,
        order_ref="r",
        contract=OPT,
        side=Action.SELL,
        quantity=2,
        price=1.5,
        time=datetime(2026, 3, 2, 15, 30, 7, tzinfo=UTC),
        account="DU1",
        commission=1.3,
        perm_id=99,
    )
    fields = m.exec_details(-1, e, order_id=5, client_id=7, cum_qty=2, avg_price=1.5)
    assert len(fields) == 32
    name, (req_id, c, ex) = decode_out(fields)
    assert (name, req_id, c.conId, ex.execId, ex.side, ex.shares, ex.price) == (
        "execDetails",
        -1,
        1234,
        "E1",
        "SLD",
        2.0,
        1.5,
    )
    assert (ex.orderId, ex.clientId, ex.permId, ex.orderRef) == (5, 7, 99, "r")
    assert ex.time == datetime(2026, 3, 2, 15, 30, 7, tzinfo=UTC)
    name, (report,) = decode_out(m.commission_report("E1", 1.3))
    assert (report.execId, report.commission, report.currency) == ("E1", 1.3, "USD")


async def test_contract_details_and_option_params() -> None:
    fields = m.contract_details(3, OPT, m.DetailsExtra(under_con_id=756733, under_symbol="SPY"))
    assert len(fields) == 40
    name, (req_id, cd) = decode_out(fields)
    c = cd.contract
    assert (name, req_id, c.conId, c.lastTradeDateOrContractMonth, c.multiplier) == (
        "contractDetails",
        3,
        1234,
        "20260417",
        "100",
    )
    assert (cd.underConId, cd.minTick, cd.minSize, cd.suggestedSizeIncrement) == (
        756733,
        0.01,
        1.0,
        1.0,
    )
    chain = OptionChain("SPY", 756733, "SMART", "SPY", 100, (date(2026, 4, 17),), (495.0, 500.0))
    name, args = decode_out(m.sec_def_opt_params(4, chain))
    assert args == (4, "SMART", "756733", "SPY", "100", ["20260417"], [495.0, 500.0])


async def test_position_portfolio_account_messages() -> None:
    p = Position("DU1", OPT, -2, 345.65)
    name, (acct, c, qty, avg) = decode_out(m.position("DU1", p))
    assert (name, acct, c.conId, c.strike, qty, avg) == (
        "position",
        "DU1",
        1234,
        500.0,
        -2.0,
        345.65,
    )
    name, (c, qty, price, value, _avg, _upnl, _rpnl, acct) = decode_out(
        m.portfolio_value(p, 3.0, -45.0, 0.0, "DU1")
    )
    assert (name, c.conId, qty, price, value, acct) == (
        "updatePortfolio",
        1234,
        -2.0,
        3.0,
        -600.0,
        "DU1",
    )
    assert decode_out(m.account_value("NetLiquidation", "1.5", "USD", "DU1")) == (
        "updateAccountValue",
        ("NetLiquidation", "1.5", "USD", "DU1"),
    )
    assert decode_out(m.account_summary(9, "DU1", "BuyingPower", "2.0", "USD")) == (
        "accountSummary",
        (9, "DU1", "BuyingPower", "2.0", "USD"),
    )
    assert decode_out(m.error(-1, 2104, "farm ok")) == ("error", (-1, 2104, "farm ok", ""))


async def test_ticks_and_nan_greeks_become_ib_sentinels() -> None:
    assert decode_out(m.tick_price(8, 1, 3.25, 12)) == ("priceSizeTick", (8, 1, 3.25, 12.0))
    assert decode_out(m.tick_size(8, 8, 1000)) == ("tickSize", (8, 8, 1000.0))
    nan = math.nan
    name, args = decode_out(
        m.tick_option_computation(
            8, 13, iv=nan, delta=nan, opt_price=3.2, gamma=nan, vega=nan, theta=nan, und_price=nan
        )
    )
    assert name == "tickOptionComputation"
    assert args == (8, 13, 0, -1.0, -2.0, 3.2, 0.0, -2.0, -2.0, -2.0, -1.0)
    assert decode_out(m.tick_snapshot_end(8)) == ("tickSnapshotEnd", (8,))
    assert decode_out(m.market_data_type(8, 2)) == ("marketDataType", (8, 2))


async def test_historical_bars_epoch_dates() -> None:
    bar = Bar(datetime(2026, 3, 2, 15, 0, tzinfo=UTC), 1.0, 2.0, 0.5, 1.5, 100, 1.2, 3)
    rec = Recorder()
    (wire,) = Framer().feed(encode(m.historical_data(2, "s", "e", [bar, bar], 2)))
    Decoder(rec, 178).historicalData(wire)  # type: ignore[arg-type]
    names = [n for n, _ in rec.calls]
    assert names == ["historicalData", "historicalData", "historicalDataEnd"]
    b = rec.calls[0][1][1]
    assert (b.date, b.open, b.high, b.low, b.close, b.volume, b.average, b.barCount) == (
        "1772463600",
        1.0,
        2.0,
        0.5,
        1.5,
        100.0,
        1.2,
        3,
    )


# --------------------------------------------------------------------------- incoming
async def test_place_order_walk_plain_bag_and_what_if() -> None:
    stock = Stock("SPY", "SMART", "USD")
    opt = Option("SPY", "20260417", 500.0, "P", "SMART", conId=1234)
    legs = [ComboLeg(1234, 1, "SELL", "SMART"), ComboLeg(1235, 2, "BUY", "SMART")]
    bag = Bag(symbol="SPY", exchange="SMART", currency="USD", comboLegs=legs)
    lmt = LimitOrder("BUY", 3, 1.25, orderRef="ref-a", tif="GTC")
    mkt = MarketOrder("SELL", 2, orderRef="ref-b")
    what_if = LimitOrder("SELL", 1, -0.85, orderRef="ref-c", whatIf=True)
    params = [TagValue("adaptivePriority", "Normal")]
    algo = Order(orderType="LMT", action="BUY", totalQuantity=1, lmtPrice=1.0)
    algo.algoStrategy, algo.algoParams = "Adaptive", params
    msgs = client_sends(
        lambda c: (
            c.placeOrder(11, opt, lmt),
            c.placeOrder(12, stock, mkt),
            c.placeOrder(13, bag, what_if),
            c.placeOrder(14, stock, algo),
        )
    )
    assert len(msgs[1]) == 114  # a plain order is 114 fields in ib_async placeOrder layout
    a, b, c, d = (rq.decode(x) for x in msgs)
    assert isinstance(a, rq.PlaceOrder) and isinstance(b, rq.PlaceOrder)
    assert isinstance(c, rq.PlaceOrder) and isinstance(d, rq.PlaceOrder)
    assert (a.order_id, a.action, a.total_quantity, a.order_type, a.lmt_price, a.tif) == (
        11,
        "BUY",
        3.0,
        "LMT",
        1.25,
        "GTC",
    )
    assert (a.order_ref, a.contract.con_id, a.contract.expiry, a.what_if) == (
        "ref-a",
        1234,
        "20260417",
        False,
    )
    assert (b.order_type, b.lmt_price, b.order_ref, b.contract.symbol) == (
        "MKT",
        None,
        "ref-b",
        "SPY",
    )
    assert c.what_if and c.lmt_price == -0.85 and c.contract.sec_type == "BAG"
    assert [(x.con_id, x.ratio, x.action) for x in c.contract.legs] == [
        (1234, 1, "SELL"),
        (1235, 2, "BUY"),
    ]
    assert d.algo_strategy == "Adaptive" and d.lmt_price == 1.0


async def test_other_requests_decode() -> None:
    opt = Option("SPY", "20260417", 500.0, "P", "SMART", conId=1234)
    bag = Bag(
        symbol="SPY",
        exchange="SMART",
        currency="USD",
        comboLegs=[ComboLeg(1234, 1, "SELL", "SMART")],
    )
    msgs = client_sends(
        lambda c: (
            c.startApi(),
            c.reqMktData(21, bag, "", True, False, []),
            c.reqHistoricalData(
                22,
                opt,
                "20260302 15:30:00 UTC",
                "3600 S",
                "5 mins",
                "MIDPOINT",
                False,
                2,
                False,
                [],
            ),
            c.reqContractDetails(23, opt),
            c.reqExecutions(24, ExecutionFilter(time="20260302-15:00:00", symbol="SPY")),
            c.cancelOrder(25),
            c.reqSecDefOptParams(26, "SPY", "", "STK", 756733),
            c.reqAccountSummary(27, "All", "NetLiquidation,$LEDGER:ALL"),
            c.reqCompletedOrders(False),
            c.reqAccountUpdatesMulti(28, "DU1", "", False),
            c.reqMarketDataType(3),
        )
    )
    got = [rq.decode(x) for x in msgs]
    assert isinstance(got[0], rq.StartApi)
    md = got[1]
    assert isinstance(md, rq.ReqMktData) and md.snapshot and md.contract.legs[0].con_id == 1234
    hd = got[2]
    assert isinstance(hd, rq.ReqHistoricalData)
    assert (hd.bar_size, hd.duration, hd.what_to_show, hd.format_date) == (
        "5 mins",
        "3600 S",
        "MIDPOINT",
        2,
    )
    assert rq.parse_ib_time(hd.end) == datetime(2026, 3, 2, 15, 30, tzinfo=UTC)
    cd = got[3]
    assert isinstance(cd, rq.ReqContractDetails) and cd.contract.to_domain().strike == 500.0
    ex = got[4]
    assert isinstance(ex, rq.ReqExecutions) and ex.symbol == "SPY"
    assert rq.parse_ib_time(ex.time) == datetime(2026, 3, 2, 15, tzinfo=UTC)
    assert isinstance(got[5], rq.CancelOrder) and got[5].order_id == 25
    assert isinstance(got[6], rq.ReqSecDefOptParams) and got[6].underlying_con_id == 756733
    assert isinstance(got[7], rq.ReqAccountSummary) and got[7].tags[-1] == "$LEDGER:ALL"
    assert isinstance(got[8], rq.ReqCompletedOrders)
    assert isinstance(got[9], rq.ReqAccountUpdatesMulti)
    assert isinstance(got[10], rq.ReqMarketDataType) and got[10].market_data_type == 3


def test_decode_errors_name_the_field() -> None:
    with pytest.raises(ProtocolError, match=r"request 9: field \d+ \(symbol\) is missing"):
        rq.decode(["9", "8", "1", "0"])
    with pytest.raises(ProtocolError, match=r"conId.*must be an integer"):
        rq.decode(["9", "8", "1", "x"] + [""] * 14)
    with pytest.raises(ProtocolError, match="trailing"):
        rq.decode(["49", "1", "extra"])
    with pytest.raises(rq.UnsupportedRequest):
        rq.decode(["10", "5", "1"])


def test_wire_contract_and_durations() -> None:
    wc = rq.WireContract(0, "SPY", "OPT", "20260417", 500.0, "PUT", "", "SMART", "", "USD", "", "")
    assert wc.to_domain() == Contract.option("SPY", date(2026, 4, 17), 500.0, "P")
    with pytest.raises(ValueError, match="YYYYMMDD"):
        rq.WireContract(0, "ES", "FUT", "202603", None, "", "", "", "", "", "", "").to_domain()
    with pytest.raises(ValueError, match="secType 'CASH'"):
        rq.WireContract(0, "EUR", "CASH", "", None, "", "", "", "", "", "", "").to_domain()
    assert rq.parse_duration("2 D").total_seconds() == 2 * 86400
    with pytest.raises(ValueError, match="durationStr"):
        rq.parse_duration("2 days")


def test_pacer_rules() -> None:
    now = [0.0]
    pacer = Pacer(HistoricalPacing(max_requests=3, same_contract_max=2), now=lambda: now[0])
    assert pacer.check("a", 1) is None
    assert pacer.check("a", 2) is None
    assert "one contract" in (pacer.check("a", 3) or "")
    now[0] = 5.0
    assert pacer.check("b", 4) is None
    assert "more than 3 requests" in (pacer.check("c", 5) or "")
    with pytest.raises(ValueError, match="max_requests"):
        HistoricalPacing(max_requests=0)
