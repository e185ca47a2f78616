"""Exchange sessions for contract dates, from `exchange_calendars` (never hand-written).

"Is the market open now" lives in `core.calendar`; this module answers the date
questions of futures contracts (does the settlement day trade?) over a range that
reaches decades ahead, since a contract's expiry can lie beyond a calendar's default
one-year horizon.
"""

from __future__ import annotations

from datetime import date
from functools import lru_cache

import exchange_calendars as xcals
import pandas as pd
from exchange_calendars import ExchangeCalendar

CALENDAR_START = "2005-01-01"
CALENDAR_END = "2040-12-31"


@lru_cache(maxsize=8)
def calendar(code: str) -> ExchangeCalendar:
    """The calendar for `code`, 2005-2040 (cached: building one takes ~0.1-0.2 s)."""
    try:
        return xcals.get_calendar(code, start=CALENDAR_START, end=CALENDAR_END)
    except xcals.errors.InvalidCalendarName:
        raise ValueError(
            f"unknown exchange calendar {code!r}; use an exchange_calendars code "
            "such as CMES (CME Globex) or XNYS (NYSE)"
        ) from None


def session_on_or_before(code: str, day: date) -> date:
    """`day` if exchange `code` trades on it, else its previous session (holidays)."""
    cal = calendar(code)
    ts = pd.Timestamp(day)
    if not CALENDAR_START <= day.isoformat() <= CALENDAR_END:
        raise ValueError(
            f"{day} is outside the supported calendar range {CALENDAR_START}..{CALENDAR_END}"
        )
    if cal.is_session(ts):
        return day
    return cal.date_to_session(ts, direction="previous").date()
