"""SimExchange: matching, fills, rejections, combos, margin, expiry, faults, events."""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import date, timedelta

import pytest
from sim_orders import lmt, option, positions_by_id, spread
from sim_world import OPEN, make_market

from core.clock import SimClock
from core.domain import (
    Action,
    ComboLeg,
    Contract,
    OrderRequest,
    OrderStatus,
    OrderType,
    Right,
    SecType,
)
from core.sim import (
    ExchangeEvent,
    ExecutionReported,
    FaultPlan,
    MarketSimulator,
    OrderUpdated,
    PositionChanged,
    SimExchange,
    SimExchangeError,
)
from core.sim.calendar import to_epoch
from core.sim.exchange import DeliveryKind


def executions_by_id(x: SimExchange) -> dict[int, int]:
    """Net quantity per contract from executions and deliveries (what positions add up to)."""
    out: dict[int, int] = defaultdict(int)
    for e in x.executions():
        out[e.contract.con_id] += e.signed_quantity
    for d in x.deliveries():
        out[d.option.con_id] -= d.quantity
        if d.stock is not None:
            out[d.stock.con_id] += d.shares
    return {k: v for k, v in out.items() if v}


def test_marketable_limit_fills_at_the_touch_with_commission(exchange: SimExchange) -> None:
    m = exchange.market
    put = option(m, 25, 1.0, "P")
    q = exchange.quote(put)
    st = exchange.place_order(lmt(put, Action.BUY, 2, q.ask + 0.10, "buy-1"))
    assert st.status is OrderStatus.FILLED and st.filled == 2
    assert st.avg_fill_price == pytest.approx(q.ask)  # price improvement to the ask
    (ex,) = exchange.executions()
    assert ex.exec_id == f"{st.perm_id:08x}.{to_epoch(ex.time):08x}.0101.01"
    assert ex.order_ref == "buy-1"
    assert ex.commission == pytest.approx(1.30) and ex.price == q.ask and ex.side is Action.BUY
    (pos,) = exchange.positions()
    assert pos.quantity == 2
    assert pos.avg_cost == pytest.approx(q.ask * 100 + 0.65)  # IB: per contract, incl. fees
    sell = exchange.place_order(lmt(put, Action.SELL, 2, q.bid, "sell-1"))
    assert sell.status is OrderStatus.FILLED and sell.avg_fill_price == pytest.approx(q.bid)
    assert exchange.positions() == []
    acct = exchange.account_summary()
    expected = 100_000 - (q.ask - q.bid) * 200 - 2.60
    assert acct.net_liquidation == pytest.approx(expected)
    assert acct.realized_pnl == pytest.approx(expected - 100_000)


def test_non_marketable_order_rests_and_cancels(clock: SimClock, exchange: SimExchange) -> None:
    put = option(exchange.market, 25, 1.0, "P")
    q = exchange.quote(put)
    st = exchange.place_order(lmt(put, Action.BUY, 1, q.bid * 0.5, "low"))
    assert st.status is OrderStatus.SUBMITTED and st.filled == 0
    clock.advance(timedelta(minutes=5))
    assert exchange.on_clock() == []
    assert [o.order_id for o in exchange.open_orders()] == [st.order_id]
    done = exchange.cancel_order(st.order_id)
    assert done.status is OrderStatus.CANCELLED and "202" in done.message
    assert exchange.cancel_order(st.order_id) == done  # idempotent on a finished order
    assert exchange.open_orders() == [] and exchange.completed_orders() == [done]
    with pytest.raises(SimExchangeError, match="order id 999 is not known"):
        exchange.cancel_order(999)


def test_orders_placed_before_the_open_are_pending_then_fill() -> None:
    clk = SimClock(OPEN - timedelta(hours=2))  # 07:30 ET
    x = SimExchange(make_market(clk))
    order = OrderRequest(Contract.stock("SPY"), Action.BUY, 10, OrderType.MKT, order_ref="pre")
    st = x.place_order(order)
    assert st.status is OrderStatus.PENDING
    clk.set(OPEN + timedelta(minutes=1))
    (ex,) = x.on_clock()
    assert ex.quantity == 10 and ex.commission == 1.0  # IB fixed stock minimum
    assert x.order(st.order_id).status is OrderStatus.FILLED


