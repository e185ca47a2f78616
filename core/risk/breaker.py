"""The circuit breaker: stops trading when cycles keep failing or the account is in trouble.

States: CLOSED (normal), OPEN (no entries; in `reducing_mode` exits still run, otherwise
the broker is not touched), HALF_OPEN (after the cool-down, one probe run with entries
disabled decides whether to close again), HALTED (a person's emergency stop, `v6 halt`:
no entries, exits unless the halt said no; no cool-down and no probe, so only a person's
reset re-opens trading).

Why it is built this way:
- The state is durable in Delta (`risk_state`, an append-only transition log whose last
  row is the current state), never in Prefect's deployment pause state, which a `serve`
  restart undoes. A new `Breaker` on the same store sees the same state.
- Every transition records time, from, to, reason, the numbers behind it and the actor.
- It fails closed: `gate()` never raises; if the state cannot be read it returns a gate
  that allows nothing, with the reason.
- Transitions carry a sequence number written insert-only on that key, so two writers
  racing for the same transition cannot both win (the loser re-reads the state).
- Trip conditions are computed over `cycle_health` rows (one per cycle) since the breaker
  last closed, so a manual reset starts the counts afresh.
- Every state change goes through one table, `MOVES`: (state, event) -> the next state and
  what that does, or an explicit refusal. Nothing else decides a next state, so the log
  can only hold moves the table allows (`moves_markdown()` prints it for the docs).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import polars as pl

from core.clock import Clock, SystemClock
from core.config import BreakerSettings
from core.domain.timezones import UTC_US
from core.store.delta import DeltaStore

log = logging.getLogger(f"v6.{__name__}")

STATE_TABLE = "risk_state"
HEALTH_TABLE = "cycle_health"
SYSTEM_ACTOR = "system"
RATE_WINDOW = timedelta(hours=1)
"""Window for the rejection-rate and data-quality-rate conditions."""
_WRITE_ATTEMPTS = 5


class BreakerState(StrEnum):
    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"
    HALTED = "HALTED"


class BreakerEvent(StrEnum):
    """What may move the breaker. The value is the `trigger` a move records, except a trip
    on conditions, which records the names of the conditions that fired."""

    TRIP_CONDITIONS = "trip_conditions"  # a NORMAL cycle fired at least one trip condition
    COOLDOWN_ELAPSED = "cooldown_elapsed"  # a run asks the gate after the cool-down
    PROBE_SUCCESS = "probe_success"  # the probe's cycle was healthy
    PROBE_FAILURE = "probe_failure"  # the probe's cycle failed or fired a condition
    PROBE_TIMEOUT = "probe_timeout"  # another run asks the gate; the probe never reported
    MANUAL_TRIP = "manual_trip"
    MANUAL_RESET = "manual_reset"
    MANUAL_HALT = "manual_halt"  # a person's sticky stop (`v6 halt`)


class BreakerAction(StrEnum):
    """What a move does besides changing the state."""

    HALT = "entries stop; the cool-down (re)starts"
    PROBE = "the calling run becomes the single probe: exits, no entries"
    RESUME = "entries resume; the trip counts restart"
    STICK = "entries stop until a person resets; no cool-down, no probe"


@dataclass(frozen=True, slots=True)
class Move:
    to: BreakerState
    action: BreakerAction


@dataclass(frozen=True, slots=True)
class Refusal:
    why: str


class IllegalTransition(RuntimeError):
    """An event the table refuses in the current state (a bug in the caller, not data)."""


_S, _E, _A = BreakerState, BreakerEvent, BreakerAction
_NO_COOLDOWN = "no cool-down runs in this state"
_NO_PROBE = "no probe is running"
_HALTED_TRIP = "halted: a trip would let the cool-down re-open trading; reset first"
MOVES: Mapping[tuple[BreakerState, BreakerEvent], Move | Refusal] = {
    (_S.CLOSED, _E.TRIP_CONDITIONS): Move(_S.OPEN, _A.HALT),
    (_S.CLOSED, _E.COOLDOWN_ELAPSED): Refusal(_NO_COOLDOWN),
    (_S.CLOSED, _E.PROBE_SUCCESS): Refusal(_NO_PROBE),
    (_S.CLOSED, _E.PROBE_FAILURE): Refusal(_NO_PROBE),
    (_S.CLOSED, _E.PROBE_TIMEOUT): Refusal(_NO_PROBE),
    (_S.CLOSED, _E.MANUAL_TRIP): Move(_S.OPEN, _A.HALT),
    (_S.CLOSED, _E.MANUAL_RESET): Move(_S.CLOSED, _A.RESUME),
    (_S.CLOSED, _E.MANUAL_HALT): Move(_S.HALTED, _A.STICK),
    (_S.OPEN, _E.TRIP_CONDITIONS): Refusal("already OPEN: its cycles are recorded, not evaluated"),
    (_S.OPEN, _E.COOLDOWN_ELAPSED): Move(_S.HALF_OPEN, _A.PROBE),
    (_S.OPEN, _E.PROBE_SUCCESS): Refusal(_NO_PROBE),
    (_S.OPEN, _E.PROBE_FAILURE): Refusal(_NO_PROBE),
    (_S.OPEN, _E.PROBE_TIMEOUT): Refusal(_NO_PROBE),
    (_S.OPEN, _E.MANUAL_TRIP): Move(_S.OPEN, _A.HALT),
    (_S.OPEN, _E.MANUAL_RESET): Move(_S.CLOSED, _A.RESUME),
    (_S.OPEN, _E.MANUAL_HALT): Move(_S.HALTED, _A.STICK),
    (_S.HALF_OPEN, _E.TRIP_CONDITIONS): Refusal("only the probe's own cycle decides"),
    (_S.HALF_OPEN, _E.COOLDOWN_ELAPSED): Refusal(_NO_COOLDOWN),
    (_S.HALF_OPEN, _E.PROBE_SUCCESS): Move(_S.CLOSED, _A.RESUME),
    (_S.HALF_OPEN, _E.PROBE_FAILURE): Move(_S.OPEN, _A.HALT),
    (_S.HALF_OPEN, _E.PROBE_TIMEOUT): Move(_S.OPEN, _A.HALT),
    (_S.HALF_OPEN, _E.MANUAL_TRIP): Move(_S.OPEN, _A.HALT),
    (_S.HALF_OPEN, _E.MANUAL_RESET): Move(_S.CLOSED, _A.RESUME),
    (_S.HALF_OPEN, _E.MANUAL_HALT): Move(_S.HALTED, _A.STICK),
    (_S.HALTED, _E.TRIP_CONDITIONS): Refusal("halted: its cycles are recorded, not evaluated"),
    (_S.HALTED, _E.COOLDOWN_ELAPSED): Refusal("a halt has no cool-down; only a person resets it"),
    (_S.HALTED, _E.PROBE_SUCCESS): Refusal(_NO_PROBE),
    (_S.HALTED, _E.PROBE_FAILURE): Refusal(_NO_PROBE),
    (_S.HALTED, _E.PROBE_TIMEOUT): Refusal(_NO_PROBE),
    (_S.HALTED, _E.MANUAL_TRIP): Refusal(_HALTED_TRIP),
    (_S.HALTED, _E.MANUAL_HALT): Move(_S.HALTED, _A.STICK),
    (_S.HALTED, _E.MANUAL_RESET): Move(_S.CLOSED, _A.RESUME),
}


def next_move(state: BreakerState, event: BreakerEvent) -> Move:
    """The table's move for `event` in `state`; raises IllegalTransition if it refuses."""
    rule = MOVES[(state, event)]
    if isinstance(rule, Refusal):
        raise IllegalTransition(
            f"breaker: {event.value} is not allowed in {state.value}: {rule.why}"
        )
    return rule


