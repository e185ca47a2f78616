"""Deployment schedules, in market time (America/New_York by default).

Cron windows are deliberately coarse (weekdays, session hours); the exact session,
holidays and half days are enforced at run time by the run guard against the exchange
calendar, so a schedule never needs re-deploying when the calendar changes.
"""

from __future__ import annotations

from enum import StrEnum

from prefect.schedules import Cron, Schedule

from core.config import ScheduleSettings


class Cadence(StrEnum):
    FUTURES_SESSION = "futures_session"
    REGULAR_HOURS_RECONCILE = "regular_hours_reconcile"
    REGULAR_HOURS_TRADING = "regular_hours_trading"
    NIGHTLY_MAINTENANCE = "nightly_maintenance"
    NIGHTLY_ANALYSIS = "nightly_analysis"
    AD_HOC = "ad_hoc"


def _every(minutes: int) -> str:
    return "*" if minutes == 1 else f"*/{minutes}"


def regular_hours(minutes: int, tz: str) -> list[Schedule]:
    """Every `minutes` from 09:30 to 15:55 ET on weekdays (two crons: the 9 o'clock hour
    starts at :30)."""
    first = f"30-59/{minutes}" if minutes > 1 else "30-59"
    return [
        Cron(f"{first} 9 * * 1-5", timezone=tz),
        Cron(f"{_every(minutes)} 10-15 * * 1-5", timezone=tz),
    ]


def futures_session(minutes: int, tz: str) -> list[Schedule]:
    """CME Globex: Sunday 18:00 ET to Friday 17:00 ET (the daily break is left to the guard)."""
    step = _every(minutes)
    return [
        Cron(f"{step} 18-23 * * 0-4", timezone=tz),
        Cron(f"{step} 0-16 * * 1-5", timezone=tz),
    ]


def daily_at(hour: int, minute: int, tz: str, weekdays_only: bool) -> list[Schedule]:
    days = "1-5" if weekdays_only else "*"
    return [Cron(f"{minute} {hour} * * {days}", timezone=tz)]


def schedules_for(cadence: Cadence, settings: ScheduleSettings) -> list[Schedule]:
    tz = settings.timezone
    match cadence:
        case Cadence.FUTURES_SESSION:
            return futures_session(settings.collection_every_min, tz)
        case Cadence.REGULAR_HOURS_RECONCILE:
            return regular_hours(settings.reconciliation_every_min, tz)
        case Cadence.REGULAR_HOURS_TRADING:
            return regular_hours(settings.trading_cycle_every_min, tz)
        case Cadence.NIGHTLY_MAINTENANCE:
            at = settings.maintenance_at
            return daily_at(at.hour, at.minute, tz, weekdays_only=False)
        case Cadence.NIGHTLY_ANALYSIS:
            at = settings.variance_analysis_at
            return daily_at(at.hour, at.minute, tz, weekdays_only=True)
        case Cadence.AD_HOC:
            return []