def test_slippage_moves_the_price_but_never_past_the_limit(market: MarketSimulator) -> None:
    x = SimExchange(market, slippage_ticks=2)
    put = option(market, 25, 1.0, "P")
    q = x.quote(put)
    loose = x.place_order(lmt(put, Action.BUY, 1, q.ask + 0.05, "slip-a"))
    assert loose.avg_fill_price == pytest.approx(q.ask + 0.02)
    tight = x.place_order(lmt(put, Action.BUY, 1, q.ask, "slip-b"))
    assert tight.avg_fill_price == pytest.approx(q.ask)
    sold = x.place_order(lmt(put, Action.SELL, 2, q.bid - 0.05, "slip-c"))
    assert sold.avg_fill_price == pytest.approx(q.bid - 0.02)


def test_partial_fill_by_displayed_size(clock: SimClock, exchange: SimExchange) -> None:
    far = option(exchange.market, 25, 0.8, "P")
    q = exchange.quote(far)
    want = q.ask_size + 5
    st = exchange.place_order(lmt(far, Action.BUY, want, q.ask + 0.5, "big"))
    assert st.status is OrderStatus.SUBMITTED and st.filled == q.ask_size
    clock.advance(timedelta(minutes=1))
    exchange.on_clock()
    final = exchange.order(st.order_id)
    assert final.status is OrderStatus.FILLED and final.filled == want
    assert positions_by_id(exchange) == {far.con_id: want}


def test_fault_partial_fill_holds_the_rest(clock: SimClock, exchange: SimExchange) -> None:
    put = option(exchange.market, 25, 1.0, "P")
    q = exchange.quote(put)
    exchange.faults.partial_fill_next = 1
    st = exchange.place_order(lmt(put, Action.BUY, 3, q.ask + 1.0, "part"))
    assert (st.status, st.filled, st.remaining) == (OrderStatus.SUBMITTED, 1, 2)
    assert exchange.faults.partial_fill_next is None  # one-shot
    clock.advance(timedelta(seconds=30))
    assert exchange.on_clock() == []
    clock.advance(timedelta(seconds=31))
    assert sum(e.quantity for e in exchange.on_clock()) == 2
    assert exchange.order(st.order_id).status is OrderStatus.FILLED


def test_fault_delayed_fill(clock: SimClock, exchange: SimExchange) -> None:
    put = option(exchange.market, 25, 1.0, "P")
    exchange.faults.delay_fills_s = 10
    st = exchange.place_order(lmt(put, Action.BUY, 1, exchange.quote(put).ask + 1.0, "late"))
    assert st.status is OrderStatus.SUBMITTED
    clock.advance(timedelta(seconds=5))
    assert exchange.on_clock() == []
    clock.advance(timedelta(seconds=5))
    assert len(exchange.on_clock()) == 1


def test_duplicate_execution_is_reported_twice_but_booked_once(exchange: SimExchange) -> None:
    events: list[ExchangeEvent] = []
    unsubscribe = exchange.subscribe(events.append)
    put = option(exchange.market, 25, 1.0, "P")
    exchange.faults.duplicate_next_execution = True
    exchange.place_order(lmt(put, Action.BUY, 1, exchange.quote(put).ask, "dup"))
    reports = [e for e in events if isinstance(e, ExecutionReported)]
    assert [r.duplicate for r in reports] == [False, True]
    assert reports[0].execution == reports[1].execution
    assert len(exchange.executions()) == 1 and positions_by_id(exchange) == {put.con_id: 1}
    kinds = [type(e) for e in events]
    assert kinds == [
        OrderUpdated,
        ExecutionReported,
        ExecutionReported,
        PositionChanged,
        OrderUpdated,
    ]
    assert [e.state.status for e in events if isinstance(e, OrderUpdated)] == [
        OrderStatus.SUBMITTED,
        OrderStatus.FILLED,
    ]
    unsubscribe()
    exchange.place_order(lmt(put, Action.SELL, 1, exchange.quote(put).bid, "dup-close"))
    assert len(events) == 5