def moves_markdown() -> str:
    """`MOVES` as a markdown table, one row per (state, event), in enum order."""
    lines = ["| from | event | to | action |", "|---|---|---|---|"]
    for state in BreakerState:
        for event in BreakerEvent:
            rule = MOVES[(state, event)]
            to, what = (
                ("refused", rule.why) if isinstance(rule, Refusal) else (rule.to.value, rule.action)
            )
            lines.append(f"| {state.value} | {event.value} | {to} | {what} |")
    return "\n".join(lines) + "\n"


class GateMode(StrEnum):
    """What a run may do, decided once at its start."""

    NORMAL = "NORMAL"  # CLOSED: entries and exits
    OPEN_BLOCKED = "OPEN_BLOCKED"  # OPEN: do not touch the broker
    EXITS_ONLY = "EXITS_ONLY"  # OPEN in reducing mode: exit rules only
    HALF_OPEN_PROBE = "HALF_OPEN_PROBE"  # the one probe run: exits, no entries
    FAIL_CLOSED = "FAIL_CLOSED"  # breaker state unreadable: nothing trades


_PERMISSIONS: dict[GateMode, tuple[bool, bool, bool]] = {
    # mode: (entries_allowed, exits_allowed, broker_allowed)
    GateMode.NORMAL: (True, True, True),
    GateMode.OPEN_BLOCKED: (False, False, False),
    GateMode.EXITS_ONLY: (False, True, True),
    GateMode.HALF_OPEN_PROBE: (False, True, True),
    GateMode.FAIL_CLOSED: (False, False, False),
}


class BreakerUnavailable(RuntimeError):
    """The breaker state cannot be read (or is ambiguous); callers must not trade."""


