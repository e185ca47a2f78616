"""The run guard, fed from Prefect's runtime: stale scheduled runs and closed markets."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect.runtime import flow_run

from core.calendar import MarketCalendar
from core.run_guard import Session, Skip, check_run
from core.runtime import current_runtime


def scheduled_start() -> datetime | None:
    """When the scheduler meant this run to start (None outside a flow run)."""
    value = flow_run.scheduled_start_time
    if value is None:
        return None
    return datetime.fromisoformat(str(value)).astimezone(UTC)


def should_skip(session: Session) -> Skip | None:
    """Check staleness against the wall clock and the session against the market clock
    (the runtime's clock: simulated in the demo and in backtests)."""
    rt = current_runtime()
    return check_run(
        wall_now=datetime.now(UTC),
        market_now=rt.clock.now(),
        scheduled_start=scheduled_start(),
        stale_after_s=rt.settings.schedules.stale_run_after_s,
        session=session,
        calendar=MarketCalendar(rt.settings.schedules),
    )
