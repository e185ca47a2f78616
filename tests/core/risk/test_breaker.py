"""Circuit breaker: trip conditions at their thresholds, gates, probe, manual actions,
durability across restarts, and failing closed when the state cannot be read."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from itertools import product
from pathlib import Path

import polars as pl
import pytest

from core.config import BreakerSettings, Settings
from core.risk.breaker import (
    MOVES,
    Breaker,
    BreakerEvent,
    BreakerState,
    BreakerUnavailable,
    CycleHealth,
    Gate,
    GateMode,
    IllegalTransition,
    Move,
    OutcomeType,
    Refusal,
    Transition,
    moves_markdown,
    next_move,
    run_outcome,
)
from core.store import DeltaStore

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
OK = CycleHealth(ok=True, daily_pnl=0.0, net_liq=100_000.0)
BAD = CycleHealth(ok=False, failure="quote timeout")
SETTINGS = BreakerSettings(
    consecutive_failures=3,
    daily_loss_pct=2.0,
    max_rejections_per_hour=5,
    max_disconnect_s=300.0,
    max_data_quality_failure_rate=0.5,
    cooldown_minutes=30,
    reducing_mode=True,
    probe_timeout_minutes=15,
)


def make(root: Path, **overrides: object) -> Breaker:
    return Breaker(DeltaStore(root), SETTINGS.model_copy(update=overrides))


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def feed(b: Breaker, healths: list[CycleHealth], start: float = 0.0, step: float = 5.0) -> list:
    return [
        b.record_cycle(h, run_id=f"run-{start + i * step:g}", now=at(start + i * step))
        for i, h in enumerate(healths)
    ]


def trip_open(b: Breaker) -> Transition:
    out = feed(b, [BAD, BAD, BAD])
    assert out[:2] == [None, None]
    assert out[2] is not None and out[2].to_state is BreakerState.OPEN
    return out[2]


# -- closed ---------------------------------------------------------------------------------


def test_fresh_breaker_is_closed_and_allows_everything(store_root: Path) -> None:
    gate = make(store_root).gate(T0)
    assert gate.mode is GateMode.NORMAL and gate.state is BreakerState.CLOSED
    assert gate.entries_allowed and gate.exits_allowed and gate.broker_allowed
    assert run_outcome(gate).type is OutcomeType.COMPLETED
    assert run_outcome(gate).name == "Completed"


# -- each trip condition: at the threshold trips, just below does not -------------------------


def test_consecutive_failures_trip_at_n_and_an_ok_cycle_breaks_the_streak(
    store_root: Path,
) -> None:
    b = make(store_root)
    assert feed(b, [BAD, BAD, OK, BAD, BAD]) == [None] * 5  # at most 2 in a row
    t = b.record_cycle(BAD, run_id="third", now=at(30))
    assert t is not None and t.is_trip
    assert t.from_state is BreakerState.CLOSED and t.to_state is BreakerState.OPEN
    assert t.trigger == "consecutive_failures"
    assert "3 failed cycle(s) in a row (trips at 3)" in t.reason
    assert t.metrics["consecutive_failures"]["value"] == 3
    assert t.run_id == "third" and t.actor == "system"


@pytest.mark.parametrize(
    ("pnl", "trips"), [(-1_999.99, False), (-2_000.0, True), (-2_500.0, True), (5_000.0, False)]
)
def test_daily_loss_trips_at_threshold_pct_of_net_liq(
    store_root: Path, pnl: float, trips: bool
) -> None:
    b = make(store_root)
    t = b.record_cycle(CycleHealth(ok=True, daily_pnl=pnl, net_liq=100_000.0), run_id="r", now=T0)
    assert (t is not None) is trips
    if trips:
        assert t is not None and t.trigger == "daily_loss"
        assert f"{-pnl * 100 / 100_000:.2f}% of net liquidation" in t.reason


def test_daily_loss_unknown_net_liq_is_skipped_not_guessed(store_root: Path) -> None:
    t = make(store_root).record_cycle(CycleHealth(ok=True, daily_pnl=-1e9), run_id="r", now=T0)
    assert t is None


@pytest.mark.parametrize(("last", "trips"), [(0, False), (1, True)])
def test_rejections_over_the_hourly_max_trip(store_root: Path, last: int, trips: bool) -> None:
    b = make(store_root)
    feed(b, [CycleHealth(ok=True, rejections=3), CycleHealth(ok=True, rejections=2)], step=25)
    t = b.record_cycle(CycleHealth(ok=True, rejections=last), run_id="r", now=at(55))
    assert (t is not None) is trips  # 5 in the hour is the max allowed, 6 trips
    if t is not None:
        assert t.trigger == "rejections"
        assert "6 order rejection(s) in the last hour (max 5)" in t.reason


def test_rejections_older_than_an_hour_do_not_count(store_root: Path) -> None:
    b = make(store_root)
    feed(b, [CycleHealth(ok=True, rejections=5)])
    t = b.record_cycle(CycleHealth(ok=True, rejections=5), run_id="later", now=at(60))
    assert t is None  # the first cycle is exactly one hour old: outside (now-1h, now]


@pytest.mark.parametrize(("seconds", "trips"), [(300.0, False), (300.5, True)])
def test_disconnect_longer_than_max_trips(store_root: Path, seconds: float, trips: bool) -> None:
    h = CycleHealth(ok=False, failure="not connected", disconnected_s=seconds)
    t = make(store_root).record_cycle(h, run_id="r", now=T0)
    assert (t is not None) is trips
    if t is not None:
        assert t.trigger == "disconnected"
        assert "disconnected for 300.5s (max 300.0s)" in t.reason


@pytest.mark.parametrize(("breaks", "trips"), [(0, False), (1, True)])
def test_unresolved_reconciliation_break_trips(store_root: Path, breaks: int, trips: bool) -> None:
    h = CycleHealth(ok=True, unresolved_breaks=breaks)
    t = make(store_root).record_cycle(h, run_id="r", now=T0)
    assert (t is not None) is trips
    if t is not None:
        assert t.trigger == "unresolved_breaks" and "1 unresolved reconciliation" in t.reason


@pytest.mark.parametrize(("failures", "trips"), [(6, False), (7, True)])
def test_data_quality_failure_rate_over_max_trips(
    store_root: Path, failures: int, trips: bool
) -> None:
    b = make(store_root)
    feed(b, [CycleHealth(ok=True, data_quality_failures=4, data_points=10)])
    h = CycleHealth(ok=True, data_quality_failures=failures, data_points=10)
    t = b.record_cycle(h, run_id="r", now=at(10))
    # over the hour: 4 + 6 of 20 = 50% is the max allowed, 4 + 7 of 20 = 55% trips
    assert (t is not None) is trips
    if t is not None:
        assert t.trigger == "data_quality" and "11 of 20" in t.reason


def test_every_fired_condition_is_listed_with_numbers_and_stored(store_root: Path) -> None:
    b = make(store_root)
    h = CycleHealth(
        ok=False,
        failure="broker gone",
        daily_pnl=-3_000.0,
        net_liq=100_000.0,
        disconnected_s=900.0,
        unresolved_breaks=2,
    )
    t = b.record_cycle(h, run_id="bad-run", now=T0)
    assert t is not None
    assert t.trigger.split(",") == ["daily_loss", "disconnected", "unresolved_breaks"]
    for part in ("3.00% of net liquidation", "disconnected for 900.0s", "2 unresolved"):
        assert part in t.reason
    row = b.store.read("risk_state").collect().row(0, named=True)
    assert row["reason"] == t.reason and row["trigger"] == t.trigger
    metrics = json.loads(row["metrics"])
    assert metrics["daily_loss"] == {"value": 3.0, "threshold": 2.0, "fired": True}
    assert metrics["rejections"]["fired"] is False
    health = b.store.read("cycle_health").collect()
    assert health.select("run_id", "ok", "mode").row(0) == ("bad-run", False, "NORMAL")
    assert run_outcome(b.gate(T0), t).name == "CircuitTripped"


# -- open ----------------------------------------------------------------------------------


def test_open_without_reducing_mode_blocks_the_broker(store_root: Path) -> None:
    b = make(store_root, reducing_mode=False)
    trip_open(b)
    gate = b.gate(at(20))
    assert gate.mode is GateMode.OPEN_BLOCKED and gate.state is BreakerState.OPEN
    assert not (gate.entries_allowed or gate.exits_allowed or gate.broker_allowed)
    assert "3 failed cycle(s)" in gate.reason and "cool-down until" in gate.reason
    outcome = run_outcome(gate)
    assert (outcome.type, outcome.name) == (OutcomeType.CANCELLED, "CircuitOpen")


def test_open_in_reducing_mode_runs_exits_only(store_root: Path) -> None:
    b = make(store_root, reducing_mode=True)
    trip_open(b)
    gate = b.gate(at(20))
    assert gate.mode is GateMode.EXITS_ONLY
    assert gate.exits_allowed and gate.broker_allowed and not gate.entries_allowed
    # an exits-only cycle is recorded but cannot close (or re-trip) the breaker
    assert b.record_cycle(OK, run_id="exits", now=at(21)) is None
    assert b.state() is BreakerState.OPEN
    modes = b.store.read("cycle_health").filter(pl.col("run_id") == "exits").collect()["mode"]
    assert modes.to_list() == ["EXITS_ONLY"]
    outcome = run_outcome(gate)
    assert (outcome.type, outcome.name) == (OutcomeType.COMPLETED, "ExitsOnly")


# -- half-open probe -------------------------------------------------------------------------


def test_cooldown_then_exactly_one_half_open_probe(store_root: Path) -> None:
    b = make(store_root)
    tripped = trip_open(b)  # at minute 10
    assert b.gate(at(39.9), run_id="early").mode is GateMode.EXITS_ONLY
    probe = b.gate(at(40), run_id="probe")
    assert probe.mode is GateMode.HALF_OPEN_PROBE and probe.state is BreakerState.HALF_OPEN
    assert not probe.entries_allowed and probe.exits_allowed
    assert probe.transition is not None and probe.transition.trigger == "cooldown_elapsed"
    assert probe.transition.seq == tripped.seq + 1
    # another run during the probe is not a second probe; the probe itself asking again is
    other = b.gate(at(41), run_id="other")
    assert other.mode is GateMode.EXITS_ONLY and "probe probe in progress" in other.reason
    again = b.gate(at(42), run_id="probe")
    assert again.mode is GateMode.HALF_OPEN_PROBE and again.transition is None
    log = b.store.read("risk_state").collect()
    assert log.filter(pl.col("to_state") == "HALF_OPEN").height == 1


def test_probe_success_closes_and_restarts_the_counts(store_root: Path) -> None:
    b = make(store_root)
    trip_open(b)
    gate = b.gate(at(40), run_id="probe")
    t = b.record_cycle(OK, run_id="probe", now=at(41))
    assert t is not None and (t.from_state, t.to_state) == (
        BreakerState.HALF_OPEN,
        BreakerState.CLOSED,
    )
    outcome = run_outcome(gate, t)
    assert (outcome.type, outcome.name) == (OutcomeType.COMPLETED, "HalfOpenProbe")
    assert b.gate(at(45)).mode is GateMode.NORMAL
    # the three failures before the trip no longer count: two new ones do not trip
    assert feed(b, [BAD, BAD], start=45) == [None, None]
    assert b.state() is BreakerState.CLOSED


@pytest.mark.parametrize(
    ("health", "cause"),
    [
        (BAD, "cycle failed: quote timeout"),
        (CycleHealth(ok=True, unresolved_breaks=1), "1 unresolved reconciliation break"),
    ],
)
def test_probe_failure_reopens(store_root: Path, health: CycleHealth, cause: str) -> None:
    b = make(store_root)
    trip_open(b)
    gate = b.gate(at(40), run_id="probe")
    t = b.record_cycle(health, run_id="probe", now=at(41))
    assert t is not None and (t.from_state, t.to_state) == (
        BreakerState.HALF_OPEN,
        BreakerState.OPEN,
    )
    assert t.trigger == "probe_failure" and cause in t.reason
    outcome = run_outcome(gate, t)
    assert (outcome.type, outcome.name) == (OutcomeType.FAILED, "CircuitTripped")
    # the cool-down restarts from the failed probe
    assert b.gate(at(70), run_id="x").mode is GateMode.EXITS_ONLY
    assert b.gate(at(71), run_id="probe-2").mode is GateMode.HALF_OPEN_PROBE


def test_probe_that_never_reports_counts_as_failed(store_root: Path) -> None:
    b = make(store_root)
    trip_open(b)
    b.gate(at(40), run_id="crashed-probe")
    assert b.gate(at(54.9), run_id="other").mode is GateMode.EXITS_ONLY
    gate = b.gate(at(55), run_id="other")
    assert gate.mode is GateMode.EXITS_ONLY and gate.state is BreakerState.OPEN
    last = b.status().transitions[-1]
    assert last.trigger == "probe_timeout" and "crashed-probe" in last.reason


def test_a_non_probe_run_cannot_close_the_breaker(store_root: Path) -> None:
    b = make(store_root)
    trip_open(b)
    b.gate(at(40), run_id="probe")
    assert b.record_cycle(OK, run_id="someone-else", now=at(41)) is None
    assert b.state() is BreakerState.HALF_OPEN


# -- manual -------------------------------------------------------------------------------


def test_manual_trip_and_reset_are_audited(store_root: Path) -> None:
    b = make(store_root)
    t = b.trip("VIX spike, stepping in", "alice", now=at(1))
    assert (t.from_state, t.to_state, t.trigger, t.actor) == (
        BreakerState.CLOSED,
        BreakerState.OPEN,
        "manual_trip",
        "alice",
    )
    r = b.reset("checked the book, all fine", "bob", now=at(2))
    assert (r.from_state, r.to_state, r.trigger, r.actor) == (
        BreakerState.OPEN,
        BreakerState.CLOSED,
        "manual_reset",
        "bob",
    )
    log = b.store.read("risk_state").sort("seq").collect()
    assert log.select("actor", "reason").rows() == [
        ("alice", "VIX spike, stepping in"),
        ("bob", "checked the book, all fine"),
    ]
    status = b.status()
    assert status.state is BreakerState.CLOSED and status.actor == "bob"
    assert [x.trigger for x in status.transitions] == ["manual_trip", "manual_reset"]


@pytest.mark.parametrize("reason", ["", "   ", None])
def test_reset_without_reason_is_refused_and_writes_nothing(
    store_root: Path, reason: str | None
) -> None:
    b = make(store_root)
    b.trip("testing", "alice", now=T0)
    with pytest.raises(ValueError, match="reason is required"):
        b.reset(reason, "bob")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="actor is required"):
        b.reset("fine now", "")
    assert b.state() is BreakerState.OPEN
    assert b.store.read("risk_state").collect().height == 1


def test_reset_clears_trip_counts(store_root: Path) -> None:
    b = make(store_root)
    feed(b, [BAD, BAD])
    b.reset("known outage fixed", "alice", now=at(11))
    assert b.record_cycle(BAD, run_id="after", now=at(15)) is None


# -- durability and failing closed ---------------------------------------------------------------


def test_state_survives_a_restart(store_root: Path) -> None:
    trip_open(make(store_root))
    fresh = Breaker(DeltaStore(store_root), SETTINGS)  # new process, same store
    assert fresh.state() is BreakerState.OPEN
    assert fresh.gate(at(20)).mode is GateMode.EXITS_ONLY
    assert fresh.gate(at(40), run_id="p").mode is GateMode.HALF_OPEN_PROBE


def test_breaker_from_default_settings_tree(store_root: Path, no_config: Path) -> None:
    settings = Settings()
    b = Breaker(DeltaStore(store_root), settings.breaker)
    assert b.gate().mode is GateMode.NORMAL  # default clock: system time


def _assert_fail_closed(gate: Gate, fragment: str) -> None:
    assert gate.mode is GateMode.FAIL_CLOSED and gate.state is None
    assert not (gate.entries_allowed or gate.exits_allowed or gate.broker_allowed)
    assert fragment in gate.reason
    outcome = run_outcome(gate)
    assert (outcome.type, outcome.name) == (OutcomeType.FAILED, "BreakerUnavailable")


def test_corrupt_transaction_log_fails_closed(store_root: Path) -> None:
    b = make(store_root)
    b.trip("x", "alice", now=T0)
    for f in (store_root / "risk_state" / "_delta_log").glob("*.json"):
        f.write_text("{not json")
    _assert_fail_closed(b.gate(at(1)), "cannot read risk_state")
    with pytest.raises(BreakerUnavailable):
        b.record_cycle(OK, run_id="r", now=at(1))


def test_table_dir_without_delta_log_fails_closed(store_root: Path) -> None:
    b = make(store_root)
    b.trip("x", "alice", now=T0)
    for f in (store_root / "risk_state" / "_delta_log").glob("*"):
        f.unlink()
    (store_root / "risk_state" / "_delta_log").rmdir()
    _assert_fail_closed(b.gate(at(1)), "not a readable Delta table")


def test_store_raising_fails_closed(store_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    b = make(store_root)
    b.trip("x", "alice", now=T0)

    def broken(*args: object, **kwargs: object) -> pl.LazyFrame:
        raise OSError("s3: connection reset")

    monkeypatch.setattr(b.store, "read", broken)
    _assert_fail_closed(b.gate(at(1)), "connection reset")


def test_ambiguous_log_fails_closed_until_a_manual_reset(store_root: Path) -> None:
    b = make(store_root)
    first = b.trip("x", "alice", now=T0)
    # a second writer that bypassed the seq guard (append, not insert-only merge)
    b.store.append("risk_state", first.to_frame().with_columns(pl.lit("CLOSED").alias("to_state")))
    _assert_fail_closed(b.gate(at(1)), "share seq 0")
    r = b.reset("repaired after duplicate seq", "alice", now=at(2))
    assert r.seq == 1 and b.gate(at(3)).mode is GateMode.NORMAL


def test_a_stale_writer_loses_the_race_and_writes_nothing(store_root: Path) -> None:
    a = make(store_root)
    b = Breaker(DeltaStore(store_root), SETTINGS)
    stale = a._snapshot(strict=True)
    b.trip("operator", "alice", now=T0)
    lost = a._write(
        stale,
        at(1),
        BreakerState.OPEN,
        reason="r",
        trigger="t",
        metrics={},
        actor="system",
        run_id=None,
    )
    assert lost is None
    assert a.store.read("risk_state").collect().height == 1


# -- inputs and outcome mapping --------------------------------------------------------------


def test_cycle_health_rejects_bad_input_with_the_field_named() -> None:
    with pytest.raises(ValueError, match="failure is required"):
        CycleHealth(ok=False)
    with pytest.raises(ValueError, match="data_quality_failures"):
        CycleHealth(ok=True, data_quality_failures=3, data_points=2)
    with pytest.raises(ValueError, match="rejections"):
        CycleHealth(ok=True, rejections=-1)
    with pytest.raises(ValueError, match="net_liq"):
        CycleHealth(ok=True, net_liq=0.0)


def test_record_cycle_requires_a_run_id(store_root: Path) -> None:
    with pytest.raises(ValueError, match="run_id"):
        make(store_root).record_cycle(OK, run_id=" ", now=T0)


def test_outcome_of_a_failed_cycle_that_does_not_trip(store_root: Path) -> None:
    b = make(store_root)
    gate = b.gate(T0)
    t = b.record_cycle(BAD, run_id="r", now=T0)
    outcome = run_outcome(gate, t, error="quote timeout")
    assert t is None
    assert (outcome.type, outcome.name, outcome.message) == (
        OutcomeType.FAILED,
        "Failed",
        "quote timeout",
    )


# -- the transition table --------------------------------------------------------------------


def test_table_is_total_every_pair_moves_or_is_refused_with_a_reason() -> None:
    assert set(MOVES) == set(product(BreakerState, BreakerEvent))
    for rule in MOVES.values():
        assert isinstance(rule, Move | Refusal)
        if isinstance(rule, Refusal):
            assert rule.why.strip()


def test_manual_events_are_allowed_from_every_state() -> None:
    """A reset and a halt from anywhere; a trip from anywhere but HALTED (a trip there
    would turn a person's sticky stop into one the cool-down lifts)."""
    for state in BreakerState:
        assert next_move(state, BreakerEvent.MANUAL_RESET).to is BreakerState.CLOSED
        assert next_move(state, BreakerEvent.MANUAL_HALT).to is BreakerState.HALTED
        if state is not BreakerState.HALTED:
            assert next_move(state, BreakerEvent.MANUAL_TRIP).to is BreakerState.OPEN
    with pytest.raises(IllegalTransition, match="manual_trip is not allowed in HALTED"):
        next_move(BreakerState.HALTED, BreakerEvent.MANUAL_TRIP)


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (BreakerState.CLOSED, BreakerEvent.COOLDOWN_ELAPSED),
        (BreakerState.CLOSED, BreakerEvent.PROBE_SUCCESS),
        (BreakerState.OPEN, BreakerEvent.TRIP_CONDITIONS),
        (BreakerState.HALF_OPEN, BreakerEvent.COOLDOWN_ELAPSED),
    ],
)
def test_an_illegal_transition_raises_naming_event_state_and_why(
    state: BreakerState, event: BreakerEvent
) -> None:
    with pytest.raises(IllegalTransition, match=f"{event.value} is not allowed in {state.value}"):
        next_move(state, event)


