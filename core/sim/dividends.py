"""Quarterly dividends of the simulated ETFs: what makes an early call assignment rational.

SPY, QQQ and IWM pay quarterly; the simulator puts every ex-date on the March, June,
September and December expiry session (SPY's real schedule: the third Friday) and sizes the
dividend as a quarter of the profile's yield on the price. Prices do not drop on the
ex-date: the dividend only drives the early-assignment model.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Final

from core.sim.calendar import MarketCalendar

EX_DIVIDEND_MONTHS: Final = (3, 6, 9, 12)


@dataclass(frozen=True, slots=True)
class Dividend:
    ex_date: date
    amount: float  # per share


def next_ex_date(calendar: MarketCalendar, after: date) -> date:
    """The first ex-dividend session strictly after `after`."""
    for year in (after.year, after.year + 1):
        for month in EX_DIVIDEND_MONTHS:
            ex = calendar.third_friday_expiry(year, month)
            if ex > after:
                return ex
    raise AssertionError(f"no ex-dividend date within a year of {after}")  # pragma: no cover


def next_dividend(
    calendar: MarketCalendar, after: date, price: float, annual_yield: float
) -> Dividend:
    """The next dividend after `after` for an underlying at `price` yielding `annual_yield`."""
    return Dividend(next_ex_date(calendar, after), round(price * annual_yield / 4, 4))
