from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.calendar import MarketCalendar
from core.config import ScheduleSettings
from core.run_guard import Session, check_run

OPEN = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)  # Monday 10:00 ET
THANKSGIVING = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def cal() -> MarketCalendar:
    return MarketCalendar(ScheduleSettings())


def guard(cal: MarketCalendar, *, now: datetime, scheduled: datetime | None, session: Session):
    return check_run(
        wall_now=now,
        market_now=now,
        scheduled_start=scheduled,
        stale_after_s=120,
        session=session,
        calendar=cal,
    )


def test_on_time_run_in_session_proceeds(cal: MarketCalendar) -> None:
    on_time = OPEN - timedelta(seconds=119)
    assert guard(cal, now=OPEN, scheduled=on_time, session=Session.REGULAR) is None


def test_late_run_is_stale(cal: MarketCalendar) -> None:
    skip = guard(cal, now=OPEN, scheduled=OPEN - timedelta(seconds=121), session=Session.REGULAR)
    assert skip is not None and skip.name == "Stale"
    assert "121s late (limit 120s)" in skip.message


def test_holiday_is_market_closed_for_trading_but_not_for_nightly(cal: MarketCalendar) -> None:
    skip = guard(cal, now=THANKSGIVING, scheduled=None, session=Session.REGULAR)
    assert skip is not None and skip.name == "MarketClosed"
    assert guard(cal, now=THANKSGIVING, scheduled=None, session=Session.ANY) is None


def test_futures_session(cal: MarketCalendar) -> None:
    saturday = datetime(2026, 3, 7, 15, 0, tzinfo=UTC)
    assert guard(cal, now=saturday, scheduled=None, session=Session.FUTURES) is not None
    assert guard(cal, now=OPEN, scheduled=None, session=Session.FUTURES) is None
