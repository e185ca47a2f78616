"""core.broker.ib.convert: the pure mapping rules between ib_async and V6 (no socket needed)."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

import pytest
from ib_async import AccountValue, BarData, Ticker
from ib_async.objects import OptionComputation

from core.broker import ErrorClass
from core.broker.ib import convert as cv
from core.domain import ComboLeg, Contract
from core.domain.accounts import mask_account

pytestmark = pytest.mark.gateway

OPT = Contract.option("SPY", date(2026, 4, 17), 500.0, "P").with_con_id(
    1234, local_symbol="SPY   260417P00500000", trading_class="SPY"
)


@pytest.mark.parametrize(
    ("codes", "kind"),
    [
        ((1100, 1300, 502, 504), ErrorClass.CONNECTIVITY),
        ((201, 202, 103, 110, 10147), ErrorClass.REJECTION),
        ((200, 354, 162, 420, 10197), ErrorClass.DATA),
        ((101,), ErrorClass.CAPACITY),
        ((2100, 2104, 2106, 2158, 2199, 1101, 1102, 10167), ErrorClass.WARNING),
        ((99999,), ErrorClass.DATA),
    ],
)
def test_error_classes(codes: tuple[int, ...], kind: ErrorClass) -> None:
    assert {cv.classify_error(c) for c in codes} == {kind}


def test_contracts_round_trip() -> None:
    fut = Contract.future("ES", date(2026, 3, 20), 50).with_con_id(
        600_000_123, local_symbol="ESH6", trading_class="ES"
    )
    stock = Contract.stock("SPY").with_con_id(756733, local_symbol="SPY", trading_class="SPY")
    for c in (OPT, fut, stock):
        assert cv.from_ib_contract(cv.to_ib_contract(c)) == c
    bag = Contract.combo("SPY", [ComboLeg(1234, 1, "SELL"), ComboLeg(1235, 2, "BUY")])
    ib_bag = cv.to_ib_contract(bag)
    assert ib_bag.secType == "BAG" and [leg.ratio for leg in ib_bag.comboLegs] == [1, 2]
    assert cv.from_ib_contract(ib_bag) == bag


def test_quote_turns_every_ib_unknown_into_nan() -> None:
    t = Ticker(contract=cv.to_ib_contract(OPT))
    t.bid, t.bidSize, t.ask, t.askSize, t.last = -1.0, 0.0, 3.3, 12.0, math.nan
    t.volume = math.nan
    # what ib_async keeps for IB's sentinels: None for iv/delta/gamma/undPrice, but the
    # raw -2 for vega and theta
    t.modelGreeks = OptionComputation(0, None, None, 3.25, 0.0, None, -2.0, -2.0, None)
    now = datetime(2026, 3, 2, 15, 30, tzinfo=UTC)
    q = cv.quote_from_ticker(t, OPT, now)
    assert math.isnan(q.bid) and q.bid_size == 0 and q.ask == 3.3 and q.ask_size == 12
    assert all(math.isnan(x) for x in (q.iv, q.delta, q.gamma, q.vega, q.theta, q.last))
    assert math.isnan(q.underlying_price) and q.volume == 0 and not q.has_greeks
    t.modelGreeks = OptionComputation(0, 0.2, -0.3, 3.25, 0.0, 0.01, 0.5, -0.1, 681.0)
    t.marketDataType = 4
    q = cv.quote_from_ticker(t, OPT, now)
    assert q.has_greeks and q.delta == -0.3 and q.underlying_price == 681.0 and q.stale
    assert math.isnan(cv.clean(1.7976931348623157e308)) and math.isnan(cv.clean(None))


def test_bars_durations_and_filter_times() -> None:
    bar = BarData(
        date=datetime(2026, 3, 2, 15, tzinfo=UTC),
        open=1,
        high=2,
        low=0.5,
        close=1.5,
        volume=100.0,
        average=1.2,
        barCount=3,
    )
    b = cv.bar_from_ib(bar)
    assert (b.time, b.volume, b.wap, b.count) == (datetime(2026, 3, 2, 15, tzinfo=UTC), 100, 1.2, 3)
    daily = cv.bar_from_ib(BarData(date=date(2026, 3, 2), close=1.0))
    assert daily.time == datetime(2026, 3, 2, tzinfo=UTC)
    assert cv.duration_str(timedelta(minutes=30)) == "1800 S"
    assert cv.duration_str(timedelta(days=1)) == "86400 S"
    assert cv.duration_str(timedelta(days=3, seconds=1)) == "4 D"
    with pytest.raises(ValueError, match="positive"):
        cv.duration_str(timedelta(0))
    assert cv.ib_filter_time(datetime(2026, 3, 2, 15, 4, 5, 999, tzinfo=UTC)) == "20260302-15:04:05"
    with pytest.raises(ValueError, match="tz-aware"):
        cv.ib_filter_time(datetime(2026, 3, 2))


def test_account_summary_missing_money_is_nan() -> None:
    values = [
        AccountValue("DU1", "NetLiquidation", "100.5", "USD", ""),
        AccountValue("DU1", "BuyingPower", "90", "USD", ""),
        AccountValue("DU2", "AvailableFunds", "1", "USD", ""),
    ]
    s = cv.account_summary_from_values("DU1", values)
    assert (s.net_liquidation, s.buying_power) == (100.5, 90.0)
    assert math.isnan(s.available_funds) and math.isnan(s.maintenance_margin)
    assert mask_account("DU1234567") == "******567"


@pytest.mark.parametrize(
    ("reported", "quantity"),
    [
        (3.0, 3),
        (-2.0, -2),
        (1e15, 10**15),
        (1e20, cv.UNREPRESENTABLE_QUANTITY),
        (-math.inf, -cv.UNREPRESENTABLE_QUANTITY),
        (math.nan, cv.UNREPRESENTABLE_QUANTITY),
    ],
)
def test_a_quantity_no_int64_holds_stays_absurd(reported: float, quantity: int) -> None:
    """Never a plausible number (or 0) for a report V6 cannot represent: reconciliation's
    sanity bounds must see it and refuse it."""
    assert cv.reported_quantity(reported) == quantity