# --------------------------------------------------------------------------------------
# value types
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CycleHealth:
    """What one trading cycle observed; the inputs of every trip condition.

    `daily_pnl`/`net_liq` are USD and NaN when unknown (e.g. broker disconnected), in
    which case the daily-loss condition is skipped for this cycle (the disconnect and
    failed-cycle conditions cover it). `disconnected_s` is how long the broker has been
    disconnected as of this cycle (0 when connected).
    """

    ok: bool
    failure: str | None = None
    daily_pnl: float = math.nan
    net_liq: float = math.nan
    rejections: int = 0
    disconnected_s: float = 0.0
    unresolved_breaks: int = 0
    data_quality_failures: int = 0
    data_points: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.ok, bool):
            raise ValueError(f"CycleHealth.ok must be a bool, got {self.ok!r}")
        if not self.ok and not (self.failure and self.failure.strip()):
            raise ValueError(
                "CycleHealth.failure is required when ok=False; say why the cycle failed"
            )
        for name in ("rejections", "unresolved_breaks", "data_quality_failures", "data_points"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"CycleHealth.{name} must be an int >= 0, got {value!r}")
        if self.data_quality_failures > self.data_points:
            raise ValueError(
                f"CycleHealth.data_quality_failures ({self.data_quality_failures}) exceeds "
                f"data_points ({self.data_points}); count every checked item in data_points"
            )
        if not math.isfinite(self.disconnected_s) or self.disconnected_s < 0:
            raise ValueError(
                "CycleHealth.disconnected_s must be a finite number >= 0, "
                f"got {self.disconnected_s!r}"
            )
        if not math.isnan(self.net_liq) and not (math.isfinite(self.net_liq) and self.net_liq > 0):
            raise ValueError(
                f"CycleHealth.net_liq must be > 0 or NaN (unknown), got {self.net_liq!r}"
            )
        if math.isinf(self.daily_pnl):
            raise ValueError(f"CycleHealth.daily_pnl must be finite or NaN, got {self.daily_pnl!r}")

    def to_frame(self, run_id: str, ts: datetime, mode: GateMode) -> pl.DataFrame:
        """One `cycle_health` row (NaN stored as null: 'unknown', not a number)."""
        return pl.DataFrame(
            {
                "run_id": [run_id],
                "ts": [ts],
                "mode": [mode.value],
                "ok": [self.ok],
                "failure": [self.failure],
                "daily_pnl": [_none_if_nan(self.daily_pnl)],
                "net_liq": [_none_if_nan(self.net_liq)],
                "rejections": [self.rejections],
                "disconnected_s": [float(self.disconnected_s)],
                "unresolved_breaks": [self.unresolved_breaks],
                "data_quality_failures": [self.data_quality_failures],
                "data_points": [self.data_points],
            },
            schema=_HEALTH_SCHEMA,
        )


_HEALTH_SCHEMA = pl.Schema(
    {
        "run_id": pl.String(),
        "ts": UTC_US,
        "mode": pl.String(),
        "ok": pl.Boolean(),
        "failure": pl.String(),
        "daily_pnl": pl.Float64(),
        "net_liq": pl.Float64(),
        "rejections": pl.Int64(),
        "disconnected_s": pl.Float64(),
        "unresolved_breaks": pl.Int64(),
        "data_quality_failures": pl.Int64(),
        "data_points": pl.Int64(),
    }
)


@dataclass(frozen=True, slots=True)
class Transition:
    """One recorded change of breaker state (a row of `risk_state`)."""

    seq: int
    ts: datetime
    from_state: BreakerState
    to_state: BreakerState
    reason: str
    trigger: str
    metrics: Mapping[str, Any]
    actor: str
    run_id: str | None

    @property
    def run_by(self) -> str:
        """Who really ran a manual change ('' when not recorded: automatic moves, or rows
        written before V6 recorded it)."""
        return str(self.metrics.get("run_by", ""))

    @property
    def is_trip(self) -> bool:
        return self.to_state is BreakerState.OPEN and self.from_state is not BreakerState.OPEN

    @property
    def halt_allows_exits(self) -> bool:
        """For a halt: whether exit rules may still close positions (`v6 halt` default);
        a halt recorded without the flag allows none (fail closed)."""
        return bool(self.metrics.get("exits_allowed", False))

    def to_frame(self) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "seq": [self.seq],
                "ts": [self.ts],
                "from_state": [self.from_state.value],
                "to_state": [self.to_state.value],
                "reason": [self.reason],
                "trigger": [self.trigger],
                "metrics": [json.dumps(_json_safe(dict(self.metrics)), sort_keys=True)],
                "actor": [self.actor],
                "run_id": [self.run_id],
            },
            schema={
                "seq": pl.Int64,
                "ts": UTC_US,
                "from_state": pl.String,
                "to_state": pl.String,
                "reason": pl.String,
                "trigger": pl.String,
                "metrics": pl.String,
                "actor": pl.String,
                "run_id": pl.String,
            },
        )

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Transition:
        try:
            metrics = json.loads(row["metrics"])
        except (TypeError, ValueError):
            metrics = {"unparsed": row["metrics"]}
        return cls(
            seq=int(row["seq"]),
            ts=row["ts"].astimezone(UTC),
            from_state=BreakerState(row["from_state"]),
            to_state=BreakerState(row["to_state"]),
            reason=row["reason"],
            trigger=row["trigger"],
            metrics=metrics,
            actor=row["actor"],
            run_id=row["run_id"],
        )