def test_rejections_name_the_reason(exchange: SimExchange) -> None:
    m = exchange.market
    put = option(m, 25, 1.0, "P")
    ask = exchange.quote(put).ask
    exchange.faults.reject_next = 1
    r1 = exchange.place_order(lmt(put, Action.BUY, 1, ask, "r1"))
    assert (
        r1.status is OrderStatus.REJECTED and "[201]" in r1.message and "reject_next" in r1.message
    )
    assert exchange.place_order(lmt(put, Action.BUY, 1, ask, "r2")).status is OrderStatus.FILLED
    bogus = Contract.option("SPY", date(2026, 3, 4), 600, "P")  # no such expiry
    r3 = exchange.place_order(lmt(bogus, Action.BUY, 1, 1.0, "r3"))
    assert r3.status is OrderStatus.REJECTED and "[200] No security definition" in r3.message
    r4 = exchange.place_order(lmt(put, Action.BUY, 1, -1.0, "r4"))
    assert "limit_price must be > 0" in r4.message
    r5 = exchange.place_order(OrderRequest(put, Action.BUY, 1, limit_price=1.005, order_ref="r5"))
    assert "[110]" in r5.message and "0.01" in r5.message
    r6 = exchange.place_order(lmt(put, Action.BUY, 500, ask, "r6"))
    assert r6.status is OrderStatus.REJECTED and "insufficient buying power" in r6.message
    r7 = exchange.place_order(lmt(Contract.index("VIX"), Action.BUY, 1, 20.0, "r7"))
    assert "not tradable" in r7.message
    r8 = exchange.place_order(lmt(put, Action.BUY, 1, ask, "r8", tif="IOC"))
    assert "tif 'IOC' is not supported" in r8.message
    assert exchange.find_order("r6") == r6  # rejected orders are remembered by ref
    with pytest.raises(ValueError, match="limit_price must be a finite number"):
        OrderRequest(put, Action.BUY, 1, limit_price=math.nan, order_ref="r9")
    assert positions_by_id(exchange) == {put.con_id: 1}
    with pytest.raises(SimExchangeError, match=r"\[200\]"):
        exchange.quote(bogus)


def test_bag_fills_all_legs_atomically_at_the_net_price(exchange: SimExchange) -> None:
    bag, short, lng = spread(exchange.market)
    bq = exchange.quote(bag)
    s_q, l_q = exchange.quote(short), exchange.quote(lng)
    assert bq.ask == pytest.approx(l_q.ask - s_q.bid) and bq.ask < 0  # credit quotes negative
    assert bq.bid == pytest.approx(l_q.bid - s_q.ask)
    cash0 = exchange.cash
    st = exchange.place_order(lmt(bag, Action.BUY, 2, bq.ask, "bps"))
    assert st.status is OrderStatus.FILLED and st.avg_fill_price == pytest.approx(bq.ask)
    legs = exchange.executions()
    assert {e.order_id for e in legs} == {st.order_id} and {e.order_ref for e in legs} == {"bps"}
    assert len({e.exec_id for e in legs}) == 2
    assert {(e.contract.con_id, e.side, e.quantity) for e in legs} == {
        (short.con_id, Action.SELL, 2),
        (lng.con_id, Action.BUY, 2),
    }
    assert positions_by_id(exchange) == {short.con_id: -2, lng.con_id: 2}
    assert exchange.cash == pytest.approx(cash0 - bq.ask * 200 - 4 * 0.65)
    # IB also reports the combo itself: BAG contract, net price, combo quantity, no position
    (bag_report,) = [r for r in exchange.reports() if r.execution.contract.sec_type is SecType.BAG]
    b = bag_report.execution
    assert not bag_report.booked and b not in legs
    assert (b.side, b.quantity, b.price) == (Action.BUY, 2, st.avg_fill_price)
    assert math.isnan(b.commission) and b.exec_id.endswith(".0100.01")
    fills = {e.exec_id.rpartition(".")[0] for e in [*legs, b]}
    assert len(fills) == 3  # legs and BAG never look like corrections of each other
    # same spread written the other way round is SELL at a positive limit
    rev = Contract.combo("SPY", [ComboLeg(short.con_id, 1, "BUY"), ComboLeg(lng.con_id, 1, "SELL")])
    rq = exchange.quote(rev)
    assert rq.bid == pytest.approx(-bq.ask)
    st2 = exchange.place_order(lmt(rev, Action.SELL, 1, rq.bid, "bps-2"))
    assert st2.status is OrderStatus.FILLED and st2.avg_fill_price == pytest.approx(rq.bid)
    assert positions_by_id(exchange) == {short.con_id: -3, lng.con_id: 3}


