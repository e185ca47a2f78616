"""Flatten: close every open strategy now, as combo orders bounded by the natural price.

The order of things is what makes it safe to run in a hurry:
1. a sticky halt (exits allowed) is recorded first, so no cycle opens anything new while
   or after the book is flattened (only a person's `v6 breaker reset` re-opens trading);
2. the home's cycle lease is taken, so no trading cycle works the same strategies at the
   same time (a cycle holding it makes flatten stand down and say which run has it);
3. one broker connection: the book is reconciled against the broker, interrupted orders
   are settled (`resume_pending`), then each OPEN strategy is closed through the executor's
   price ladder (mid toward natural, never beyond: `ComboExecutor.execute_exit`).
Every order goes through the ladder's intents (written before sending, keyed by orderRef),
so the audit trail is the same as a cycle's: `order_intents`, `orders`, `fills`, and the
halt's transition in `risk_state` says who asked and why.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta

from core.cycle.context import CycleContext
from core.cycle.lease import hold_cycle_lease
from core.cycle.steps import reconcile_step
from core.domain.strategies import IntentPurpose, StrategyStatus
from core.execution.ladder import Waiter
from core.execution.results import ExecStatus, ExecutionResult
from core.risk.breaker import Breaker, Gate, GateMode, Transition
from core.runtime import Runtime

log = logging.getLogger(f"v6.{__name__}")

CLOSED_OK = frozenset({ExecStatus.FILLED, ExecStatus.ALREADY_DONE})


@dataclass(frozen=True, slots=True)
class StrategyClose:
    strategy_id: str
    result: ExecutionResult | None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.result is not None and self.result.status in CLOSED_OK

    def line(self) -> str:
        if self.result is None:
            return f"{self.strategy_id}: NOT closed: {self.error}"
        r = self.result
        prices = ", ".join(f"{a.order_ref} @ {a.limit_price:.2f}" for a in r.attempts) or "-"
        tail = f" ({r.message})" if r.message else ""
        return f"{self.strategy_id}: {r.status.value}, {r.filled} unit(s); orders {prices}{tail}"


@dataclass(frozen=True, slots=True)
class FlattenReport:
    halt: Transition
    run_id: str
    busy: str | None  # the run holding the cycle lease, when flatten had to stand down
    breaks: int  # reconciliation breaks found before closing
    closes: tuple[StrategyClose, ...]

    @property
    def ok(self) -> bool:
        return self.busy is None and all(c.ok for c in self.closes)

    def lines(self) -> list[str]:
        exits = "exits allowed" if self.halt.halt_allows_exits else "no exits"
        out = [f"halted ({exits}) by {self.halt.actor}: {self.halt.reason}"]
        if self.busy is not None:
            out.append(f"NOT flattened: {self.busy}; retry when it ends (the halt stays)")
            return out
        if self.breaks:
            out.append(f"{self.breaks} reconciliation break(s) recorded before closing")
        out += [c.line() for c in self.closes]
        if not self.closes:
            out.append("no open strategies in the book")
        return out


async def flatten_all(
    rt: Runtime,
    *,
    reason: str,
    actor: str,
    run_by: str | None = None,
    wait: Waiter | None = None,
    run_id: str | None = None,
) -> FlattenReport:
    """Halt (exits allowed), then close every OPEN strategy; see the module doc."""
    run_id = run_id or f"flatten-{uuid.uuid4().hex[:12]}"
    breaker = Breaker(rt.store, rt.settings.breaker, rt.clock)
    halt = breaker.halt(f"flatten: {reason}", actor, exits=True, run_by=run_by)
    ttl = timedelta(seconds=rt.settings.cycle.lease_ttl_s)
    async with hold_cycle_lease(rt.store, run_id, ttl) as busy:
        if busy is not None:
            return FlattenReport(halt, run_id, busy.skip().message, 0, ())
        gate = Gate(GateMode.EXITS_ONLY, halt.to_state, halt.reason, halt.ts)
        ctx = CycleContext.create(
            rt.settings, rt.store, rt.clock, rt.new_broker(), run_id, gate,
            exits_only=True, wait=wait,
        )  # fmt: skip
        try:
            rec = await reconcile_step(ctx)
            ex = ctx.executor()
            await ex.resume_pending()
            open_ids = (
                ctx.book()
                .strategies(status=[StrategyStatus.OPEN.value])
                .sort("strategy_id")
                .get_column("strategy_id")
                .to_list()
            )
            closes = [await _close(ctx, str(sid)) for sid in open_ids]
        finally:
            try:
                await ctx.broker.disconnect()
            except Exception:
                log.warning("flatten %s: disconnect failed", run_id, exc_info=True)
    breaks = rec.result.breaks.height
    report = FlattenReport(halt, run_id, None, breaks, tuple(closes))
    for line in report.lines():
        log.warning("flatten %s: %s", run_id, line)
    return report


async def _close(ctx: CycleContext, strategy_id: str) -> StrategyClose:
    """One strategy's close; its failure must not stop the others'."""
    try:
        res = await ctx.executor().execute_exit(strategy_id, purpose=IntentPurpose.CLOSE)
    except Exception as exc:
        log.exception("flatten: close of %s failed", strategy_id)
        return StrategyClose(strategy_id, None, f"{type(exc).__name__}: {exc}")
    return StrategyClose(strategy_id, res)
