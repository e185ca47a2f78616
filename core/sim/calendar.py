"""The exchange calendar the simulator runs on: XNYS sessions, Globex hours, expiry dates.

Real dates matter because the trading system keys everything on them: a weekly that
moves to Thursday on Good Friday, a half-day close after Thanksgiving, a futures roll on
the third Friday. The simulator therefore takes its sessions from `exchange_calendars`
(XNYS) instead of inventing weekdays, and derives every expiry from those sessions.

Futures hours are modelled as CME Globex equity-index hours: the session for trading day
D opens at 18:00 America/New_York on the calendar day before D and closes at 17:00 on D
(23 hours); on an early-close day it closes 15 minutes after the equity close. Futures
trade on the same trading days as XNYS (a simplification: CME's holiday sessions are
folded into the nearest XNYS day).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Final

import exchange_calendars as xc
import numpy as np
from numpy.typing import NDArray

from core.domain.timezones import MARKET_TZ

FIRST_DAY: Final = date(2005, 1, 1)
LAST_DAY: Final = date(2040, 12, 31)
QUARTER_MONTHS: Final = (3, 6, 9, 12)
MONTH_CODES: Final = "FGHJKMNQUVXZ"  # CME month letters, January..December

IntArray = NDArray[np.int64]


def to_epoch(ts: datetime) -> int:
    """Whole seconds since 1970 for a tz-aware datetime (naive input is a bug upstream)."""
    if ts.tzinfo is None:
        raise ValueError(f"time must be tz-aware (UTC), got naive {ts!r}; use datetime.now(UTC)")
    return int(ts.timestamp())


def from_epoch(seconds: int) -> datetime:
    return datetime.fromtimestamp(int(seconds), UTC)


@functools.lru_cache(maxsize=1)
def _xnys() -> xc.ExchangeCalendar:
    return xc.get_calendar("XNYS", start=FIRST_DAY.isoformat(), end=LAST_DAY.isoformat())


@dataclass(frozen=True, slots=True)
class SessionTable:
    """All XNYS sessions with their hours as epoch seconds, for vectorised look-ups."""

    days: tuple[date, ...]
    ordinals: IntArray  # date.toordinal() of each session
    rth_open: IntArray
    rth_close: IntArray
    fut_open: IntArray
    fut_close: IntArray

    def __len__(self) -> int:
        return len(self.days)


@functools.lru_cache(maxsize=1)
def session_table() -> SessionTable:
    """Built once per process (~0.1 s): every later question is a numpy search."""
    sched = _xnys().schedule
    days = tuple(ts.date() for ts in sched.index)
    rth_open = (sched["open"].astype("int64").to_numpy() // 1_000_000_000).astype(np.int64)
    rth_close = (sched["close"].astype("int64").to_numpy() // 1_000_000_000).astype(np.int64)
    fut_open = np.empty(len(days), dtype=np.int64)
    fut_close = np.empty(len(days), dtype=np.int64)
    for i, d in enumerate(days):
        fut_open[i] = to_epoch(datetime.combine(d - timedelta(days=1), time(18, 0), MARKET_TZ))
        regular_close = to_epoch(datetime.combine(d, time(16, 0), MARKET_TZ))
        if rth_close[i] < regular_close:  # early close: Globex halts 15 minutes later
            fut_close[i] = rth_close[i] + 15 * 60
        else:
            fut_close[i] = to_epoch(datetime.combine(d, time(17, 0), MARKET_TZ))
    ordinals = np.fromiter((d.toordinal() for d in days), dtype=np.int64, count=len(days))
    return SessionTable(days, ordinals, rth_open, rth_close, fut_open, fut_close)


class MarketCalendar:
    """Session and expiry questions, answered from the XNYS calendar."""

    def __init__(self) -> None:
        self.table = session_table()
        self._weekly_cache: dict[int, date | None] = {}

    # -- sessions --------------------------------------------------------------------
    def index(self, day: date) -> int:
        """Position of `day` in the session table; ValueError if it is not a session."""
        i = int(np.searchsorted(self.table.ordinals, day.toordinal()))
        if i >= len(self.table) or self.table.days[i] != day:
            raise ValueError(
                f"{day} is not an XNYS trading session (weekend or holiday); "
                "pick a trading day or use next_session()"
            )
        return i

    def _check_range(self, day: date) -> None:
        if not FIRST_DAY <= day <= LAST_DAY:
            raise ValueError(
                f"date {day} is outside the simulator calendar {FIRST_DAY}..{LAST_DAY}"
            )

    def is_session(self, day: date) -> bool:
        self._check_range(day)
        i = int(np.searchsorted(self.table.ordinals, day.toordinal()))
        return i < len(self.table) and self.table.days[i] == day

    def next_session(self, day: date) -> date:
        """The first session on or after `day`."""
        self._check_range(day)
        i = int(np.searchsorted(self.table.ordinals, day.toordinal()))
        return self.table.days[i]

    def previous_session(self, day: date) -> date:
        """The last session strictly before `day`."""
        self._check_range(day)
        i = int(np.searchsorted(self.table.ordinals, day.toordinal())) - 1
        if i < 0:
            raise ValueError(f"no session before {day} in the simulator calendar")
        return self.table.days[i]

    def sessions(self, start: date, end: date) -> list[date]:
        """Sessions in [start, end], inclusive."""
        lo = int(np.searchsorted(self.table.ordinals, start.toordinal()))
        hi = int(np.searchsorted(self.table.ordinals, end.toordinal(), side="right"))
        return list(self.table.days[lo:hi])

    def rth_open(self, day: date) -> datetime:
        return from_epoch(int(self.table.rth_open[self.index(day)]))

    def rth_close(self, day: date) -> datetime:
        return from_epoch(int(self.table.rth_close[self.index(day)]))

    def futures_open(self, day: date) -> datetime:
        return from_epoch(int(self.table.fut_open[self.index(day)]))

    def futures_close(self, day: date) -> datetime:
        return from_epoch(int(self.table.fut_close[self.index(day)]))

    def trading_day(self, at: datetime) -> date:
        """The session whose regular close is the next one at or after `at`.

        After Friday's close this is Monday: it is the day whose expiries and listings a
        trader sees on the screen at `at`.
        """
        i = int(np.searchsorted(self.table.rth_close, to_epoch(at), side="left"))
        return self.table.days[min(i, len(self.table) - 1)]

    # -- expiries --------------------------------------------------------------------
    def weekly_expiry(self, day: date) -> date | None:
        """Expiry of the week containing `day`: its Friday, or the last session before it
        when Friday is a holiday (Good Friday 2026-04-03 -> Thursday 2026-04-02)."""
        monday = day - timedelta(days=day.weekday())
        key = monday.toordinal()
        if key not in self._weekly_cache:
            friday = monday + timedelta(days=4)
            found: date | None = None
            for offset in range(5):
                cand = friday - timedelta(days=offset)
                if self.is_session(cand):
                    found = cand
                    break
            self._weekly_cache[key] = found
        return self._weekly_cache[key]

    def weekly_expiries(self, start: date, count: int) -> list[date]:
        """The next `count` weekly expiries on or after `start`."""
        out: list[date] = []
        monday = start - timedelta(days=start.weekday())
        while len(out) < count:
            exp = self.weekly_expiry(monday)
            if exp is not None and exp >= start:
                out.append(exp)
            monday += timedelta(days=7)
        return out

    def third_friday_expiry(self, year: int, month: int) -> date:
        """Third Friday of the month, or the session before it when it is a holiday."""
        first = date(year, month, 1)
        friday = first + timedelta(days=(4 - first.weekday()) % 7 + 14)
        exp = self.weekly_expiry(friday)
        if exp is None:  # a whole week of holidays never happens on XNYS; be explicit
            raise ValueError(f"no session in the week of {friday}")
        return exp

    def monthly_expiries(self, start: date, count: int) -> list[date]:
        """The next `count` monthly (third-Friday) option expiries on or after `start`."""
        out: list[date] = []
        y, m = start.year, start.month
        while len(out) < count:
            exp = self.third_friday_expiry(y, m)
            if exp >= start:
                out.append(exp)
            y, m = (y + 1, 1) if m == 12 else (y, m + 1)
        return out

    def quarterly_expiries(self, start: date, count: int) -> list[date]:
        """The next `count` quarterly (H/M/U/Z) futures expiries on or after `start`."""
        out: list[date] = []
        y, m = start.year, start.month
        while len(out) < count:
            if m in QUARTER_MONTHS:
                exp = self.third_friday_expiry(y, m)
                if exp >= start:
                    out.append(exp)
            y, m = (y + 1, 1) if m == 12 else (y, m + 1)
        return out


def futures_local_symbol(symbol: str, expiry: date) -> str:
    """IB-style local symbol, e.g. ESM6 for the June 2026 E-mini S&P."""
    return f"{symbol}{MONTH_CODES[expiry.month - 1]}{expiry.year % 10}"


def option_local_symbol(symbol: str, expiry: date, right: str, strike: float) -> str:
    """OCC symbology as IB shows it: root padded to 6, yymmdd, C/P, strike x1000 in 8."""
    return f"{symbol:<6}{expiry:%y%m%d}{right}{round(strike * 1000):08d}"
