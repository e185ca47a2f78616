"""Expiries and sessions come from the real XNYS calendar."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from core.sim.calendar import (
    MarketCalendar,
    futures_local_symbol,
    option_local_symbol,
)


@pytest.fixture(scope="module")
def cal() -> MarketCalendar:
    return MarketCalendar()


def test_good_friday_weekly_moves_to_thursday(cal: MarketCalendar) -> None:
    assert not cal.is_session(date(2026, 4, 3))
    assert cal.weekly_expiry(date(2026, 3, 30)) == date(2026, 4, 2)
    weeks = cal.weekly_expiries(date(2026, 3, 30), 3)
    assert weeks == [date(2026, 4, 2), date(2026, 4, 10), date(2026, 4, 17)]


def test_monthlies_are_third_fridays_or_the_thursday_before_a_holiday(cal: MarketCalendar) -> None:
    months = cal.monthly_expiries(date(2026, 3, 1), 4)
    # June 19 2026 is Juneteenth (closed): the June monthly moves to Thursday the 18th
    assert months == [date(2026, 3, 20), date(2026, 4, 17), date(2026, 5, 15), date(2026, 6, 18)]
    # 2025: the third Friday of April was Good Friday
    assert cal.third_friday_expiry(2025, 4) == date(2025, 4, 17)
    assert all(d.weekday() in (3, 4) for d in cal.monthly_expiries(date(2026, 1, 1), 24))


def test_quarterly_futures_expiries_and_local_symbols(cal: MarketCalendar) -> None:
    q = cal.quarterly_expiries(date(2026, 3, 21), 4)
    assert q == [date(2026, 6, 18), date(2026, 9, 18), date(2026, 12, 18), date(2027, 3, 19)]
    assert [futures_local_symbol("ES", d) for d in q] == ["ESM6", "ESU6", "ESZ6", "ESH7"]
    assert option_local_symbol("SPY", date(2026, 4, 17), "P", 500.0) == "SPY   260417P00500000"


def test_sessions_hours_and_early_close(cal: MarketCalendar) -> None:
    # regular day in EDT: 13:30-20:00 UTC; Globex 22:00 (prev day) - 21:00 UTC
    assert cal.rth_open(date(2026, 4, 6)) == datetime(2026, 4, 6, 13, 30, tzinfo=UTC)
    assert cal.rth_close(date(2026, 4, 6)) == datetime(2026, 4, 6, 20, 0, tzinfo=UTC)
    assert cal.futures_open(date(2026, 4, 6)) == datetime(2026, 4, 5, 22, 0, tzinfo=UTC)
    assert cal.futures_close(date(2026, 4, 6)) == datetime(2026, 4, 6, 21, 0, tzinfo=UTC)
    # day after Thanksgiving closes at 13:00 ET; Globex 15 minutes later
    assert cal.rth_close(date(2026, 11, 27)) == datetime(2026, 11, 27, 18, 0, tzinfo=UTC)
    assert cal.futures_close(date(2026, 11, 27)) == datetime(2026, 11, 27, 18, 15, tzinfo=UTC)
    # after Thursday's close before Good Friday the trading day is Monday
    assert cal.trading_day(datetime(2026, 4, 2, 20, 30, tzinfo=UTC)) == date(2026, 4, 6)


def test_bad_inputs_are_named(cal: MarketCalendar) -> None:
    with pytest.raises(ValueError, match="not an XNYS trading session"):
        cal.index(date(2026, 4, 3))
    with pytest.raises(ValueError, match="outside the simulator calendar"):
        cal.is_session(date(1999, 1, 4))
    with pytest.raises(ValueError, match="tz-aware"):
        cal.trading_day(datetime(2026, 4, 2, 12, 0))