def test_bag_not_marketable_rests_without_legging(exchange: SimExchange) -> None:
    bag, _, _ = spread(exchange.market)
    bq = exchange.quote(bag)
    st = exchange.place_order(lmt(bag, Action.BUY, 1, bq.ask - 0.30, "greedy"))
    assert st.status is OrderStatus.SUBMITTED
    assert exchange.executions() == [] and exchange.positions() == []


def test_order_ref_is_free_text_as_at_ib(exchange: SimExchange) -> None:
    put = option(exchange.market, 25, 1.0, "P")
    order = lmt(put, Action.BUY, 1, exchange.quote(put).ask, "once")
    first = exchange.place_order(order)
    again = exchange.place_order(order)  # IB does not enforce unique refs: a second order
    assert again.order_id == first.order_id + 1 and again.perm_id != first.perm_id
    assert again.status is OrderStatus.FILLED and len(exchange.executions()) == 2
    assert positions_by_id(exchange) == {put.con_id: 2}
    assert exchange.find_order("once") == again and exchange.find_order("never") is None


def test_defined_risk_margin_is_width_times_multiplier_times_qty_minus_credit(
    exchange: SimExchange,
) -> None:
    m = exchange.market
    bag, short, lng = spread(m, width=5.0)
    credit = 0.85
    order = lmt(bag, Action.BUY, 3, -credit, "m1")
    assert exchange.what_if(order) == pytest.approx(5 * 100 * 3 - credit * 100 * 3)
    # iron condor: only one side can lose, so margin is one width minus the total credit
    call_s = option(m, 25, 1.05, "C")
    assert call_s.strike is not None and call_s.expiry == short.expiry
    call_l = m.qualify(Contract.option("SPY", call_s.expiry, call_s.strike + 5, "C"))
    assert call_l is not None
    ic = Contract.combo(
        "SPY",
        [
            ComboLeg(short.con_id, 1, "SELL"),
            ComboLeg(lng.con_id, 1, "BUY"),
            ComboLeg(call_s.con_id, 1, "SELL"),
            ComboLeg(call_l.con_id, 1, "BUY"),
        ],
    )
    assert exchange.what_if(lmt(ic, Action.BUY, 1, -1.40, "ic")) == pytest.approx(500 - 140)
    # after filling the spread the account carries exactly width x mult x qty
    bq = exchange.quote(bag)
    exchange.place_order(lmt(bag, Action.BUY, 3, bq.ask, "m2"))
    acct = exchange.account_summary()
    assert acct.maintenance_margin == pytest.approx(1500.0)
    closing = lmt(bag, Action.SELL, 3, -bq.ask + 0.5, "m3")
    assert exchange.what_if(closing) < 0  # risk-reducing frees funds
    long_put = lmt(lng, Action.BUY, 1, 2.0, "m4")
    assert exchange.what_if(long_put) == pytest.approx(200.0)  # premium paid, no margin


def test_positions_always_equal_the_sum_of_executions(
    clock: SimClock, exchange: SimExchange
) -> None:
    m = exchange.market
    put = option(m, 25, 1.0, "P")
    bag, short, _ = spread(m)

    def trade(c: Contract, action: Action, qty: int, ref: str) -> None:
        q = exchange.quote(c)
        px = q.ask + 0.5 if action is Action.BUY else q.bid - 0.5
        if c.sec_type is not SecType.BAG:
            px = max(px, 0.01)
        exchange.place_order(lmt(c, action, qty, px, ref))
        assert positions_by_id(exchange) == executions_by_id(exchange), ref

    trade(put, Action.BUY, 3, "a")
    trade(put, Action.SELL, 1, "b")
    trade(put, Action.SELL, 4, "c")  # flips to short 2
    trade(bag, Action.BUY, 2, "d")
    trade(short, Action.BUY, 1, "e")
    clock.advance(timedelta(days=40))  # through expiry of everything above
    exchange.on_clock()
    assert positions_by_id(exchange) == executions_by_id(exchange)
    assert all(p.contract.sec_type is SecType.STK for p in exchange.positions())
    assert {d.option.con_id for d in exchange.deliveries()} == {
        put.con_id,
        short.con_id,
        bag.combo_legs[1].con_id,
    }
    assert exchange.open_orders() == []