@dataclass(frozen=True, slots=True)
class Gate:
    """What this run may do. `state` is None when the breaker state could not be read."""

    mode: GateMode
    state: BreakerState | None
    reason: str
    since: datetime | None = None
    transition: Transition | None = None  # OPEN -> HALF_OPEN recorded by this gate call

    @property
    def entries_allowed(self) -> bool:
        return _PERMISSIONS[self.mode][0]

    @property
    def exits_allowed(self) -> bool:
        return _PERMISSIONS[self.mode][1]

    @property
    def broker_allowed(self) -> bool:
        return _PERMISSIONS[self.mode][2]


@dataclass(frozen=True, slots=True)
class TripCondition:
    """One trip condition evaluated: its value, the threshold and whether it fired."""

    name: str
    value: float | None
    threshold: float
    fired: bool
    detail: str


@dataclass(frozen=True, slots=True)
class BreakerStatus:
    """For `v6 breaker status`: where the breaker is, since when, why, and recent history."""

    state: BreakerState
    since: datetime | None
    reason: str
    trigger: str
    actor: str
    reducing_mode: bool
    cooldown_until: datetime | None  # OPEN only: when the next probe may run
    probe_run_id: str | None  # HALF_OPEN only
    transitions: tuple[Transition, ...] = field(default_factory=tuple)  # oldest first


class OutcomeType(StrEnum):
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """The final state a flow run should end in; the flow turns it into a Prefect State."""

    type: OutcomeType
    name: str
    message: str


COMPLETED = "Completed"
CIRCUIT_TRIPPED = "CircuitTripped"
CIRCUIT_OPEN = "CircuitOpen"
EXITS_ONLY = "ExitsOnly"
HALF_OPEN_PROBE = "HalfOpenProbe"
BREAKER_UNAVAILABLE = "BreakerUnavailable"
FAILED = "Failed"


def run_outcome(
    gate: Gate, transition: Transition | None = None, *, error: str | None = None
) -> RunOutcome:
    """Map (the run's gate, the transition its `record_cycle` made, an error) to a final state.

    A trip (or a failed probe, which re-opens) wins over everything: the event
    `prefect.flow-run.CircuitTripped` is what automations and humans watch for.
    """
    if gate.mode is GateMode.FAIL_CLOSED:
        return RunOutcome(OutcomeType.FAILED, BREAKER_UNAVAILABLE, gate.reason)
    if transition is not None and transition.to_state is BreakerState.OPEN:
        message = transition.reason if error is None else f"{transition.reason}; error: {error}"
        return RunOutcome(OutcomeType.FAILED, CIRCUIT_TRIPPED, message)
    if (
        transition is not None
        and transition.from_state is BreakerState.HALF_OPEN
        and transition.to_state is BreakerState.CLOSED
    ):
        return RunOutcome(OutcomeType.COMPLETED, HALF_OPEN_PROBE, transition.reason)
    if error is not None:
        return RunOutcome(OutcomeType.FAILED, FAILED, error)
    if gate.mode is GateMode.OPEN_BLOCKED:
        return RunOutcome(OutcomeType.CANCELLED, CIRCUIT_OPEN, gate.reason)
    if gate.mode is GateMode.EXITS_ONLY:
        return RunOutcome(OutcomeType.COMPLETED, EXITS_ONLY, gate.reason)
    if gate.mode is GateMode.HALF_OPEN_PROBE:
        return RunOutcome(
            OutcomeType.COMPLETED,
            HALF_OPEN_PROBE,
            "probe finished without recording its cycle; the breaker stays HALF_OPEN",
        )
    return RunOutcome(OutcomeType.COMPLETED, COMPLETED, "breaker CLOSED")


# --------------------------------------------------------------------------------------
# trip conditions (pure, vectorised over cycle_health rows)
# --------------------------------------------------------------------------------------


