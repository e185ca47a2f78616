from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from core.calendar import MarketCalendar
from core.config import ScheduleSettings


@pytest.fixture(scope="module")
def cal() -> MarketCalendar:
    return MarketCalendar(ScheduleSettings())


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_regular_hours_edges(cal: MarketCalendar) -> None:
    assert not cal.is_regular_open(utc(2026, 3, 2, 14, 29))  # 09:29 ET
    assert cal.is_regular_open(utc(2026, 3, 2, 14, 30))  # 09:30 ET
    assert cal.is_regular_open(utc(2026, 3, 2, 20, 59))  # 15:59 ET
    assert not cal.is_regular_open(utc(2026, 3, 2, 21, 0))  # 16:00 ET


def test_holiday_and_half_day(cal: MarketCalendar) -> None:
    assert not cal.is_trading_day(date(2026, 11, 26))  # Thanksgiving
    assert not cal.is_regular_open(utc(2026, 11, 26, 15, 0))
    _, close = cal.session_bounds(date(2026, 11, 27))  # day after: 13:00 ET close
    assert close == utc(2026, 11, 27, 18, 0)
    assert cal.is_regular_open(utc(2026, 11, 27, 17, 59))
    assert not cal.is_regular_open(utc(2026, 11, 27, 18, 30))
    with pytest.raises(ValueError, match="not an equity trading day"):
        cal.session_bounds(date(2026, 11, 26))


def test_futures_trade_overnight_but_not_saturday(cal: MarketCalendar) -> None:
    assert cal.is_futures_open(utc(2026, 3, 3, 3, 0))  # 22:00 ET Monday night
    assert not cal.is_futures_open(utc(2026, 3, 7, 15, 0))  # Saturday


def test_trading_days_skip_weekends_and_holidays(cal: MarketCalendar) -> None:
    days = cal.trading_days(date(2026, 4, 2), 3)  # Good Friday 2026-04-03
    assert days == [date(2026, 4, 2), date(2026, 4, 6), date(2026, 4, 7)]


def test_sessions_before_skip_holidays_and_exclude_the_day(cal: MarketCalendar) -> None:
    assert cal.sessions_before(date(2026, 4, 7), 3) == [
        date(2026, 4, 1),
        date(2026, 4, 2),
        date(2026, 4, 6),
    ]  # Good Friday 2026-04-03 is not a session; 04-07 itself is excluded
    with pytest.raises(ValueError, match="count"):
        cal.sessions_before(date(2026, 4, 7), 0)


def test_previous_close(cal: MarketCalendar) -> None:
    assert cal.previous_close(utc(2026, 3, 3, 12, 0)) == utc(2026, 3, 2, 21, 0)


def test_naive_timestamp_refused(cal: MarketCalendar) -> None:
    with pytest.raises(ValueError, match="tz-aware"):
        cal.is_regular_open(datetime(2026, 3, 2, 15, 0))


def test_unknown_calendar_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown exchange calendar 'NOPE'"):
        MarketCalendar(ScheduleSettings(equity_calendar="NOPE"))