def test_avg_cost_and_realized_pnl_follow_ib(exchange: SimExchange) -> None:
    put = option(exchange.market, 25, 1.0, "P")
    q = exchange.quote(put)
    exchange.place_order(lmt(put, Action.SELL, 2, q.bid, "s"))
    (pos,) = exchange.positions()
    assert pos.quantity == -2 and pos.avg_cost == pytest.approx(q.bid * 100 - 0.65)
    exchange.place_order(lmt(put, Action.BUY, 1, q.ask, "b"))
    (pos,) = exchange.positions()
    assert pos.quantity == -1 and pos.avg_cost == pytest.approx(q.bid * 100 - 0.65)
    realized = (q.bid - q.ask) * 100 - 0.65 - 0.65
    assert exchange.account_summary().realized_pnl == pytest.approx(realized, abs=0.01)


def test_options_settle_physically_at_expiry_close() -> None:
    clk = SimClock(OPEN + timedelta(minutes=1))
    x = SimExchange(make_market(clk))
    m = x.market
    expiry = m.expirations("SPY")[0]
    assert expiry == date(2026, 3, 6)
    s = m.price("SPY")
    itm = m.qualify(Contract.option("SPY", expiry, round(s) - 10, "C"))
    otm = m.qualify(Contract.option("SPY", expiry, round(s) - 20, "P"))
    short_itm = m.qualify(Contract.option("SPY", expiry, round(s) + 10, "P"))
    spy = m.qualify(Contract.stock("SPY"))
    assert itm is not None and otm is not None and short_itm is not None and spy is not None
    x.place_order(lmt(itm, Action.BUY, 2, x.quote(itm).ask, "itm"))
    x.place_order(lmt(otm, Action.SELL, 1, x.quote(otm).bid, "otm"))
    x.place_order(lmt(short_itm, Action.SELL, 1, x.quote(short_itm).bid, "short-itm"))
    resting = x.place_order(lmt(itm, Action.BUY, 1, 0.05, "rest", tif="GTC"))
    fills = x.executions()
    cash_before = x.cash
    clk.set(m.calendar.rth_close(expiry) - timedelta(minutes=1))
    assert x.on_clock() == []
    clk.set(m.calendar.rth_close(expiry) + timedelta(minutes=30))
    assert x.on_clock() == []  # no execution for an exercise or an assignment
    assert x.executions() == fills and len(x.reports()) == len(fills)
    close = m.settlement_price(itm, expiry)
    assert itm.strike < close < short_itm.strike and otm.strike < close  # type: ignore[operator]
    by_option = {d.option.con_id: d for d in x.deliveries()}
    assert by_option[itm.con_id].kind is DeliveryKind.EXERCISED
    assert by_option[short_itm.con_id].kind is DeliveryKind.ASSIGNED
    assert (
        by_option[otm.con_id].kind is DeliveryKind.EXPIRED and by_option[otm.con_id].stock is None
    )
    assert all(d.at_expiry and d.time == m.calendar.rth_close(expiry) for d in x.deliveries())
    (pos,) = x.positions()  # the options are gone, the stock is there
    assert (pos.contract.con_id, pos.quantity) == (spy.con_id, 200 + 100)
    assert itm.strike is not None and short_itm.strike is not None
    paid = itm.strike * 200 + short_itm.strike * 100
    assert x.cash == pytest.approx(cash_before - paid)  # delivered at the strike, no fee
    assert pos.avg_cost == pytest.approx(paid / 300)
    assert x.order(resting.order_id).status is OrderStatus.CANCELLED
    assert x.on_clock() == [] and len(x.deliveries()) == 3  # settled exactly once
    late = x.place_order(lmt(itm, Action.BUY, 1, 1.0, "late"))
    assert late.status is OrderStatus.REJECTED and "[200]" in late.message
    bag = Contract.combo("SPY", [ComboLeg(itm.con_id, 1, "BUY"), ComboLeg(otm.con_id, 1, "SELL")])
    late_bag = x.place_order(lmt(bag, Action.BUY, 1, 1.0, "late-bag"))
    assert late_bag.status is OrderStatus.REJECTED and "expired" in late_bag.message


