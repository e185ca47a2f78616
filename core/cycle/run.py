"""One trading cycle, composed once for every caller: the Prefect flow, backtests, chaos runs.

`run_cycle(ctx, wrap=...)`: reconcile -> market data -> exit rules -> exits -> (unless
entries are off) entry candidates -> entries -> summary. The first step that raises stops
the cycle (no new risk after a failure; exits problems also stop entries); so does a
reconciliation that found broker reports it cannot trust (no order of any kind); the
summary still runs so the report says what the cycle saw.

`run_trading_cycle(runtime, run_id, wrap=...)` puts the circuit breaker around it:
store check (a table V6 wrote that is lost or rolled back: StoreCorrupt, the breaker
tripped -- or, when `risk_state` itself is the broken table, BreakerUnavailable -- and
the broker never touched) -> gate -> (nothing more if the gate forbids the broker: no
connection is made) -> one broker connection for the run (always disconnected) ->
`run_cycle` -> record the cycle's health -> the run's outcome (`RunOutcome`: Completed,
CircuitTripped, CircuitOpen, ExitsOnly, HalfOpenProbe, BreakerUnavailable, StoreCorrupt,
BrokerUnavailable, Failed). The flow maps that outcome onto its final state.
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass
from typing import Any

from polars.exceptions import PanicException

from core.cycle.context import CycleContext, Wrap, identity
from core.cycle.market import MarketView
from core.cycle.report import CycleReport, EntriesStep, ExitsStep, all_results
from core.cycle.steps import (
    entry_candidates,
    execute_entries,
    execute_exits,
    exit_rules,
    market_data,
    reconcile_step,
    summarise,
)
from core.execution.ladder import Waiter
from core.execution.results import ExecStatus
from core.reconcile import BOOK_TABLES
from core.risk.breaker import (
    BREAKER_UNAVAILABLE,
    STATE_TABLE,
    SYSTEM_ACTOR,
    Breaker,
    BreakerState,
    BreakerUnavailable,
    CycleHealth,
    Gate,
    GateMode,
    OutcomeType,
    RunOutcome,
    Transition,
    run_outcome,
)
from core.runtime import Runtime
from core.store import StoreCorrupt

log = logging.getLogger(f"v6.{__name__}")

# A Rust panic inside polars/deltalake surfaces as pyo3's PanicException, a BaseException:
# `except Exception` would let it kill the process instead of failing (and counting) the cycle.
STEP_ERRORS: tuple[type[BaseException], ...] = (Exception, PanicException)

STORE_CORRUPT = "StoreCorrupt"  # the outcome of a run that found a lost/rolled-back table
# the outcome of a run that could not reach IB inside the planned-outage window (IB's
# nightly reset, the gateway's scheduled restart): the next run retries, the breaker is
# not told (outside the window the same failure counts like any other)
BROKER_UNAVAILABLE = "BrokerUnavailable"

# Step names: the flow's task names, and the keys of its retry policy.
GATE = "breaker-gate"
RECONCILE = "reconcile"
MARKET_DATA = "market-data"
EXIT_RULES = "exit-rules"
EXECUTE_EXITS = "execute-exits"
ENTRY_CANDIDATES = "entry-candidates"
EXECUTE_ENTRIES = "execute-entries"
SUMMARISE = "summarise"
RECORD = "breaker-record-cycle"
READ_ONLY_STEPS = frozenset({RECONCILE, MARKET_DATA, EXIT_RULES, ENTRY_CANDIDATES, SUMMARISE})
ORDER_STEPS = frozenset({EXECUTE_EXITS, EXECUTE_ENTRIES})


async def run_cycle(ctx: CycleContext, *, wrap: Wrap = identity) -> CycleReport:
    """Run one cycle over a context whose gate allows the broker (see the module doc).

    The book's tables are read once per version within the cycle (`cached_reads`): the
    executor reads them before every order, and most reads find nothing changed."""
    if not ctx.gate.broker_allowed:
        raise ValueError(
            f"run_cycle: the gate ({ctx.gate.mode.value}) forbids touching the broker; "
            "check gate.broker_allowed first (run_trading_cycle does)"
        )
    with ctx.store.cached_reads(BOOK_TABLES):
        return await _run_cycle(ctx, wrap)


async def _run_cycle(ctx: CycleContext, wrap: Wrap) -> CycleReport:
    report = CycleReport(ctx.run_id, ctx.gate.mode, ctx.clock.now(), ctx.exits_only)
    current = RECONCILE
    try:
        report.steps.append(current)
        report.reconcile = await wrap(RECONCILE, reconcile_step)(ctx)
        suspect = report.reconcile.result.suspect_reports
        if suspect:  # the broker's own report is wrong or incomplete: act on none of it
            raise CycleStepError(
                f"{suspect} broker report(s) V6 cannot trust (an absurd number, or a position "
                "gone with nothing to explain it), so no orders: see reconciliation_breaks"
            )
        current = MARKET_DATA
        report.steps.append(current)
        view: MarketView = await wrap(MARKET_DATA, market_data)(ctx)
        report.market = view
        if ctx.gate.exits_allowed:
            current = EXIT_RULES
            report.steps.append(current)
            report.rules = await wrap(EXIT_RULES, exit_rules)(ctx, view)
            if report.rules.actionable or report.reconcile.pending:
                current = EXECUTE_EXITS
                report.steps.append(current)
                report.exits = await wrap(EXECUTE_EXITS, execute_exits)(ctx, report.rules, view)
            else:
                report.exits = ExitsStep()  # nothing to close, nothing left to settle
            problems = report.exits.problems
            if problems:
                raise CycleStepError(
                    f"{len(problems)} exit(s) could not be worked, so no entries: "
                    + "; ".join(problems[:3])
                )
        delayed_refused = view.delayed and not ctx.settings.broker.allow_entries_on_delayed_data
        if ctx.entries_allowed and delayed_refused:
            report.entries_skipped = (
                f"{view.data_note}: entries refused on delayed data (exits are worked at "
                "natural); subscribe to real-time market data, or set "
                "broker.allow_entries_on_delayed_data = true"
            )
            log.warning("cycle %s: %s", ctx.run_id, report.entries_skipped)
        elif ctx.entries_allowed and report.reconcile.unresolved_breaks:
            report.entries_skipped = (
                f"{report.reconcile.unresolved_breaks} unresolved reconciliation break(s): "
                "no new risk on a book that disagrees with the broker"
            )
            log.warning("cycle %s: %s", ctx.run_id, report.entries_skipped)
        elif ctx.entries_allowed:
            current = ENTRY_CANDIDATES
            report.steps.append(current)
            report.plan = await wrap(ENTRY_CANDIDATES, entry_candidates)(
                ctx, view, report.reconcile
            )
            if report.plan.plan is not None and report.plan.plan.accepted:
                current = EXECUTE_ENTRIES
                report.steps.append(current)
                report.entries = await wrap(EXECUTE_ENTRIES, execute_entries)(
                    ctx, report.plan, view
                )
            else:
                report.entries = EntriesStep()
    except STEP_ERRORS as exc:  # the cycle fails; the breaker counts it
        report.fail(current, exc)
    report.disconnected_s = ctx.broker.disconnected_s()
    try:
        report.steps.append(SUMMARISE)
        report.summary = await wrap(SUMMARISE, summarise)(ctx, report)
    except STEP_ERRORS as exc:
        if report.failure is None:
            report.fail(SUMMARISE, exc)
        else:
            log.warning("cycle %s: summary failed too: %s", ctx.run_id, exc)
    report.finished_at = ctx.clock.now()
    return report


class CycleStepError(RuntimeError):
    """A step finished but left the cycle unable to continue safely."""


@dataclass(frozen=True)
class CycleRun:
    """A cycle with its breaker verdict. `report` is None when the gate forbade the broker."""

    run_id: str
    gate: Gate
    outcome: RunOutcome
    report: CycleReport | None = None
    health: CycleHealth | None = None
    transition: Transition | None = None

    def summary(self) -> dict[str, Any]:
        """Small plain data for the flow's return value and logs."""
        out: dict[str, Any] = {
            "run_id": self.run_id,
            "outcome": self.outcome.name,
            "message": self.outcome.message,
            "gate": self.gate.mode.value,
            "breaker": self.gate.state.value if self.gate.state else None,
        }
        if self.transition is not None:
            out["transition"] = f"{self.transition.from_state} -> {self.transition.to_state}"
        if self.report is not None:
            r = self.report
            results = all_results(r)
            out |= {
                "steps": list(r.steps),
                "failure": r.failure,
                "entries_skipped": r.entries_skipped,
                "market_data": "live"
                if r.market is None or not r.market.data_note
                else r.market.data_note,
                "decisions": 0 if r.rules is None else r.rules.decisions.height,
                "no_data": 0 if r.rules is None else r.rules.no_data,
                "exits": 0 if r.exits is None else len(r.exits.orders),
                "entries": 0 if r.entries is None else len(r.entries.results),
                # entries refused before anything was sent (hard caps, what-if margin)
                "entries_blocked": []
                if r.entries is None
                else [
                    f"{x.strategy_id}: {x.message}"
                    for x in r.entries.results
                    if x.status is ExecStatus.BLOCKED
                ],
                "filled": sum(1 for x in results if x.filled > 0),
                "orders": sum(len(x.attempts) for x in results),
                "clock_skew_s": None
                if r.reconcile is None or math.isnan(r.reconcile.clock_skew_s)
                else round(r.reconcile.clock_skew_s, 3),
            }
        if self.health is not None:
            h = self.health
            out |= {
                "daily_pnl": None if math.isnan(h.daily_pnl) else h.daily_pnl,
                "net_liq": None if math.isnan(h.net_liq) else h.net_liq,
                "rejections": h.rejections,
                "unresolved_breaks": h.unresolved_breaks,
                "disconnected_s": round(h.disconnected_s, 3),
            }
        return out


