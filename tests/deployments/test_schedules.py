"""Schedules produce the intended run times in market time (checked with Prefect's own
server-side schedule evaluation, so the cron semantics are the ones the scheduler uses)."""

from __future__ import annotations

import asyncio
from datetime import datetime, time

from prefect.server.schemas.schedules import CronSchedule

from core.config import ScheduleSettings
from core.domain.timezones import MARKET_TZ
from deployments.schedules import Cadence, schedules_for


def run_times(cadence: Cadence, start: datetime, end: datetime, **cfg: object) -> list[datetime]:
    out: list[datetime] = []
    for sched in schedules_for(cadence, ScheduleSettings(**cfg)):  # type: ignore[arg-type]
        server = CronSchedule(cron=sched.cron, timezone=sched.timezone)  # type: ignore[arg-type]
        dates = asyncio.run(server.get_dates(n=20000, start=start, end=end))
        out.extend(d.astimezone(MARKET_TZ) for d in dates)
    return sorted(out)


def test_trading_cycle_every_5_minutes_0930_to_1555_on_weekdays() -> None:
    monday = datetime(2026, 3, 2, 0, 0, tzinfo=MARKET_TZ)
    times = run_times(Cadence.REGULAR_HOURS_TRADING, monday, monday.replace(day=8))
    per_day = {d.date() for d in times}
    assert len(per_day) == 5  # Mon..Fri, nothing at the weekend
    one_day = [t for t in times if t.date() == monday.date()]
    assert one_day[0].time() == time(9, 30) and one_day[-1].time() == time(15, 55)
    assert len(one_day) == 78
    assert all(t.minute % 5 == 0 for t in one_day)


def test_schedule_follows_new_york_across_dst() -> None:
    # US DST starts 2026-03-08: the first run stays at 09:30 New York time.
    times = run_times(
        Cadence.REGULAR_HOURS_RECONCILE,
        datetime(2026, 3, 6, tzinfo=MARKET_TZ),
        datetime(2026, 3, 11, tzinfo=MARKET_TZ),
    )
    firsts = sorted({min(t for t in times if t.date() == d) for d in {t.date() for t in times}})
    assert [f.time() for f in firsts] == [time(9, 30)] * 3
    assert {f.utcoffset().total_seconds() / 3600 for f in firsts} == {-5.0, -4.0}  # type: ignore[union-attr]


def test_futures_collection_covers_globex_week() -> None:
    sunday = run_times(
        Cadence.FUTURES_SESSION,
        datetime(2026, 3, 1, 12, tzinfo=MARKET_TZ),
        datetime(2026, 3, 1, 20, tzinfo=MARKET_TZ),
    )
    assert sunday[0] == datetime(2026, 3, 1, 18, 0, tzinfo=MARKET_TZ)  # opens Sunday 18:00
    assert len(sunday) == 121  # every minute, 18:00 through 20:00 inclusive
    friday = run_times(
        Cadence.FUTURES_SESSION,
        datetime(2026, 3, 6, 15, tzinfo=MARKET_TZ),
        datetime(2026, 3, 7, 23, tzinfo=MARKET_TZ),
    )
    assert friday[-1] == datetime(2026, 3, 6, 16, 59, tzinfo=MARKET_TZ)  # last run Friday 16:59
    assert not [t for t in friday if t.weekday() == 5]  # nothing on Saturday


def test_nightly_jobs_and_ad_hoc() -> None:
    start = datetime(2026, 3, 2, tzinfo=MARKET_TZ)
    maint = run_times(Cadence.NIGHTLY_MAINTENANCE, start, datetime(2026, 3, 9, tzinfo=MARKET_TZ))
    assert len(maint) == 7 and {t.time() for t in maint} == {time(17, 15)}
    nightly = run_times(Cadence.NIGHTLY_ANALYSIS, start, datetime(2026, 3, 9, tzinfo=MARKET_TZ))
    assert len(nightly) == 5 and {t.time() for t in nightly} == {time(18, 30)}
    assert schedules_for(Cadence.AD_HOC, ScheduleSettings()) == []
