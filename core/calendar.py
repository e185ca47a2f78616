"""Market hours from the exchange calendars: the one authority for "is the market open".

Schedules are coarse weekday cron windows; this module decides, at run time, whether a
given minute is inside a real session (holidays and half days included), so a run
scheduled on Thanksgiving or after a 13:00 early close ends without touching the broker.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import exchange_calendars as xc
import pandas as pd

from core.config import ScheduleSettings

_FIRST_YEAR = 2018


@lru_cache(maxsize=8)
def _calendar(code: str) -> xc.ExchangeCalendar:
    try:
        return xc.get_calendar(code, start=f"{_FIRST_YEAR}-01-01")
    except xc.errors.InvalidCalendarName:
        raise ValueError(
            f"unknown exchange calendar {code!r}; use one of exchange_calendars' names, "
            "e.g. XNYS (NYSE regular hours) or CMES (CME Globex equity futures)"
        ) from None


class MarketCalendar:
    """Regular equity-option hours and the futures session, per the configured calendars."""

    def __init__(self, settings: ScheduleSettings) -> None:
        self.tz = ZoneInfo(settings.timezone)
        self.equity = _calendar(settings.equity_calendar)
        self.futures = _calendar(settings.futures_calendar)

    @staticmethod
    def _minute(ts: datetime) -> pd.Timestamp:
        if ts.tzinfo is None:
            raise ValueError(f"timestamp must be tz-aware, got {ts!r}")
        return pd.Timestamp(ts).tz_convert("UTC").floor("min")

    def is_regular_open(self, ts: datetime) -> bool:
        """True inside an equity session (09:30-16:00 ET, or the early close on half days)."""
        return bool(self.equity.is_open_on_minute(self._minute(ts)))

    def is_futures_open(self, ts: datetime) -> bool:
        return bool(self.futures.is_open_on_minute(self._minute(ts)))

    def is_trading_day(self, day: date) -> bool:
        return bool(self.equity.is_session(pd.Timestamp(day)))

    def session_bounds(self, day: date) -> tuple[datetime, datetime]:
        """Open and close (UTC) of the equity session on `day`; ValueError if none."""
        if not self.is_trading_day(day):
            raise ValueError(f"{day} is not an equity trading day ({self.equity.name})")
        session = pd.Timestamp(day)
        return (
            self.equity.session_open(session).to_pydatetime(),
            self.equity.session_close(session).to_pydatetime(),
        )

    def trading_days(self, start: date, count: int) -> list[date]:
        """`count` consecutive equity sessions starting on or after `start`."""
        sessions = self.equity.sessions_in_range(
            pd.Timestamp(start), pd.Timestamp(start) + pd.Timedelta(days=count * 2 + 10)
        )
        days = [s.date() for s in sessions[:count]]
        if len(days) < count:
            raise ValueError(f"calendar {self.equity.name} has fewer than {count} sessions")
        return days

    def sessions_before(self, day: date, count: int) -> list[date]:
        """The `count` equity sessions strictly before `day`, oldest first."""
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        sessions = self.equity.sessions_in_range(
            pd.Timestamp(day) - pd.Timedelta(days=count * 2 + 10), pd.Timestamp(day)
        )
        days = [s.date() for s in sessions if s.date() < day][-count:]
        if len(days) < count:
            raise ValueError(f"calendar {self.equity.name} has fewer than {count} sessions")
        return days

    def previous_close(self, ts: datetime) -> datetime:
        """The most recent equity close at or before `ts` (UTC)."""
        minute = self._minute(ts)
        day = minute.tz_convert(self.tz).date()
        for back in range(0, 15):
            candidate = day - timedelta(days=back)
            if self.is_trading_day(candidate):
                close = self.session_bounds(candidate)[1]
                if close <= ts:
                    return close
        raise ValueError(f"no equity close found in the 15 days before {ts}")
