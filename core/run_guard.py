"""Should this flow run act at all? Decided before it touches the broker.

Two reasons to stand down: the run is stale (after downtime `serve` starts the whole
backlog of late runs, and a trading flow must not act on an old schedule), or the
market it works on is closed (holidays and half days come from the exchange calendar,
not from the cron window that scheduled the run).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from core.calendar import MarketCalendar


class Session(StrEnum):
    REGULAR = "regular"  # equity options hours
    FUTURES = "futures"  # CME Globex session
    ANY = "any"  # nightly jobs: no session needed


@dataclass(frozen=True)
class Skip:
    """Why a run stood down; `name` becomes the run's final state name."""

    name: str
    message: str


def check_run(
    *,
    wall_now: datetime,
    market_now: datetime,
    scheduled_start: datetime | None,
    stale_after_s: float,
    session: Session,
    calendar: MarketCalendar,
) -> Skip | None:
    """None when the run should proceed, else the reason it should not."""
    if scheduled_start is not None:
        lateness = (wall_now - scheduled_start).total_seconds()
        if lateness > stale_after_s:
            return Skip(
                "Stale",
                f"scheduled for {scheduled_start.isoformat()}, started {lateness:.0f}s late "
                f"(limit {stale_after_s:.0f}s): skipped so a backlog cannot act on old schedules",
            )
    if session is Session.REGULAR and not calendar.is_regular_open(market_now):
        return Skip("MarketClosed", f"equity market closed at {market_now.isoformat()}")
    if session is Session.FUTURES and not calendar.is_futures_open(market_now):
        return Skip("MarketClosed", f"futures session closed at {market_now.isoformat()}")
    return None
