"""Transactional execution of multi-leg strategies as one combo (BAG) order.

A strategy is either fully on or not on at all, and nothing is ever sent twice:

1. The strategy and its legs are in the book (PENDING) before any order exists.
2. Every order attempt gets a deterministic orderRef `v6:{strategy}:{seq}:combo`, and its
   intent is written before it is sent (`intents.record_intent`).
3. The order is one BAG limit order: all legs fill together or not at all. The first
   limit is the mid; if it does not fill within its share of `fill_timeout_s`
   (fill_timeout_s / (reprice_steps + 1)) it is cancelled (and the cancel confirmed) and
   the remainder goes out under a new ref one step closer to natural, for
   `reprice_steps` steps (`ladder`). Never beyond natural; an entry (a credit at mid)
   never reprices into a debit nor below `min_credit_to_width` x width of credit; a roll
   never pays more than its `max_debit`. Exits are bounded by natural only (getting out
   matters).
4. Partial fills (fewer combo units than asked) are recorded; the remainder follows
   `partial_fill_policy`: "complete" keeps working it to natural, then keeps what filled
   (strategy quantity set to it, with a note); "unwind" closes the filled units.
5. A call that starts with intents already in the book (a retry after a disconnect or
   crash) first asks the broker for each unfinished ref (`Broker.find_order`) and settles
   it; only then does anything new go out. A ref the broker has is never placed again.
6. `check_hard_caps` runs right before every placement, with today's executed usage
   (`intents.sent_today`) and the account's net liquidation the caller read (the
   max-loss caps scale with it; unknown net liquidation refuses every risk-adding order).
   Before an entry's first order of a call, the broker's what-if margin for that exact
   order must keep post-trade initial margin within `limits.max_margin_pct` of net
   liquidation (`core.risk.margin`); unknown is refused (BLOCKED, with the reason).
   Exits and rolls never ask: refusing them would leave more risk on.
7. Orders and fills go to the book when each ladder step settles (`Book.record_fills`,
   then `Book.record_order`); predictions are written when an entry fills.

What is durable when (each line one Delta commit per table, in this order):

- before anything is sent: the strategy and its legs (PENDING), once per entry;
- before each order is sent: its intent (`order_intents`, keyed by the orderRef);
- when a step settles (filled, or cancelled and the cancel confirmed): its fills, with
  the legs and strategy they open on an entry's first fill, then the order's final state
  (`orders`); a rejected order, or one whose cancel is unconfirmed, is written then;
- when the entry ends: its predictions, and the strategy's final quantity or status.

A crash after an intent and before its step settles leaves the intent: the next call
asks the broker for that ref (`resume`, point 5) and books what it finds, and
reconciliation records any V6 order or fill the book lacks. No order state is needed
for that, so in-flight states (Submitted, a partial fill) are never written.

A roll is one BAG holding the closing legs of the old position and the opening legs of
the new one, so it also fills all-or-nothing; it keeps the strategy id (the new legs are
added to the strategy, the old ones close), which is what lets reconciliation attribute
every fill of the roll order to the right leg.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from datetime import datetime

import polars as pl

from core.book.ledger import Book, TableStore
from core.broker.base import Broker, BrokerError
from core.clock import Clock, SimClock
from core.config import Settings
from core.domain.strategies import IntentPurpose, LegSpec, Origin, StrategyStatus
from core.execution.holdings import (
    ENTRY_PURPOSES,
    booked_legs,
    delivered_stock,
    entry_credit,
    entry_units,
    held_units,
    holding,
)
from core.execution.intents import (
    append_legs,
    close_unfilled_legs,
    set_strategy_quantity,
    strategy_intents,
    strategy_row,
)
from core.execution.ladder import (
    CancelUnconfirmed,
    ComboJob,
    Ladder,
    Waiter,
    real_wait,
    sim_waiter,
)
from core.execution.results import ExecStatus, ExecutionResult, Progress
from core.strategy.candidates import Candidate
from core.strategy.predictions import record_predictions

log = logging.getLogger(f"v6.{__name__}")

EXIT_PURPOSES = (
    IntentPurpose.CLOSE,
    IntentPurpose.REDUCE,
    IntentPurpose.ROLL,
    IntentPurpose.ADJUST,
)


class ComboExecutor:
    """Entries, exits and rolls as combo orders (see the module doc for the guarantees)."""

    def __init__(
        self,
        broker: Broker,
        store: TableStore,
        clock: Clock,
        settings: Settings,
        *,
        net_liquidation: float,
        wait: Waiter | None = None,
        account: str = "",
    ) -> None:
        self.broker = broker
        self.store = store
        self.clock = clock
        self.settings = settings
        self.net_liquidation = net_liquidation
        self.book = Book(store, clock, account)
        if wait is None:
            wait = sim_waiter(clock) if isinstance(clock, SimClock) else real_wait
        self._ladder = Ladder(broker, self.book, clock, settings, wait, net_liquidation)

    # ------------------------------------------------------------------ public API
    async def execute_entry(self, candidate: Candidate) -> ExecutionResult:
        """Open `candidate` as one combo: fully, or not at all (see partial_fill_policy)."""
        st = self.settings.strategies
        sid = self.book.open_strategy(
            candidate.strategy_type,
            candidate.underlying,
            candidate.leg_specs(),
            quantity=candidate.quantity,
            nonce=candidate.nonce,
            note=candidate.describe(),
        )
        if sid != candidate.strategy_id:  # decided yesterday (UTC), sent today: new id
            candidate = replace(candidate, strategy_id=sid)
        row = strategy_row(self.store, sid)
        assert row is not None
        if row["status"] in (StrategyStatus.CLOSED.value, StrategyStatus.CANCELLED.value):
            return ExecutionResult.already_done(
                Progress(),
                strategy_id=sid,
                purpose=IntentPurpose.OPEN,
                reason=f"strategy {sid} is already {row['status']}",
            )
        target = int(row["quantity"])  # type: ignore[call-overload]
        job = ComboJob(
            strategy_id=sid,
            underlying=candidate.underlying,
            purpose=IntentPurpose.OPEN,
            legs=[(leg.contract, leg.ratio) for leg in candidate.legs],
            target=target,
            min_credit=st.min_credit_to_width * candidate.width,
            margin_check=True,
        )
        progress = Progress()
        try:
            n_prev = await self._ladder.resume(job, progress, ENTRY_PURPOSES)
            held = entry_units(self.book, sid, job.legs)
            if held >= target:
                return await self._finish_entry(candidate, job, progress, held, resumed=True)
            job.target = target - held
            await self._ladder.climb(job, progress, start_step=min(n_prev, self._ladder.steps(job)))
            if (
                progress.status is None
                and st.partial_fill_policy == "complete"
                and 0 < progress.filled < job.target_combos
            ):
                await self._ladder.at_natural(job, progress)
        except (CancelUnconfirmed, BrokerError) as exc:
            return self._cut_short(
                progress,
                strategy_id=sid,
                purpose=job.purpose,
                error=exc,
                requested=job.target,
                combos_per_unit=job.g,
            )
        held = entry_units(self.book, sid, job.legs)
        return await self._finish_entry(candidate, job, progress, held)

    async def execute_exit(
        self,
        strategy_id: str,
        *,
        quantity: int | None = None,
        purpose: IntentPurpose = IntentPurpose.CLOSE,
        urgent: bool = False,
    ) -> ExecutionResult:
        """Close `quantity` units (all when None) of a strategy with one combo.

        `urgent` starts at natural. Exits reduce risk: the daily hard caps do not refuse
        them (the per-order caps still apply). The remainder of a partial exit is always
        worked to natural (getting out is the point).

        Stock that an assignment or exercise delivered into the strategy goes first, all of
        it, as its own stock order (rule `delivered_stock`; with that rule disabled the stock
        is kept and only the options are closed). The option legs follow only once the stock is
        out, so a stock order that does not fill leaves the options for the next cycle
        rather than half the position worked.
        """
        purpose = IntentPurpose(purpose)
        if strategy_row(self.store, strategy_id) is None:
            raise KeyError(f"execute_exit: no strategy {strategy_id!r} in the book")
        progress = Progress()
        try:
            await self._resume_exits(strategy_id, progress)
            if "delivered_stock" not in self.settings.rules.disabled:
                for stock, shares in delivered_stock(self.book, strategy_id):
                    stock_job = ComboJob(
                        strategy_id=strategy_id,
                        underlying=stock.symbol,
                        purpose=purpose,
                        legs=[(stock, -1 if shares > 0 else 1)],
                        target=abs(shares),
                        min_credit=None,
                        urgent=urgent,
                        reduces_risk=True,
                    )
                    stock_progress = Progress()
                    await self._ladder.climb(stock_job, stock_progress, start_step=0)
                    result = self._exit_or_roll_result(stock_job, stock_progress)
                    if result.status is not ExecStatus.FILLED:
                        return result
                    log.info("%s: closed %d delivered %s shares", strategy_id, shares, stock.symbol)
            units, legs, why = holding(self.book, strategy_id)
            if why:
                return ExecutionResult.not_closable(
                    progress, strategy_id=strategy_id, purpose=purpose, reason=why
                )
            if units == 0:
                return ExecutionResult.already_done(
                    progress,
                    strategy_id=strategy_id,
                    purpose=purpose,
                    reason="nothing open to close",
                )
            n = units if quantity is None else min(int(quantity), units)
            if n <= 0:
                raise ValueError(f"execute_exit: quantity must be >= 1, got {quantity}")
            job = ComboJob(
                strategy_id=strategy_id,
                underlying=str(legs[0][0].symbol),
                purpose=purpose,
                legs=[(c, -r) for c, r in legs],
                target=n,
                min_credit=None,
                urgent=urgent,
                reduces_risk=True,
            )
            await self._ladder.climb(job, progress, start_step=0)
            if progress.status is None and 0 < progress.filled < job.target_combos:
                await self._ladder.at_natural(job, progress)
        except (CancelUnconfirmed, BrokerError) as exc:
            return self._cut_short(progress, strategy_id=strategy_id, purpose=purpose, error=exc)
        return self._exit_or_roll_result(job, progress)

    async def execute_roll(
        self, strategy_id: str, candidate: Candidate, *, max_debit: float | None = None
    ) -> ExecutionResult:
        """Move a strategy to `candidate`'s legs in one combo (close old + open new, atomic).

        Keeps the strategy id; the new legs are added to it before the order is sent. The
        roll's net price (debit per unit, negative = credit) walks from mid toward natural
        and never beyond it, nor above `max_debit` (e.g. 0: roll only for a credit; None:
        up to natural, because the exit rules chose to roll to cut risk).
        """
        row = strategy_row(self.store, strategy_id)
        if row is None:
            raise KeyError(f"execute_roll: no strategy {strategy_id!r} in the book")
        if row["underlying"] != candidate.underlying:
            raise ValueError(
                f"execute_roll: {strategy_id} is on {row['underlying']}, the roll target on "
                f"{candidate.underlying}; a roll stays on its underlying"
            )
        roll = IntentPurpose.ROLL
        progress = Progress()
        new_ids = {leg.contract.con_id for leg in candidate.legs}
        try:
            await self._resume_exits(strategy_id, progress)
            units, legs, why = holding(self.book, strategy_id)
            if why:
                return ExecutionResult.not_closable(
                    progress, strategy_id=strategy_id, purpose=roll, reason=why
                )
            if units and {c.con_id for c, _ in legs} == new_ids:
                return ExecutionResult.already_done(
                    progress,
                    strategy_id=strategy_id,
                    purpose=roll,
                    reason="already holds the roll target's legs",
                )
            if units == 0:
                return ExecutionResult.not_closable(
                    progress, strategy_id=strategy_id, purpose=roll, reason="nothing open to roll"
                )
            new_legs = [LegSpec(leg.contract, leg.ratio) for leg in candidate.legs]
            for c, r in legs:
                match = next((x for x in new_legs if x.contract.con_id == c.con_id), None)
                if match is not None and match.ratio != r:
                    raise ValueError(
                        f"execute_roll: {c.describe()} is held at ratio {r} and the target "
                        f"wants {match.ratio}; rolls that change a held leg's ratio are not "
                        "supported"
                    )
            added = append_legs(self.store, strategy_id, new_legs, self.clock.now())
            combo = [(c, -r) for c, r in legs] + [(x.contract, x.ratio) for x in new_legs]
            job = ComboJob(
                strategy_id=strategy_id,
                underlying=candidate.underlying,
                purpose=roll,
                legs=combo,
                target=units,
                min_credit=None,
                max_debit=max_debit,
            )
            await self._ladder.climb(job, progress, start_step=0)
            if progress.status is None and 0 < progress.filled < job.target_combos:
                await self._ladder.at_natural(job, progress)
        except (CancelUnconfirmed, BrokerError) as exc:
            return self._cut_short(progress, strategy_id=strategy_id, purpose=roll, error=exc)
        if progress.filled == 0:
            close_unfilled_legs(self.store, strategy_id, self.clock.now(), added)
        return self._exit_or_roll_result(job, progress)

    async def resume_pending(self) -> list[ExecutionResult]:
        """Settle every PENDING V6 strategy left by an interrupted run: orders still working
        are given one step then cancelled; strategies that never filled are cancelled;
        ones that filled partly keep what filled. Call before new entries."""
        pending = self.book.strategies(status=[StrategyStatus.PENDING.value])
        pending = pending.filter(pl.col("origin") == Origin.V6.value)
        out: list[ExecutionResult] = []
        for row in pending.iter_rows(named=True):
            sid = row["strategy_id"]
            job = ComboJob(
                strategy_id=sid,
                underlying=row["underlying"],
                purpose=IntentPurpose.OPEN,
                legs=booked_legs(self.book, sid),
                target=int(row["quantity"]),
                min_credit=None,
            )
            progress = Progress()
            try:
                await self._ladder.resume(job, progress, ENTRY_PURPOSES)
            except (CancelUnconfirmed, BrokerError) as exc:
                out.append(
                    self._cut_short(
                        progress,
                        strategy_id=sid,
                        purpose=job.purpose,
                        error=exc,
                        requested=job.target,
                        combos_per_unit=job.g,
                    )
                )
                continue
            held = entry_units(self.book, sid, job.legs)
            now = self.clock.now()
            if held == 0:
                self.book.set_strategy_status(
                    sid, StrategyStatus.CANCELLED, "entry interrupted and never filled"
                )
                close_unfilled_legs(self.store, sid, now)
                status = ExecStatus.CANCELLED
            elif held < job.target:
                set_strategy_quantity(
                    self.store, sid, held, f"entry interrupted: {held} of {job.target} filled", now
                )
                status = ExecStatus.PARTIAL
            else:
                status = ExecStatus.FILLED
            out.append(
                self._entry_result(
                    job,
                    progress,
                    status=status,
                    requested=job.target,
                    message=f"resumed: {held} of {job.target} units held",
                )
            )
        return out

    # ------------------------------------------------------------------ resuming
    async def _resume_exits(self, strategy_id: str, progress: Progress) -> None:
        """Settle the strategy's unfinished exit refs; their records join `progress`."""
        intents = strategy_intents(self.store, strategy_id, EXIT_PURPOSES)
        if intents.is_empty():
            return
        units, legs, _ = holding(self.book, strategy_id)
        if not legs:
            legs = booked_legs(self.book, strategy_id)
        job = ComboJob(
            strategy_id=strategy_id,
            underlying=str(legs[0][0].symbol),
            purpose=IntentPurpose.CLOSE,
            legs=legs,
            target=max(units, 1),
            min_credit=None,
        )
        scratch = Progress()
        await self._ladder.resume(job, scratch, EXIT_PURPOSES)
        progress.add_records(scratch)

    # ------------------------------------------------------------------ endings
    async def _finish_entry(
        self,
        cand: Candidate,
        job: ComboJob,
        progress: Progress,
        held: int,
        *,
        resumed: bool = False,
    ) -> ExecutionResult:
        """The entry's ending from the units it holds: filled, cancelled, kept in part, or
        unwound (partial_fill_policy)."""
        sid, now = cand.strategy_id, self.clock.now()
        target = int(cand.quantity)
        row = strategy_row(self.store, sid)
        target = int(row["quantity"]) if row else target  # type: ignore[call-overload]
        if held >= target:
            credit = entry_credit(self.book, sid, held)
            if math.isfinite(credit):
                record_predictions(self.store, [(cand, credit)], created_at=now)
            status = (
                ExecStatus.ALREADY_DONE if resumed and not progress.filled else ExecStatus.FILLED
            )
            return self._entry_result(
                job,
                progress,
                status=status,
                requested=target,
                message=f"{held} of {target} units filled",
            )
        if held == 0:
            status = progress.status or ExecStatus.CANCELLED
            msg = (
                progress.message
                or f"not filled within {self.settings.strategies.fill_timeout_s:g}s"
            )
            self.book.set_strategy_status(sid, StrategyStatus.CANCELLED, f"entry {status}: {msg}")
            close_unfilled_legs(self.store, sid, now)
            return self._entry_result(job, progress, status=status, requested=target, message=msg)
        # partial: some whole units are on
        if self.settings.strategies.partial_fill_policy == "unwind":
            return await self._unwind(job, progress, held, target, now)
        set_strategy_quantity(
            self.store, sid, held, f"partial entry: {held} of {target} filled; rest cancelled", now
        )
        credit = entry_credit(self.book, sid, held)
        if math.isfinite(credit):
            record_predictions(self.store, [(cand.with_quantity(held), credit)], created_at=now)
        return self._entry_result(
            job,
            progress,
            status=ExecStatus.PARTIAL,
            requested=target,
            message=progress.message
            or f"{held} of {target} filled; remainder cancelled (partial_fill_policy=complete)",
        )

    async def _unwind(
        self, job: ComboJob, progress: Progress, held: int, target: int, now: datetime
    ) -> ExecutionResult:
        """The 'unwind' policy: close the units a partial entry filled. What the unwind
        leaves open stays the strategy's quantity, for the exit rules to manage."""
        sid = job.strategy_id
        unwind = await self.execute_exit(sid, purpose=IntentPurpose.CLOSE)
        left = held_units(self.book, sid, job.legs)
        if left == 0:
            self.book.set_strategy_status(
                sid, StrategyStatus.CLOSED, f"partial entry ({held}/{target}) unwound"
            )
            return self._entry_result(
                job,
                progress,
                status=ExecStatus.UNWOUND,
                requested=target,
                message=f"{held} of {target} filled; unwound",
                unwind=unwind,
            )
        set_strategy_quantity(
            self.store,
            sid,
            left,
            f"partial entry {held}/{target}; unwind left {left} open "
            f"({unwind.status}): exit rules manage it",
            now,
        )
        return self._entry_result(
            job,
            progress,
            status=ExecStatus.PARTIAL,
            requested=target,
            message=f"{held} of {target} filled; unwind incomplete, {left} open",
            unwind=unwind,
        )

    @staticmethod
    def _entry_result(
        job: ComboJob,
        progress: Progress,
        *,
        status: ExecStatus,
        requested: int,
        message: str,
        unwind: ExecutionResult | None = None,
    ) -> ExecutionResult:
        """An entry's result: requested is the strategy's whole quantity, not the rest."""
        return ExecutionResult.settled(
            progress,
            strategy_id=job.strategy_id,
            purpose=IntentPurpose.OPEN,
            status=status,
            requested=requested,
            combos_per_unit=job.g,
            message=message,
            unwind=unwind,
        )

    @staticmethod
    def _exit_or_roll_result(job: ComboJob, progress: Progress) -> ExecutionResult:
        """An exit's or roll's result from what filled: FILLED, PARTIAL, or what stopped
        the ladder (else CANCELLED)."""
        filled = progress.filled // job.g
        if filled >= job.target:
            status = ExecStatus.FILLED
        elif filled > 0:
            status = ExecStatus.PARTIAL
        else:
            status = progress.status or ExecStatus.CANCELLED
        return ExecutionResult.settled(
            progress,
            strategy_id=job.strategy_id,
            purpose=job.purpose,
            status=status,
            requested=job.target,
            combos_per_unit=job.g,
            message=progress.message or f"{filled} of {job.target} units filled",
        )

    @staticmethod
    def _cut_short(
        progress: Progress,
        *,
        strategy_id: str,
        purpose: IntentPurpose,
        error: Exception,
        requested: int = 0,
        combos_per_unit: int = 1,
    ) -> ExecutionResult:
        """`ExecutionResult.from_error`, with a warning in the log."""
        result = ExecutionResult.from_error(
            progress,
            strategy_id=strategy_id,
            purpose=purpose,
            error=error,
            requested=requested,
            combos_per_unit=combos_per_unit,
        )
        log.warning("execution of %s %s: %s", strategy_id, result.status.value, error)
        return result


__all__ = ["ComboExecutor"]
