"""A calm simulated market at a known session, shared by the simulator tests."""

from __future__ import annotations

from datetime import UTC, datetime

from core.clock import SimClock
from core.sim import MarketSimulator, RegimeSchedule

# Monday 2026-03-02, 09:31 ET (EST, UTC-5): one minute after the regular open
OPEN = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)


def make_market(
    clock: SimClock, *, regime: str | None = "calm", history: int = 3, **kw: object
) -> MarketSimulator:
    schedule = kw.pop("regimes", None) or (
        RegimeSchedule.fixed(regime) if regime else RegimeSchedule(seed=7)
    )
    return MarketSimulator(clock, history_sessions=history, regimes=schedule, **kw)  # type: ignore[arg-type]