def evaluate_trip_conditions(
    cycles: pl.DataFrame,
    settings: BreakerSettings,
    now: datetime,
    *,
    include_streak: bool = True,
) -> list[TripCondition]:
    """Evaluate every trip condition over `cycles` (cycle_health rows, this cycle last by ts).

    Thresholds (each documented so "at threshold" is unambiguous):
    - consecutive_failures: trips when the trailing run of failed cycles >= N.
    - daily_loss: trips when this cycle's loss >= daily_loss_pct % of this cycle's net
      liquidation (skipped when either is unknown).
    - rejections: trips when rejections in the last hour > max_rejections_per_hour.
    - disconnected: trips when this cycle's disconnected_s > max_disconnect_s.
    - unresolved_breaks: trips when this cycle reports any (> 0).
    - data_quality: trips when failures / data points over the last hour
      > max_data_quality_failure_rate (skipped with no data points).
    """
    if cycles.is_empty():
        return []
    frame = cycles.sort("ts", maintain_order=True)
    window_start = now - RATE_WINDOW
    in_window = pl.col("ts") > window_start
    c = pl.col
    agg = frame.select(
        n=pl.len(),
        last_ok_idx=pl.arg_where(c("ok")).max(),
        loss=(-c("daily_pnl").last()).clip(lower_bound=0.0),
        net_liq=c("net_liq").last(),
        rejections=c("rejections").filter(in_window).sum(),
        disconnected_s=c("disconnected_s").last(),
        unresolved_breaks=c("unresolved_breaks").last(),
        dq_failures=c("data_quality_failures").filter(in_window).sum(),
        dq_points=c("data_points").filter(in_window).sum(),
    ).row(0, named=True)

    out: list[TripCondition] = []
    if include_streak:
        n = int(agg["n"])
        last_ok = agg["last_ok_idx"]
        streak = n if last_ok is None else n - 1 - int(last_ok)
        limit = settings.consecutive_failures
        out.append(
            TripCondition(
                "consecutive_failures",
                float(streak),
                float(limit),
                streak >= limit,
                f"consecutive_failures: {streak} failed cycle(s) in a row (trips at {limit})",
            )
        )

    loss, net_liq = agg["loss"], agg["net_liq"]
    if loss is not None and net_liq is not None:
        pct = loss * 100.0 / net_liq
        fired = loss * 100.0 >= settings.daily_loss_pct * net_liq  # exact at the threshold
        out.append(
            TripCondition(
                "daily_loss",
                pct,
                settings.daily_loss_pct,
                fired,
                f"daily_loss: {pct:.2f}% of net liquidation ({loss:,.2f} of {net_liq:,.2f} USD; "
                f"trips at {settings.daily_loss_pct:.2f}%)",
            )
        )

    rej = int(agg["rejections"])
    out.append(
        TripCondition(
            "rejections",
            float(rej),
            float(settings.max_rejections_per_hour),
            rej > settings.max_rejections_per_hour,
            f"rejections: {rej} order rejection(s) in the last hour "
            f"(max {settings.max_rejections_per_hour})",
        )
    )

    disc = float(agg["disconnected_s"])
    out.append(
        TripCondition(
            "disconnected",
            disc,
            settings.max_disconnect_s,
            disc > settings.max_disconnect_s,
            f"disconnected: broker disconnected for {disc:.1f}s "
            f"(max {settings.max_disconnect_s:.1f}s)",
        )
    )

    breaks = int(agg["unresolved_breaks"])
    out.append(
        TripCondition(
            "unresolved_breaks",
            float(breaks),
            0.0,
            breaks > 0,
            f"unresolved_breaks: {breaks} unresolved reconciliation break(s)",
        )
    )

    points = int(agg["dq_points"])
    if points > 0:
        fails = int(agg["dq_failures"])
        rate = fails / points
        cap = settings.max_data_quality_failure_rate
        out.append(
            TripCondition(
                "data_quality",
                rate,
                cap,
                rate > cap,
                f"data_quality: {fails} of {points} data item(s) failed checks in the last hour "
                f"({rate:.1%}; max {cap:.1%})",
            )
        )
    return out


def _conditions_metrics(conditions: list[TripCondition]) -> dict[str, Any]:
    return {
        c.name: {"value": c.value, "threshold": c.threshold, "fired": c.fired} for c in conditions
    }


# --------------------------------------------------------------------------------------
# the breaker
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Snapshot:
    state: BreakerState
    last: Transition | None
    closed_since: datetime | None  # ts of the latest transition into CLOSED
    next_seq: int
    problem: str | None = None  # set when the log is readable but ambiguous

    @property
    def since(self) -> datetime | None:
        return None if self.last is None else self.last.ts


