"""The sticky halt (`v6 halt`): a person's stop that no cool-down, probe, cycle, trip or
restart lifts; only a person's reset does. Exits run unless the halt said no."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.config import BreakerSettings
from core.risk.breaker import (
    Breaker,
    BreakerState,
    CycleHealth,
    GateMode,
    IllegalTransition,
    OutcomeType,
    run_outcome,
)
from core.store import DeltaStore

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
SETTINGS = BreakerSettings(cooldown_minutes=30, probe_timeout_minutes=15, reducing_mode=False)
BAD = CycleHealth(ok=False, failure="quote timeout")
OK = CycleHealth(ok=True, daily_pnl=0.0, net_liq=100_000.0)


def make(root: Path) -> Breaker:
    """A new Breaker each call: nothing but the store carries the state (a restart)."""
    return Breaker(DeltaStore(root), SETTINGS)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_halt_survives_cooldowns_cycles_and_restarts(store_root: Path) -> None:
    t = make(store_root).halt("broker outage", "alice", now=T0, run_by="cli alice@host")
    assert (t.from_state, t.to_state, t.trigger) == (
        BreakerState.CLOSED, BreakerState.HALTED, "manual_halt",
    )  # fmt: skip
    assert t.metrics["exits_allowed"] is True and t.run_by == "cli alice@host"
    for minutes in (31, 60 * 24, 60 * 24 * 30):  # far past every cool-down and probe timeout
        b = make(store_root)
        gate = b.gate(at(minutes), run_id=f"cycle-{minutes}")
        assert gate.state is BreakerState.HALTED and gate.transition is None
        assert gate.mode is GateMode.EXITS_ONLY and not gate.entries_allowed
        assert "broker outage" in gate.reason and "v6 breaker reset" in gate.reason
        # a healthy cycle is recorded but never closes a halt; a failing one never re-trips it
        assert b.record_cycle(OK, run_id=f"cycle-{minutes}", now=at(minutes)) is None
        assert b.record_cycle(BAD, run_id=f"bad-{minutes}", now=at(minutes + 1)) is None
        assert b.state() is BreakerState.HALTED
    assert [r.to_state for r in make(store_root).status().transitions] == [BreakerState.HALTED]


def test_only_a_reset_lifts_a_halt(store_root: Path) -> None:
    b = make(store_root)
    b.halt("manual stop", "alice", now=T0)
    with pytest.raises(IllegalTransition, match="halted: a trip would let the cool-down"):
        b.trip("downgrade attempt", "bob", now=at(1))
    assert b.state() is BreakerState.HALTED
    t = make(store_root).reset("checked everything", "alice", now=at(2))
    assert (t.from_state, t.to_state) == (BreakerState.HALTED, BreakerState.CLOSED)
    assert make(store_root).gate(at(3)).mode is GateMode.NORMAL


def test_halt_without_exits_touches_nothing(store_root: Path) -> None:
    b = make(store_root)
    b.halt("stop everything", "alice", exits=False, now=T0)
    gate = b.gate(at(500), run_id="cycle-1")
    assert gate.mode is GateMode.OPEN_BLOCKED and not gate.broker_allowed
    assert "nothing trades" in gate.reason
    assert run_outcome(gate).type is OutcomeType.CANCELLED
    # halting again changes what the halt allows (recorded as a second halt)
    b.halt("exits may run again", "alice", exits=True, now=at(501))
    assert b.gate(at(502)).mode is GateMode.EXITS_ONLY


@pytest.mark.parametrize("state", ["OPEN", "HALF_OPEN"])
def test_halt_overrides_an_auto_closing_trip(store_root: Path, state: str) -> None:
    b = make(store_root)
    b.trip("ordinary trip", "bob", now=T0)
    if state == "HALF_OPEN":
        assert b.gate(at(31), run_id="probe").mode is GateMode.HALF_OPEN_PROBE
    t = b.halt("make it stick", "alice", now=at(32))
    assert t.from_state.value == state and t.to_state is BreakerState.HALTED
    assert b.record_cycle(OK, run_id="probe", now=at(33)) is None  # the probe cannot close it
    assert make(store_root).gate(at(120), run_id="later").state is BreakerState.HALTED


def test_halt_needs_a_reason_and_an_actor(store_root: Path) -> None:
    b = make(store_root)
    with pytest.raises(ValueError, match="manual_halt: a reason is required"):
        b.halt("  ", "alice", now=T0)
    with pytest.raises(ValueError, match="manual_halt: actor is required"):
        b.halt("why", "", now=T0)
    assert b.state() is BreakerState.CLOSED