def test_day_orders_expire_at_the_close_gtc_orders_stay(
    clock: SimClock, exchange: SimExchange
) -> None:
    put = option(exchange.market, 25, 1.0, "P")
    low = exchange.quote(put).bid * 0.5
    day = exchange.place_order(lmt(put, Action.BUY, 1, low, "day"))
    gtc = exchange.place_order(lmt(put, Action.BUY, 1, low, "gtc", tif="GTC"))
    clock.set(exchange.market.calendar.rth_close(date(2026, 3, 2)) + timedelta(seconds=1))
    exchange.on_clock()
    assert exchange.order(day.order_id).status is OrderStatus.CANCELLED
    assert "expired at the close" in exchange.order(day.order_id).message
    assert exchange.order(gtc.order_id).status is OrderStatus.SUBMITTED


def test_quote_faults_stale_nan_and_crossed(clock: SimClock, exchange: SimExchange) -> None:
    put = option(exchange.market, 25, 1.0, "P")
    first = exchange.quote(put)
    exchange.faults.stale_quotes = True
    clock.advance(timedelta(minutes=30))
    frozen = exchange.quote(put)
    assert frozen.stale and (frozen.bid, frozen.ask, frozen.time) == (
        first.bid,
        first.ask,
        first.time,
    )
    exchange.faults.stale_quotes = False
    exchange.faults.nan_greeks = True
    q = exchange.quote(put)
    assert not q.stale and not q.has_greeks and math.isnan(q.delta) and q.bid > 0
    exchange.faults.nan_greeks = False
    exchange.faults.crossed_quotes = True
    crossed = exchange.quote(put)
    assert crossed.is_crossed and math.isnan(crossed.mid)
    assert not exchange.quote(put).is_crossed  # one-shot


def test_futures_trade_without_cash_outlay(clock: SimClock, exchange: SimExchange) -> None:
    es = exchange.market.front_future("ES")
    q = exchange.quote(es)
    st = exchange.place_order(lmt(es, Action.BUY, 1, q.ask, "es"))
    assert st.status is OrderStatus.FILLED
    assert exchange.cash == pytest.approx(100_000.0)  # fee sits in avg_cost
    acct = exchange.account_summary()
    assert acct.maintenance_margin == pytest.approx(0.06 * q.ask * 50, rel=0.01)
    assert acct.net_liquidation == pytest.approx(
        100_000 + (q.bid + q.ask) / 2 * 50 - q.ask * 50 - 0.65
    )
    clock.advance(timedelta(hours=3))
    later = exchange.quote(es)
    exchange.place_order(lmt(es, Action.SELL, 1, later.bid, "es-x"))
    pnl = (later.bid - q.ask) * 50 - 1.30
    assert exchange.cash == pytest.approx(100_000 + pnl)


def test_bad_construction_and_fault_values() -> None:
    clk = SimClock(OPEN)
    m = make_market(clk)
    with pytest.raises(ValueError, match="commission_per_contract must be >= 0"):
        SimExchange(m, commission_per_contract=-1)
    with pytest.raises(ValueError, match="net_liquidation must be finite"):
        SimExchange(m, net_liquidation=math.nan)
    with pytest.raises(ValueError, match="reject_next must be >= 0"):
        FaultPlan(reject_next=-1)
    x = SimExchange(m)
    acct = x.account_summary()
    assert (acct.net_liquidation, acct.available_funds, acct.maintenance_margin) == (
        100_000,
        100_000,
        0,
    )
    assert x.option_chains("SPY")[0].underlying == "SPY"
    assert x.contract_by_id(756733) == x.qualify(Contract.stock("SPY"))
    assert x.qualify(Contract.option("SPY", date(2026, 3, 20), 680, Right.PUT)) is not None
