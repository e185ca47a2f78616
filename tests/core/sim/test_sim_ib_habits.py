"""SimExchange reproduces IB's habits on the money path: BAG-level reports, corrections,
cancels that lose to fills, early assignment and delivery, all seeded."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sim_orders import lmt, option, positions_by_id, spread
from sim_world import make_market

from core.clock import SimClock
from core.config import SimSettings
from core.domain import Action, Contract, OrderStatus, SecType
from core.sim import SimExchange
from core.sim.dividends import next_dividend
from core.sim.exchange import DeliveryKind, corrected_exec_id

EVE_OF_EX_DATE = datetime(2026, 3, 19, 14, 0, tzinfo=UTC)  # Thu 10:00 ET; ex-date Fri 3/20


def exchange_with(clock: SimClock, **habits: float) -> SimExchange:
    market = make_market(clock)
    return SimExchange(market, habits=SimSettings(seed=market.seed, **habits))


def test_a_corrected_fill_is_reported_twice_and_booked_once(clock: SimClock) -> None:
    x = exchange_with(clock, correction_rate=0.0)
    put = option(x.market, 25, 1.0, "P")
    x.faults.correct_next_execution = True
    st = x.place_order(lmt(put, Action.BUY, 3, x.quote(put).ask, "corr"))
    wrong, right = x.reports()
    assert not wrong.booked and right.booked and not x.faults.correct_next_execution
    assert right.execution.exec_id == corrected_exec_id(wrong.execution.exec_id)
    assert wrong.execution.exec_id.endswith(".01") and right.execution.exec_id.endswith(".02")
    assert x.executions() == [right.execution]  # the account books the correction only
    assert (right.execution.quantity, right.execution.price) == (3, st.avg_fill_price)
    assert positions_by_id(x) == {put.con_id: 3}
    assert right.execution.commission == pytest.approx(1.95)
    assert wrong.execution.commission != wrong.execution.commission  # NaN: sent with the fix


def test_corrections_are_seeded_and_respect_the_rate(clock: SimClock) -> None:
    def run(rate: float, seed: int = 7) -> list[tuple[str, bool, int, float]]:
        market = make_market(SimClock(clock.now()))
        x = SimExchange(market, habits=SimSettings(seed=seed, correction_rate=rate))
        put = option(market, 25, 1.0, "P")
        for i in range(20):
            x.place_order(lmt(put, Action.BUY, 2, x.quote(put).ask, f"r{i}"))
        return [
            (r.execution.exec_id, r.booked, r.execution.quantity, r.execution.price)
            for r in x.reports()
        ]

    assert run(0.0) == [(e, True, q, p) for e, _, q, p in run(0.0)]  # none corrected
    assert all(e.endswith(".01") for e, *_ in run(0.0))
    some = run(0.3)
    assert some == run(0.3)  # deterministic for a seed
    assert 1 <= sum(not booked for _, booked, *_ in some) < 20
    every = run(1.0)
    assert len(every) == 40 and [b for _, b, *_ in every] == [False, True] * 20
    changed = [(w, r) for w, r in zip(every[::2], every[1::2], strict=True) if w[2:] != r[2:]]
    assert changed  # some wrong first reports differ in price or quantity
    prefixes = [e.rpartition(".")[0] for e, booked, *_ in every if booked]
    assert len(set(prefixes)) == 20  # twenty different fills never share a fill prefix


def test_a_cancel_can_lose_to_a_fill_at_the_limit(clock: SimClock) -> None:
    x = exchange_with(clock, cancel_fill_rate=0.0)
    put = option(x.market, 25, 1.0, "P")
    low = round(x.quote(put).bid - 0.20, 2)
    one = x.place_order(lmt(put, Action.BUY, 1, low, "race-1"))
    assert one.status is OrderStatus.SUBMITTED
    x.faults.fill_on_next_cancel = True
    done = x.cancel_order(one.order_id)
    assert done.status is OrderStatus.FILLED and done.avg_fill_price == pytest.approx(low)
    assert not x.faults.fill_on_next_cancel
    assert x.cancel_order(one.order_id) == done  # a finished order stays as it is
    plain = x.place_order(lmt(put, Action.BUY, 1, low, "race-2"))
    assert x.cancel_order(plain.order_id).status is OrderStatus.CANCELLED  # rate 0: wins
    outcomes = set()
    for i in range(12):  # rate 1: every cancel loses, fully or partly
        xi = exchange_with(SimClock(clock.now()), cancel_fill_rate=1.0)
        xi._rng_cancel.seed(i)
        st = xi.place_order(lmt(put, Action.BUY, 4, low, f"race-{i}"))
        after = xi.cancel_order(st.order_id)
        assert sum(e.quantity for e in xi.executions()) == after.filled > 0
        assert all(e.price == pytest.approx(low) for e in xi.executions())
        if after.status is OrderStatus.CANCELLED:
            assert 0 < after.filled < 4
        else:
            assert after.status is OrderStatus.FILLED and after.filled == 4
        outcomes.add(after.status)
    assert outcomes == {OrderStatus.FILLED, OrderStatus.CANCELLED}


def test_a_combo_racing_its_cancel_fills_at_its_net_limit(clock: SimClock) -> None:
    x = exchange_with(clock, cancel_fill_rate=1.0)
    bag, short, lng = spread(x.market)
    limit = round(x.quote(bag).ask - 0.30, 2)  # a credit the market does not pay now
    st = x.place_order(lmt(bag, Action.BUY, 1, limit, "bag-race"))
    assert st.status is OrderStatus.SUBMITTED
    after = x.cancel_order(st.order_id)
    assert after.status is OrderStatus.FILLED and after.avg_fill_price == pytest.approx(limit)
    (bag_report,) = [r for r in x.reports() if r.execution.contract.sec_type is SecType.BAG]
    assert bag_report.execution.price == pytest.approx(limit)
    assert positions_by_id(x) == {short.con_id: -1, lng.con_id: 1}


def test_no_race_while_the_market_is_closed(clock: SimClock) -> None:
    x = exchange_with(clock, cancel_fill_rate=1.0)
    put = option(x.market, 25, 1.0, "P")
    st = x.place_order(lmt(put, Action.BUY, 1, 0.05, "night", tif="GTC"))
    clock.set(x.market.calendar.rth_close(date(2026, 3, 2)) + timedelta(hours=1))
    x.on_clock()
    assert x.cancel_order(st.order_id).status is OrderStatus.CANCELLED


def test_short_itm_calls_are_assigned_on_the_eve_of_the_ex_date() -> None:
    clk = SimClock(EVE_OF_EX_DATE)
    x = exchange_with(clk, dividend_assignment_rate=1.0, put_assignment_rate=0.0)
    m = x.market
    day = m.trading_day()
    spot = m.price("SPY")
    expiry = next(e for e in m.expirations("SPY") if e > date(2026, 4, 1))
    deep = m.qualify(Contract.option("SPY", expiry, round(spot * 0.85 / 5) * 5, "C"))
    otm = m.qualify(Contract.option("SPY", expiry, round(spot * 1.05 / 5) * 5, "C"))
    spy = m.qualify(Contract.stock("SPY"))
    assert deep is not None and otm is not None and spy is not None
    div = next_dividend(m.calendar, day, spot, m.u_profiles[0].dividend_yield)
    assert div.ex_date == date(2026, 3, 20) and div.amount > 0
    q = x.quote(deep)
    assert deep.strike is not None and q.mid - (spot - deep.strike) < div.amount  # the rule
    x.place_order(lmt(deep, Action.SELL, 2, q.bid, "deep"))
    x.place_order(lmt(otm, Action.SELL, 1, x.quote(otm).bid, "otm"))
    fills = x.executions()
    clk.set(m.calendar.rth_close(day) - timedelta(minutes=5))
    x.on_clock()
    assert x.deliveries() == []  # assessed after the close only
    clk.set(m.calendar.rth_close(day) + timedelta(minutes=1))
    x.on_clock()
    (d,) = x.deliveries()
    assert (d.kind, d.option, d.quantity, d.shares) == (DeliveryKind.ASSIGNED, deep, -2, -200)
    assert not d.at_expiry and d.price == deep.strike
    assert positions_by_id(x) == {otm.con_id: -1, spy.con_id: -200}
    assert x.executions() == fills  # no execution: only the positions changed
    clk.advance(timedelta(minutes=5))
    x.on_clock()
    assert len(x.deliveries()) == 1  # one assessment per close


def test_deep_itm_short_puts_near_expiry_may_be_assigned() -> None:
    clk = SimClock(datetime(2026, 3, 4, 15, 0, tzinfo=UTC))  # Wed; weekly expiry Fri 3/6
    x = exchange_with(clk, put_assignment_rate=1.0, put_assignment_extrinsic=5.0)
    m = x.market
    day = m.trading_day()
    expiry = m.expirations("SPY")[0]
    spot = m.price("SPY")
    deep = m.qualify(Contract.option("SPY", expiry, round(spot * 1.06), "P"))
    atm = m.qualify(Contract.option("SPY", expiry, round(spot), "P"))
    assert deep is not None and atm is not None and (expiry - day).days <= 5
    x.place_order(lmt(deep, Action.SELL, 1, x.quote(deep).bid, "deep"))
    x.place_order(lmt(atm, Action.SELL, 1, x.quote(atm).bid, "atm"))
    clk.set(m.calendar.rth_close(day) + timedelta(minutes=1))
    x.on_clock()
    (d,) = x.deliveries()  # the ATM put is not deep enough (put_assignment_itm_pct)
    assert (d.kind, d.option.con_id, d.shares) == (DeliveryKind.ASSIGNED, deep.con_id, 100)
    assert d.price == deep.strike


def test_fault_assign_and_exercise_now(clock: SimClock) -> None:
    x = exchange_with(clock, put_assignment_rate=0.0, dividend_assignment_rate=0.0)
    put = option(x.market, 25, 1.0, "P")
    call = option(x.market, 25, 0.97, "C")  # in the money: exercise by exception applies
    far = option(x.market, 25, 1.05, "C")  # out of the money: never lapses before expiry
    x.faults.assign_next = x.faults.exercise_next = True
    clock.advance(timedelta(minutes=1))
    x.on_clock()
    assert x.deliveries() == [] and x.faults.assign_next  # waits for a position
    x.place_order(lmt(far, Action.BUY, 1, x.quote(far).ask, "far"))
    clock.advance(timedelta(minutes=1))
    x.on_clock()
    assert x.deliveries() == [] and x.faults.exercise_next  # an OTM option stays held
    x.place_order(lmt(put, Action.SELL, 1, x.quote(put).bid, "short"))
    x.place_order(lmt(call, Action.BUY, 1, x.quote(call).ask, "long"))
    clock.advance(timedelta(minutes=1))
    x.on_clock()
    assigned, exercised = x.deliveries()
    assert (assigned.kind, assigned.option.con_id) == (DeliveryKind.ASSIGNED, put.con_id)
    assert exercised.option.con_id == call.con_id and exercised.at_expiry
    assert exercised.kind is DeliveryKind.EXERCISED and exercised.shares == 100
    assert not (x.faults.assign_next or x.faults.exercise_next)
    held = {p.contract.con_id: p.contract.sec_type for p in x.positions()}
    assert held.pop(far.con_id) is SecType.OPT
    assert set(held.values()) == {SecType.STK}