class Breaker:
    """The durable circuit breaker over one store. Cheap to construct; holds no state."""

    def __init__(
        self, store: DeltaStore, settings: BreakerSettings, clock: Clock | None = None
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock: Clock = clock or SystemClock()

    # -- public API ----------------------------------------------------------------------
    def gate(self, now: datetime | None = None, *, run_id: str | None = None) -> Gate:
        """Decide what this run may do. Never raises: any failure gives a FAIL_CLOSED gate.

        When the cool-down has passed this call records OPEN -> HALF_OPEN and makes this run
        (`run_id`) the single probe; later callers see the probe in progress.
        """
        try:
            at = self._now(now)
            return self._gate(self._snapshot(strict=True), at, run_id, allow_transition=True)
        except Exception as exc:
            reason = f"breaker state unavailable, nothing may trade: {exc}"
            log.error("%s", reason)
            return Gate(GateMode.FAIL_CLOSED, None, reason)

    def record_cycle(
        self, health: CycleHealth, *, run_id: str, now: datetime | None = None
    ) -> Transition | None:
        """Record one cycle's health and apply its consequences.

        CLOSED: trips to OPEN if any condition fires (the reason lists each with its
        numbers). HALF_OPEN and this run is the probe: success closes, failure re-opens.
        Otherwise only the health row is written. Raises BreakerUnavailable if the state
        cannot be read (the run must then fail, not carry on).
        """
        if not isinstance(run_id, str) or not run_id.strip():
            raise ValueError(f"record_cycle: run_id must be a non-empty string, got {run_id!r}")
        at = self._now(now)
        snap = self._snapshot(strict=True)
        mode = self._cycle_mode(snap, run_id)
        row = health.to_frame(run_id, at, mode)
        self.store.merge(HEALTH_TABLE, row, update=True)

        if snap.state is BreakerState.CLOSED and mode is GateMode.NORMAL:
            cycles = self._normal_cycles_since(snap.closed_since, run_id, at)
            cycles = pl.concat([cycles, row], how="vertical_relaxed")
            conditions = evaluate_trip_conditions(cycles, self.settings, at)
            fired = [c for c in conditions if c.fired]
            if not fired:
                return None
            metrics = _conditions_metrics(conditions) | {"cycles_considered": cycles.height}
            return self._system_move(
                snap,
                at,
                BreakerEvent.TRIP_CONDITIONS,
                reason="; ".join(c.detail for c in fired),
                trigger=",".join(c.name for c in fired),
                metrics=metrics,
                run_id=run_id,
            )

        if snap.state is BreakerState.HALF_OPEN and mode is GateMode.HALF_OPEN_PROBE:
            conditions = evaluate_trip_conditions(row, self.settings, at, include_streak=False)
            fired = [c for c in conditions if c.fired]
            metrics = _conditions_metrics(conditions) | {"probe_ok": health.ok}
            if health.ok and not fired:
                return self._system_move(
                    snap,
                    at,
                    BreakerEvent.PROBE_SUCCESS,
                    reason=f"half-open probe {run_id} succeeded; breaker closed",
                    metrics=metrics,
                    run_id=run_id,
                )
            causes = ([f"cycle failed: {health.failure}"] if not health.ok else []) + [
                c.detail for c in fired
            ]
            return self._system_move(
                snap,
                at,
                BreakerEvent.PROBE_FAILURE,
                reason=f"half-open probe {run_id} failed: " + "; ".join(causes),
                metrics=metrics,
                run_id=run_id,
            )
        return None

    def trip(
        self,
        reason: str,
        actor: str,
        *,
        now: datetime | None = None,
        trigger: str | None = None,
        run_by: str | None = None,
    ) -> Transition:
        """Open the breaker (from any state; restarts the cool-down). Audited; `trigger` names
        a system cause other than a person (e.g. data_quality for a corrupt store)."""
        return self._manual(
            BreakerEvent.MANUAL_TRIP, reason, actor, now, trigger=trigger, run_by=run_by
        )

    def halt(
        self,
        reason: str,
        actor: str,
        *,
        exits: bool = True,
        now: datetime | None = None,
        run_by: str | None = None,
    ) -> Transition:
        """A person's emergency stop (from any state): no entries; exits only when `exits`.
        Unlike a trip it never closes by itself: no cool-down, no probe, restarts and
        later cycles keep it; only `reset` by a person lifts it. Audited."""
        return self._manual(
            BreakerEvent.MANUAL_HALT, reason, actor, now, run_by=run_by,
            extra={"exits_allowed": bool(exits)},
        )  # fmt: skip

    def reset(
        self, reason: str, actor: str, *, now: datetime | None = None, run_by: str | None = None
    ) -> Transition:
        """Manually close the breaker (from any state; restarts the trip counts). Audited.
        `actor` is who the caller says it is; `run_by`, recorded beside it in the
        transition's metrics, is who really ran it as far as the caller can tell (the OS
        user and host of the CLI, the Prefect flow run and its creator)."""
        return self._manual(BreakerEvent.MANUAL_RESET, reason, actor, now, run_by=run_by)

    def state(self) -> BreakerState:
        """The current state; raises BreakerUnavailable if it cannot be read."""
        return self._snapshot(strict=True).state

    def status(self, limit: int = 10) -> BreakerStatus:
        """Current state with its reason and the last `limit` transitions (oldest first)."""
        snap = self._snapshot(strict=True)
        frame = self._log().tail(limit)
        transitions = tuple(Transition.from_row(r) for r in frame.iter_rows(named=True))
        last = snap.last
        cooldown_until = None
        if snap.state is BreakerState.OPEN and last is not None:
            cooldown_until = last.ts + timedelta(minutes=self.settings.cooldown_minutes)
        probe = last.run_id if snap.state is BreakerState.HALF_OPEN and last else None
        return BreakerStatus(
            state=snap.state,
            since=snap.since,
            reason=last.reason if last else "never tripped",
            trigger=last.trigger if last else "",
            actor=last.actor if last else "",
            reducing_mode=self.settings.reducing_mode,
            cooldown_until=cooldown_until,
            probe_run_id=probe,
            transitions=transitions,
        )

    # -- gate logic ----------------------------------------------------------------------
    def _gate(
        self, snap: _Snapshot, now: datetime, run_id: str | None, *, allow_transition: bool
    ) -> Gate:
        if snap.state is BreakerState.CLOSED:
            return Gate(GateMode.NORMAL, snap.state, "breaker CLOSED", snap.since)
        assert snap.last is not None  # a non-CLOSED state always has a transition
        last = snap.last

        if snap.state is BreakerState.HALTED:
            exits = "exits still run" if last.halt_allows_exits else "nothing trades"
            return Gate(
                _halt_mode(last),
                snap.state,
                f"HALTED since {last.ts:%Y-%m-%d %H:%M:%S}Z by {last.actor}: {last.reason}; "
                f"{exits} until a person runs `v6 breaker reset`",
                snap.since,
            )

        if snap.state is BreakerState.OPEN:
            cooldown = timedelta(minutes=self.settings.cooldown_minutes)
            until = last.ts + cooldown
            if now >= until and allow_transition:
                t = self._move(
                    snap,
                    now,
                    BreakerEvent.COOLDOWN_ELAPSED,
                    reason=(
                        f"cool-down of {self.settings.cooldown_minutes} min since "
                        f"{last.ts:%Y-%m-%d %H:%M:%S}Z elapsed; probe run "
                        f"{run_id or '(unnamed)'} with entries disabled"
                    ),
                    metrics={"opened_at": last.ts.isoformat(), "open_reason": last.reason},
                    actor=SYSTEM_ACTOR,
                    run_id=run_id,
                )
                if t is not None:
                    return Gate(GateMode.HALF_OPEN_PROBE, t.to_state, t.reason, t.ts, t)
                # Another run moved the state first: decide on what it wrote, without
                # transitioning again (only one probe per cool-down).
                return self._gate(self._snapshot(strict=True), now, run_id, allow_transition=False)
            return self._open_gate(
                snap,
                f"breaker OPEN since {last.ts:%Y-%m-%d %H:%M:%S}Z: {last.reason}; "
                f"cool-down until {until:%Y-%m-%d %H:%M:%S}Z",
            )

        # HALF_OPEN
        if last.run_id is not None and run_id == last.run_id:
            return Gate(GateMode.HALF_OPEN_PROBE, snap.state, last.reason, last.ts)
        timeout = timedelta(minutes=self.settings.probe_timeout_minutes)
        if now - last.ts >= timeout and allow_transition:
            t = self._move(
                snap,
                now,
                BreakerEvent.PROBE_TIMEOUT,
                reason=(
                    f"half-open probe {last.run_id or '(unnamed)'} did not report within "
                    f"{self.settings.probe_timeout_minutes} min; counted as failed"
                ),
                metrics={"probe_started": last.ts.isoformat()},
                actor=SYSTEM_ACTOR,
                run_id=run_id,
            )
            snap = self._snapshot(strict=True)
            return (
                self._gate(snap, now, run_id, allow_transition=False)
                if t is None
                else (self._open_gate(snap, f"breaker OPEN: {t.reason}"))
            )
        return self._open_gate(
            snap,
            f"half-open probe {last.run_id or '(unnamed)'} in progress since "
            f"{last.ts:%Y-%m-%d %H:%M:%S}Z",
        )

    def _open_gate(self, snap: _Snapshot, reason: str) -> Gate:
        mode = GateMode.EXITS_ONLY if self.settings.reducing_mode else GateMode.OPEN_BLOCKED
        return Gate(mode, snap.state, reason, snap.since)

    def _cycle_mode(self, snap: _Snapshot, run_id: str) -> GateMode:
        """The mode the recording run ran under, inferred from the durable state."""
        if snap.state is BreakerState.CLOSED:
            return GateMode.NORMAL
        last = snap.last
        if snap.state is BreakerState.HALTED and last is not None:
            return _halt_mode(last)
        if (
            snap.state is BreakerState.HALF_OPEN
            and last is not None
            and (last.run_id is None or last.run_id == run_id)
        ):
            return GateMode.HALF_OPEN_PROBE
        return GateMode.EXITS_ONLY if self.settings.reducing_mode else GateMode.OPEN_BLOCKED

    # -- manual --------------------------------------------------------------------------
    def _manual(
        self,
        event: BreakerEvent,
        reason: str,
        actor: str,
        now: datetime | None,
        *,
        trigger: str | None = None,
        run_by: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Transition:
        trigger = trigger or event.value
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError(
                f"{trigger}: a reason is required (got {reason!r}); say why, it is audited"
            )
        if not isinstance(actor, str) or not actor.strip():
            raise ValueError(f"{trigger}: actor is required (got {actor!r}); give your name")
        at = self._now(now)
        for _ in range(_WRITE_ATTEMPTS):
            snap = self._snapshot(strict=False)
            t = self._move(
                snap,
                at,
                event,
                reason=reason.strip(),
                metrics={"previous_state": snap.state.value}
                | ({"run_by": run_by} if run_by else {})
                | dict(extra or {}),
                actor=actor.strip(),
                run_id=None,
                trigger=trigger,
            )
            if t is not None:
                return t
        raise BreakerUnavailable(
            f"{trigger}: lost the race for the next transition {_WRITE_ATTEMPTS} times; retry"
        )

    # -- storage -------------------------------------------------------------------------
    def _system_move(
        self,
        snap: _Snapshot,
        now: datetime,
        event: BreakerEvent,
        *,
        reason: str,
        metrics: dict[str, Any],
        run_id: str,
        trigger: str | None = None,
    ) -> Transition | None:
        """A move decided by a recorded cycle; losing the race to another writer is logged."""
        t = self._move(
            snap,
            now,
            event,
            reason=reason,
            metrics=metrics,
            actor=SYSTEM_ACTOR,
            run_id=run_id,
            trigger=trigger,
        )
        if t is None:
            log.warning(
                "breaker: %s in %s not recorded, another writer moved first", event, snap.state
            )
        return t

    def _move(
        self,
        snap: _Snapshot,
        now: datetime,
        event: BreakerEvent,
        *,
        reason: str,
        metrics: dict[str, Any],
        actor: str,
        run_id: str | None,
        trigger: str | None = None,
    ) -> Transition | None:
        """Apply `event` to `snap` through `MOVES` (IllegalTransition if refused) and record
        it; `trigger` overrides the recorded trigger (a trip names its conditions)."""
        move = next_move(snap.state, event)
        t = self._write(
            snap,
            now,
            move.to,
            reason=reason,
            trigger=trigger or event.value,
            metrics=metrics,
            actor=actor,
            run_id=run_id,
        )
        if t is not None:
            log.warning(
                "breaker %s -> %s by %s (%s): %s", t.from_state, t.to_state, actor, move.action,
                reason,
            )  # fmt: skip
        return t

    def _write(
        self,
        snap: _Snapshot,
        now: datetime,
        to: BreakerState,
        *,
        reason: str,
        trigger: str,
        metrics: dict[str, Any],
        actor: str,
        run_id: str | None,
    ) -> Transition | None:
        """Insert transition `snap.next_seq`; None if that seq was taken meanwhile."""
        t = Transition(
            seq=snap.next_seq,
            ts=now,
            from_state=snap.state,
            to_state=to,
            reason=reason,
            trigger=trigger,
            metrics=metrics,
            actor=actor,
            run_id=run_id,
        )
        result = self.store.merge(STATE_TABLE, t.to_frame(), update=False)
        return t if result.rows_inserted else None

    def _log(self) -> pl.DataFrame:
        """The whole transition log, by seq (small: transitions are rare)."""
        uri = self.store.uri(STATE_TABLE)
        try:
            if not self.store.exists(STATE_TABLE):
                local = Path(uri)
                if "://" not in uri and local.exists() and any(local.iterdir()):
                    raise BreakerUnavailable(
                        f"{uri} exists but is not a readable Delta table (missing or broken "
                        "_delta_log); restore it from backup, nothing trades until then"
                    )
                return self.store.spec(STATE_TABLE).empty()
            return self.store.read(STATE_TABLE).collect().sort("seq", maintain_order=True)
        except BreakerUnavailable:
            raise
        except Exception as exc:
            first_line = (str(exc).strip().splitlines() or [""])[0]
            raise BreakerUnavailable(
                f"cannot read {STATE_TABLE} at {uri}: {type(exc).__name__}: {first_line}"
            ) from exc

    def _snapshot(self, *, strict: bool) -> _Snapshot:
        frame = self._log()
        if frame.is_empty():
            return _Snapshot(BreakerState.CLOSED, None, None, 0)
        try:
            tail = frame.filter(pl.col("seq") == pl.col("seq").max())
            last = Transition.from_row(tail.row(tail.height - 1, named=True))
        except (ValueError, KeyError, TypeError) as exc:
            raise BreakerUnavailable(
                f"{STATE_TABLE}: last transition is unreadable: {exc}"
            ) from exc
        problem = None
        if tail.height > 1:
            problem = (
                f"{STATE_TABLE}: {tail.height} transitions share seq {last.seq}; the state is "
                "ambiguous. Inspect the log, then reset or trip the breaker manually"
            )
        closed = frame.filter(pl.col("to_state") == BreakerState.CLOSED.value)
        closed_since = closed.get_column("ts").max() if not closed.is_empty() else None
        snap = _Snapshot(last.to_state, last, closed_since, last.seq + 1, problem)  # type: ignore[arg-type]
        if strict and problem is not None:
            raise BreakerUnavailable(problem)
        return snap

    def _normal_cycles_since(
        self, since: datetime | None, exclude_run: str, now: datetime
    ) -> pl.DataFrame:
        """NORMAL-mode cycles recorded since the breaker last closed (not this run's row)."""
        cond = (
            (pl.col("mode") == GateMode.NORMAL.value)
            & (pl.col("run_id") != exclude_run)
            & (pl.col("ts") <= now)
        )
        if since is not None:
            cond = cond & (pl.col("ts") >= since)
        return self.store.read(HEALTH_TABLE, where=cond).collect()

    def _now(self, now: datetime | None) -> datetime:
        at = self.clock.now() if now is None else now
        if at.tzinfo is None or at.utcoffset() != timedelta(0):
            raise ValueError(f"now must be a tz-aware UTC datetime, got {at!r}")
        return at.astimezone(UTC)


def _halt_mode(halt: Transition) -> GateMode:
    """A halt ignores `reducing_mode`: the person who halted said whether exits run."""
    return GateMode.EXITS_ONLY if halt.halt_allows_exits else GateMode.OPEN_BLOCKED


def _none_if_nan(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _json_safe(value: Any) -> Any:
    """NaN/inf are not JSON: store them as null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value