async def breaker_gate(rt: Runtime, run_id: str) -> Gate:
    """Never raises: an unreadable state gives a FAIL_CLOSED gate (nothing trades)."""
    return Breaker(rt.store, rt.settings.breaker, rt.clock).gate(run_id=run_id)


async def breaker_record(rt: Runtime, health: CycleHealth, run_id: str) -> Transition | None:
    return Breaker(rt.store, rt.settings.breaker, rt.clock).record_cycle(health, run_id=run_id)


async def run_trading_cycle(
    rt: Runtime,
    run_id: str | None = None,
    *,
    wrap: Wrap = identity,
    exits_only: bool = False,
    wait: Waiter | None = None,
) -> CycleRun:
    """Gate, one cycle on one broker connection, record, verdict (see the module doc)."""
    run_id = run_id or f"cycle-{uuid.uuid4().hex[:12]}"
    corrupt = rt.store.check_tables()
    if corrupt:
        return _store_corrupt(rt, run_id, corrupt)
    gate: Gate = await wrap(GATE, breaker_gate)(rt, run_id)
    if not gate.broker_allowed:
        log.warning("cycle %s: %s (%s); broker not touched", run_id, gate.mode.value, gate.reason)
        return CycleRun(run_id, gate, run_outcome(gate))
    ctx = CycleContext.create(
        rt.settings, rt.store, rt.clock, rt.new_broker(), run_id, gate,
        exits_only=exits_only, wait=wait,
    )  # fmt: skip
    try:
        report = await run_cycle(ctx, wrap=wrap)
    finally:
        await _disconnect(ctx)
    health = report.health()
    planned = rt.settings.broker
    if report.broker_unreachable and planned.in_planned_outage(report.started_at):
        message = (
            f"IB unreachable inside the planned outage window "
            f"{planned.planned_outage_start:%H:%M}-{planned.planned_outage_end:%H:%M} "
            f"New York (IB's nightly reset / the gateway's restart): {report.failure}; "
            "the next run retries; the breaker is not told"
        )
        log.warning("cycle %s: %s", run_id, message)
        outcome = RunOutcome(OutcomeType.COMPLETED, BROKER_UNAVAILABLE, message)
        return CycleRun(run_id, gate, outcome, report)  # no health: the breaker was not told
    try:
        transition: Transition | None = await wrap(RECORD, breaker_record)(rt, health, run_id)
    except BreakerUnavailable as exc:
        outcome = RunOutcome(
            OutcomeType.FAILED, BREAKER_UNAVAILABLE, f"cycle ran but could not be recorded: {exc}"
        )
        return CycleRun(run_id, gate, outcome, report, health)
    return CycleRun(
        run_id, gate, run_outcome(gate, transition, error=report.failure), report, health,
        transition,
    )  # fmt: skip