def test_an_illegal_move_writes_nothing(store_root: Path) -> None:
    b = make(store_root)
    with pytest.raises(IllegalTransition, match="no probe is running"):
        b._move(
            b._snapshot(strict=True),
            T0,
            BreakerEvent.PROBE_SUCCESS,
            reason="r",
            metrics={},
            actor="system",
            run_id="r",
        )
    assert not b.store.exists("risk_state")


def test_every_recorded_transition_is_a_move_of_the_table(store_root: Path) -> None:
    b = make(store_root)
    trip_open(b)  # conditions trip
    b.gate(at(40), run_id="probe")  # cool-down elapsed
    b.record_cycle(BAD, run_id="probe", now=at(41))  # probe failure
    b.gate(at(71), run_id="probe-2")  # cool-down elapsed
    b.gate(at(86), run_id="other")  # probe timeout
    b.gate(at(116), run_id="probe-3")  # cool-down elapsed
    b.record_cycle(OK, run_id="probe-3", now=at(117))  # probe success
    b.trip("drill", "alice", now=at(118))
    b.reset("drill over", "alice", now=at(119))
    log = b.status(limit=100).transitions
    named = {e.value for e in BreakerEvent}  # a conditions trip records condition names
    events = [
        BreakerEvent(t.trigger) if t.trigger in named else BreakerEvent.TRIP_CONDITIONS for t in log
    ]
    assert [e.value for e in events] == [
        "trip_conditions",
        "cooldown_elapsed",
        "probe_failure",
        "cooldown_elapsed",
        "probe_timeout",
        "cooldown_elapsed",
        "probe_success",
        "manual_trip",
        "manual_reset",
    ]
    for t, event in zip(log, events, strict=True):
        assert next_move(t.from_state, event).to is t.to_state


def test_table_renders_as_markdown_one_row_per_pair() -> None:
    lines = moves_markdown().splitlines()
    assert lines[0] == "| from | event | to | action |"
    rows = [line.strip("|").split(" | ") for line in lines[2:]]
    assert len(rows) == len(BreakerState) * len(BreakerEvent)
    by_pair = {(r[0].strip(), r[1]): (r[2], r[3].strip()) for r in rows}
    assert by_pair[("OPEN", "cooldown_elapsed")] == (
        "HALF_OPEN",
        "the calling run becomes the single probe: exits, no entries",
    )
    assert by_pair[("CLOSED", "probe_success")] == ("refused", "no probe is running")