def _store_corrupt(rt: Runtime, run_id: str, corrupt: list[StoreCorrupt]) -> CycleRun:
    """Fail closed on lost state without touching the broker: trip the breaker (trigger
    data_quality) unless `risk_state` itself is broken, which leaves it unwritable."""
    message = str(corrupt[0]) + (f" (and {len(corrupt) - 1} more)" if len(corrupt) > 1 else "")
    log.error("cycle %s: %s; broker not touched", run_id, message)
    gate = Gate(GateMode.FAIL_CLOSED, None, message)
    if any(c.table == STATE_TABLE for c in corrupt):
        return CycleRun(run_id, gate, RunOutcome(OutcomeType.FAILED, BREAKER_UNAVAILABLE, message))
    breaker = Breaker(rt.store, rt.settings.breaker, rt.clock)
    try:
        transition = (
            None
            if breaker.state() in (BreakerState.OPEN, BreakerState.HALTED)
            else breaker.trip(message, SYSTEM_ACTOR, trigger="data_quality")
        )
    except BreakerUnavailable as exc:
        message = f"{message}; the breaker could not be tripped: {exc}"
        return CycleRun(run_id, gate, RunOutcome(OutcomeType.FAILED, BREAKER_UNAVAILABLE, message))
    if transition is not None:
        message += "; breaker tripped (data_quality)"
    outcome = RunOutcome(OutcomeType.FAILED, STORE_CORRUPT, message)
    return CycleRun(run_id, gate, outcome, transition=transition)


async def _disconnect(ctx: CycleContext) -> None:
    try:
        await ctx.broker.disconnect()
    except Exception:
        log.warning("cycle %s: disconnect failed", ctx.run_id, exc_info=True)


__all__ = [
    "BROKER_UNAVAILABLE",
    "EXECUTE_ENTRIES",
    "EXECUTE_EXITS",
    "ORDER_STEPS",
    "READ_ONLY_STEPS",
    "STORE_CORRUPT",
    "CycleRun",
    "CycleStepError",
    "breaker_gate",
    "breaker_record",
    "run_cycle",
    "run_trading_cycle",
]
