"""Transactional execution of multi-leg strategies as one combo (BAG) order.

A strategy is either fully on or not on at all, and nothing is ever sent twice:

1. The strategy and its legs are in the book (PENDING) before any order exists.
2. Every order attempt gets a deterministic orderRef `v6:{strategy}:{seq}:combo`, and its
   intent is written before it is sent (`intents.record_intent`).
3. The order is one BAG limit order: all legs fill together or not at all. The first
   limit is the mid; if it does not fill within its share of `fill_timeout_s`
   (fill_timeout_s / (reprice_steps + 1)) it is cancelled (and the cancel confirmed) and
   the remainder goes out under a new ref one step closer to natural, for
   `reprice_steps` steps. Never beyond natural; an entry (a credit at mid) never reprices
   into a debit nor below `min_credit_to_width` x width of credit; a roll never pays
   more than its `max_debit`. Exits are bounded by natural only (getting out matters).
4. Partial fills (fewer combo units than asked) are recorded; the remainder follows
   `partial_fill_policy`: "complete" keeps working it to natural, then keeps what filled
   (strategy quantity set to it, with a note); "unwind" closes the filled units.
5. A call that starts with intents already in the book (a retry after a disconnect or
   crash) first asks the broker for each unfinished ref (`Broker.find_order`) and settles
   it; only then does anything new go out. A ref the broker has is never placed again.
6. `check_hard_caps` runs right before every placement, with today's executed usage
   (`intents.sent_today`) and the account's net liquidation the caller read (the
   max-loss caps scale with it; unknown net liquidation refuses every risk-adding order).
7. Orders and fills go to the book as they happen (`Book.record_order`,
   `Book.record_fills`); predictions are written when an entry fills.

A roll is one BAG holding the closing legs of the old position and the opening legs of
the new one, so it also fills all-or-nothing; it keeps the strategy id (the new legs are
added to the strategy, the old ones close), which is what lets reconciliation attribute
every fill of the roll order to the right leg.

Waiting is injected (`wait(seconds)`): a SimClock is advanced (simulated time, instant
tests), a real clock sleeps. Status is polled every `fill_poll_s` with `find_order`,
which both SimBroker and IBBroker answer.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

import polars as pl

from core.book.ledger import Book, TableStore
from core.book.model import IntentPurpose, LegSpec, StrategyStatus
from core.book.refs import make_order_ref
from core.broker.base import Broker, BrokerError, ErrorClass
from core.clock import Clock, SimClock
from core.config import Settings
from core.domain import Action, Contract, Execution, OrderRequest, OrderState, OrderStatus
from core.domain.frames import contract_from_row
from core.execution.combo import (
    ComboQuote,
    combo_contract,
    combo_quote,
    credit_cap,
    fill_price,
    ladder_price,
    net_legs,
    order_legs_frame,
    order_max_loss,
)
from core.execution.intents import (
    append_legs,
    close_unfilled_legs,
    record_intent,
    sent_today,
    set_strategy_quantity,
    strategy_intents,
    strategy_row,
)
from core.risk.limits import LimitResult, check_hard_caps
from core.strategy.candidates import Candidate
from core.strategy.predictions import record_predictions

log = logging.getLogger(f"v6.{__name__}")

Waiter = Callable[[float], Awaitable[None]]
EXEC_LOOKBACK = timedelta(minutes=2)  # executions of an attempt are fetched from its start
CANCEL_CONFIRM_POLLS = 10
ENTRY_PURPOSES = (IntentPurpose.OPEN,)
EXIT_PURPOSES = (
    IntentPurpose.CLOSE,
    IntentPurpose.REDUCE,
    IntentPurpose.ROLL,
    IntentPurpose.ADJUST,
)
_DONE_ORDER = ("FILLED", "CANCELLED", "REJECTED")


class ExecStatus(StrEnum):
    FILLED = "FILLED"  # everything asked for filled
    PARTIAL = "PARTIAL"  # some units filled; the rest given up (explained in `message`)
    CANCELLED = "CANCELLED"  # nothing filled before the timeout; all orders cancelled
    REJECTED = "REJECTED"  # the broker refused the order
    UNWOUND = "UNWOUND"  # a partial entry was closed again (unwind policy)
    BLOCKED = "BLOCKED"  # a hard cap refused the order before it was sent
    NO_PRICE = "NO_PRICE"  # no usable quote, or no limit within the bounds
    INTERRUPTED = "INTERRUPTED"  # connection lost / cancel unconfirmed: resume later
    ALREADY_DONE = "ALREADY_DONE"  # a retry found the work already done
    NOT_CLOSABLE = "NOT_CLOSABLE"  # legs not proportional to a whole number of units


@dataclass(frozen=True, slots=True)
class Attempt:
    """One order sent: its ref, limit, size (combo units), what filled, quote at sending."""

    order_ref: str
    limit_price: float
    quantity: int
    filled: int
    status: str
    mid: float
    natural: float
    message: str = ""


@dataclass(frozen=True)
class ExecutionResult:
    strategy_id: str
    purpose: str
    status: ExecStatus
    requested: int  # strategy units this call set out to fill
    filled: int  # strategy units filled by this call (including resumed orders)
    avg_price: float  # net debit per strategy unit of those fills (negative = credit)
    attempts: tuple[Attempt, ...] = ()
    orders: tuple[OrderState, ...] = ()
    executions: tuple[Execution, ...] = ()
    message: str = ""
    unwind: ExecutionResult | None = None
    hard_caps: LimitResult | None = None

    @property
    def credit(self) -> float:
        """Credit received per strategy unit (negative = a debit was paid)."""
        return -self.avg_price

    @property
    def ok(self) -> bool:
        return self.status in (ExecStatus.FILLED, ExecStatus.ALREADY_DONE)

    def summary(self) -> dict[str, object]:
        return {
            "strategy_id": self.strategy_id,
            "purpose": self.purpose,
            "status": self.status.value,
            "requested": self.requested,
            "filled": self.filled,
            "avg_price": None if math.isnan(self.avg_price) else round(self.avg_price, 4),
            "orders": len(self.attempts),
            "message": self.message,
        }


def sim_waiter(clock: SimClock) -> Waiter:
    """Advance simulated time (the exchange catches up on the broker's next call)."""

    async def wait(seconds: float) -> None:
        clock.advance(timedelta(seconds=seconds))

    return wait


async def real_wait(seconds: float) -> None:
    await asyncio.sleep(seconds)


class _Unconfirmed(Exception):
    """A cancel the broker has not confirmed: the order may still fill."""


@dataclass
class _Job:
    strategy_id: str
    underlying: str
    purpose: IntentPurpose
    legs: list[tuple[Contract, int]]  # signed ratio per strategy unit, as traded (BUY combo)
    target: int  # strategy units
    min_credit: float | None  # per strategy unit: a credit at mid never reprices below this
    max_debit: float | None = None  # per strategy unit: never pay more than this
    urgent: bool = False
    reduces_risk: bool = False
    # derived
    bag: Contract = field(init=False)
    g: int = field(init=False)
    unit_legs: list[tuple[Contract, int]] = field(init=False)  # per combo unit

    def __post_init__(self) -> None:
        self.legs = net_legs(self.legs)
        self.bag, self.g = combo_contract(self.underlying, self.legs)
        self.unit_legs = [(c, r // self.g) for c, r in self.legs]


@dataclass
class _Run:
    """What one call did: attempts, broker states, executions, fills in combo units."""

    filled: int = 0  # combo units
    cost: float = 0.0  # sum of units x price (per combo unit)
    attempts: list[Attempt] = field(default_factory=list)
    orders: list[OrderState] = field(default_factory=list)
    executions: list[Execution] = field(default_factory=list)
    status: ExecStatus | None = None  # a terminal reason that stopped the ladder
    message: str = ""
    hard: LimitResult | None = None

    def stop(self, status: ExecStatus, message: str) -> None:
        self.status = status
        self.message = message

    @property
    def avg(self) -> float:
        return self.cost / self.filled if self.filled else math.nan


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
        self._wait = wait

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
            return self._result(
                sid,
                IntentPurpose.OPEN,
                ExecStatus.ALREADY_DONE,
                0,
                _Run(),
                1,
                f"strategy {sid} is already {row['status']}",
            )
        target = int(row["quantity"])  # type: ignore[call-overload]
        job = _Job(
            sid,
            candidate.underlying,
            IntentPurpose.OPEN,
            [(leg.contract, leg.ratio) for leg in candidate.legs],
            target,
            min_credit=st.min_credit_to_width * candidate.width,
        )
        run = _Run()
        try:
            n_prev = await self._resume(job, run, ENTRY_PURPOSES)
            held = self._entry_units(sid, job.legs)
            if held >= target:
                return await self._finish_entry(candidate, job, run, held, resumed=True)
            job.target = target - held
            await self._ladder(job, run, start_step=min(n_prev, self._steps(job)))
            if (
                run.status is None
                and st.partial_fill_policy == "complete"
                and 0 < run.filled < job.target * job.g
            ):
                await self._attempt_at_natural(job, run)
        except (_Unconfirmed, BrokerError) as exc:
            return self._interrupted(job, run, exc)
        return await self._finish_entry(candidate, job, run, self._entry_units(sid, job.legs))

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
        """
        purpose = IntentPurpose(purpose)
        if strategy_row(self.store, strategy_id) is None:
            raise KeyError(f"execute_exit: no strategy {strategy_id!r} in the book")
        run = _Run()
        try:
            await self._resume_exits(strategy_id, run)
            units, legs, why = self._holding(strategy_id)
            if why:
                return self._result(strategy_id, purpose, ExecStatus.NOT_CLOSABLE, 0, run, 1, why)
            if units == 0:
                return self._result(
                    strategy_id,
                    purpose,
                    ExecStatus.ALREADY_DONE,
                    0,
                    run,
                    1,
                    "nothing open to close",
                )
            n = units if quantity is None else min(int(quantity), units)
            if n <= 0:
                raise ValueError(f"execute_exit: quantity must be >= 1, got {quantity}")
            und = str(legs[0][0].symbol)
            job = _Job(
                strategy_id,
                und,
                purpose,
                [(c, -r) for c, r in legs],
                n,
                min_credit=None,
                urgent=urgent,
                reduces_risk=True,
            )
            await self._ladder(job, run, start_step=0)
            if run.status is None and 0 < run.filled < job.target * job.g:
                await self._attempt_at_natural(job, run)
        except (_Unconfirmed, BrokerError) as exc:
            return self._interrupted_plain(strategy_id, purpose, run, exc)
        return self._finish_plain(job, run)

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
        run = _Run()
        new_ids = {leg.contract.con_id for leg in candidate.legs}
        try:
            await self._resume_exits(strategy_id, run)
            units, legs, why = self._holding(strategy_id)
            if why:
                return self._result(
                    strategy_id, IntentPurpose.ROLL, ExecStatus.NOT_CLOSABLE, 0, run, 1, why
                )
            if units and {c.con_id for c, _ in legs} == new_ids:
                return self._result(
                    strategy_id,
                    IntentPurpose.ROLL,
                    ExecStatus.ALREADY_DONE,
                    0,
                    run,
                    1,
                    "already holds the roll target's legs",
                )
            if units == 0:
                return self._result(
                    strategy_id,
                    IntentPurpose.ROLL,
                    ExecStatus.NOT_CLOSABLE,
                    0,
                    run,
                    1,
                    "nothing open to roll",
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
            job = _Job(
                strategy_id,
                candidate.underlying,
                IntentPurpose.ROLL,
                combo,
                units,
                min_credit=None,
                max_debit=max_debit,
            )
            await self._ladder(job, run, start_step=0)
            if run.status is None and 0 < run.filled < job.target * job.g:
                await self._attempt_at_natural(job, run)
        except (_Unconfirmed, BrokerError) as exc:
            return self._interrupted_plain(strategy_id, IntentPurpose.ROLL, run, exc)
        if run.filled == 0:
            close_unfilled_legs(self.store, strategy_id, self.clock.now(), added)
        return self._finish_plain(job, run)

    async def resume_pending(self) -> list[ExecutionResult]:
        """Settle every PENDING V6 strategy left by an interrupted run: orders still working
        are given one step then cancelled; strategies that never filled are cancelled;
        ones that filled partly keep what filled. Call before new entries."""
        pending = self.book.strategies(status=[StrategyStatus.PENDING.value])
        pending = pending.filter(pl.col("origin") == "v6")
        out: list[ExecutionResult] = []
        for row in pending.iter_rows(named=True):
            sid = row["strategy_id"]
            legs = self.book.legs(sid)
            spec = [(contract_from_row(r), int(r["ratio"])) for r in legs.iter_rows(named=True)]
            job = _Job(
                sid,
                row["underlying"],
                IntentPurpose.OPEN,
                spec,
                int(row["quantity"]),
                min_credit=None,
            )
            run = _Run()
            try:
                await self._resume(job, run, ENTRY_PURPOSES)
            except (_Unconfirmed, BrokerError) as exc:
                out.append(self._interrupted(job, run, exc))
                continue
            held = self._entry_units(sid, job.legs)
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
                self._result(
                    sid,
                    IntentPurpose.OPEN,
                    status,
                    job.target,
                    run,
                    job.g,
                    f"resumed: {held} of {job.target} units held",
                )
            )
        return out

    # ------------------------------------------------------------------ the ladder
    def _steps(self, job: _Job) -> int:
        return 0 if job.urgent else self.settings.strategies.reprice_steps

    def _step_wait(self, job: _Job) -> float:
        return self.settings.strategies.fill_timeout_s / (self._steps(job) + 1)

    async def _ladder(self, job: _Job, run: _Run, start_step: int) -> None:
        steps = self._steps(job)
        last: float | None = None
        for i in range(start_step, steps + 1):
            remaining = job.target * job.g - run.filled
            if remaining <= 0 or run.status is not None:
                return
            quote = await self._quote(job)
            step, of = (1, 1) if job.urgent else (i, steps)
            price = self._price(job, quote, step, of)
            if price is None:
                if run.attempts:  # already worked the order: stop quietly at the bound
                    return
                run.stop(ExecStatus.NO_PRICE, self._no_price(job, quote))
                return
            if price == last and i < steps:
                continue  # rounding made this step the same price: go straight to the next
            last = price
            await self._attempt(job, run, quote, price, remaining)
            if (
                job.purpose is IntentPurpose.OPEN
                and self.settings.strategies.partial_fill_policy == "unwind"
                and 0 < run.filled < job.target * job.g
            ):
                return  # unwind the filled part rather than chase the rest

    async def _attempt_at_natural(self, job: _Job, run: _Run) -> None:
        """The 'complete' policy: one more order for the remainder at natural."""
        quote = await self._quote(job)
        price = self._price(job, quote, 1, 1)
        if price is not None:
            await self._attempt(job, run, quote, price, job.target * job.g - run.filled)

    def _price(self, job: _Job, quote: ComboQuote, step: int, steps: int) -> float | None:
        caps = []
        if job.min_credit is not None:
            floor = credit_cap(quote, job.min_credit / job.g)
            if floor is not None:
                caps.append(floor)
        if job.max_debit is not None:
            caps.append(job.max_debit / job.g)
        return ladder_price(quote, step, steps, cap=min(caps) if caps else None)

    @staticmethod
    def _no_price(job: _Job, quote: ComboQuote) -> str:
        if not quote.ok:
            return f"no usable quote for {job.bag.symbol} combo legs (NaN, crossed or stale)"
        if job.max_debit is not None and quote.mid > job.max_debit / job.g:
            return (
                f"mid {quote.mid:.2f} is a debit above max_debit {job.max_debit / job.g:.2f} "
                f"(natural {quote.natural:.2f}); not sent"
            )
        return (
            f"mid {quote.mid:.2f} is a credit below the floor {(job.min_credit or 0) / job.g:.2f}"
            f" (natural {quote.natural:.2f}); not sent"
        )

    async def _quote(self, job: _Job) -> ComboQuote:
        quotes = await self.broker.quotes([c for c, _ in job.unit_legs])
        return combo_quote(job.unit_legs, quotes)

    async def _attempt(
        self, job: _Job, run: _Run, quote: ComboQuote, price: float, remaining: int
    ) -> None:
        sid = job.strategy_id
        ref = make_order_ref(sid, self.book.next_intent_seq(sid), None)
        order = OrderRequest(job.bag, Action.BUY, remaining, limit_price=price, order_ref=ref)
        now = self.clock.now()
        day = sent_today(self.store, now)
        legs = order_legs_frame(sid, job.underlying, job.unit_legs, remaining)
        caps = check_hard_caps(
            legs,
            order_max_loss=order_max_loss(legs, price * remaining),
            net_liquidation=self.net_liquidation,
            day_contracts=day.contracts,
            day_notional=day.notional,
            day_max_loss=day.max_loss,
            reduces_risk=job.reduces_risk,
        )
        if not caps.ok:
            run.hard = caps
            run.stop(ExecStatus.BLOCKED, f"hard cap: {caps.describe()}")
            log.warning("order %s blocked by a hard cap: %s", ref, caps.describe())
            return
        record_intent(self.book, order, job.purpose)
        log.info(
            "sending %s %s x%d @ %.2f (mid %.3f, natural %.2f)",
            ref,
            job.purpose.value,
            remaining,
            price,
            quote.mid,
            quote.natural,
        )
        try:
            state = await self.broker.place_order(order)
        except BrokerError as exc:
            if exc.kind is ErrorClass.CONNECTIVITY:
                raise
            run.stop(ExecStatus.REJECTED, f"{ref}: {exc}")
            return
        self.book.record_order(state)
        if state.status is OrderStatus.REJECTED:
            run.orders.append(state)
            run.attempts.append(
                Attempt(
                    ref,
                    price,
                    remaining,
                    0,
                    state.status.value,
                    quote.mid,
                    quote.natural,
                    state.message,
                )
            )
            run.stop(ExecStatus.REJECTED, f"{ref}: {state.message}")
            return
        state = await self._settle(state, self._step_wait(job), since=now)
        units = await self._book_fills(job, run, state, since=now)
        run.attempts.append(
            Attempt(
                ref,
                price,
                remaining,
                units,
                state.status.value,
                quote.mid,
                quote.natural,
                state.message,
            )
        )

    async def _settle(self, state: OrderState, wait_s: float, since: datetime) -> OrderState:
        """Wait up to `wait_s` for the order to finish, then cancel it and confirm."""
        poll = self.settings.strategies.fill_poll_s
        polls = max(1, math.ceil(wait_s / poll - 1e-9))
        ref = state.order_ref
        for _ in range(polls):
            if state.status.is_done:
                break
            await self._wait(min(poll, wait_s))
            state = await self.broker.find_order(ref) or state
        if not state.status.is_done:
            state = await self.broker.cancel_order(state.order_id)
            for _ in range(CANCEL_CONFIRM_POLLS):
                if state.status.is_done:
                    break
                await self._wait(poll)
                state = await self.broker.find_order(ref) or state
            if not state.status.is_done:
                self.book.record_order(state)
                raise _Unconfirmed(
                    f"cancel of {ref} (order {state.order_id}) not confirmed; it may still "
                    "fill: nothing more is sent until it is settled (resume later)"
                )
        return state

    async def _book_fills(self, job: _Job, run: _Run, state: OrderState, since: datetime) -> int:
        """Record the order's executions and final state; returns combo units filled."""
        execs = await self.broker.executions(since - EXEC_LOOKBACK)
        mine = list({e.exec_id: e for e in execs if e.order_ref == state.order_ref}.values())
        if mine:
            self.book.record_fills(mine)  # fills first: a recorded done order implies its fills
        self.book.record_order(state)
        exec_units, avg = fill_price(mine, job.unit_legs)
        units = state.filled  # the broker's order status is the authority on units
        if exec_units != units or not math.isfinite(avg):
            if exec_units != units:
                log.info(
                    "%s: %d units filled, %d seen in executions so far",
                    state.order_ref,
                    units,
                    exec_units,
                )
            avg = state.avg_fill_price
        run.orders.append(state)
        run.executions.extend(mine)
        if units:
            run.filled += units
            run.cost += units * (avg if math.isfinite(avg) else 0.0)
        return units

    # ------------------------------------------------------------------ resuming
    async def _resume(self, job: _Job, run: _Run, purposes: Sequence[IntentPurpose]) -> int:
        """Settle the strategy's unfinished refs of `purposes`; returns how many intents exist.

        A ref the broker does not know never reached it (the crash came between intent and
        submit): it is left alone and a new ref carries the work forward.
        """
        intents = strategy_intents(self.store, job.strategy_id, purposes)
        if intents.is_empty():
            return 0
        orders = self.store.read(
            "orders",
            where=pl.col("strategy_id") == job.strategy_id,
            columns=["order_ref", "status"],
        ).collect()
        done = set(orders.filter(pl.col("status").is_in(_DONE_ORDER))["order_ref"].to_list())
        for row in intents.iter_rows(named=True):
            ref = row["order_ref"]
            if ref in done:
                continue
            state = await self.broker.find_order(ref)
            if state is None:
                log.info("intent %s never reached the broker; not resent", ref)
                continue
            log.info(
                "resuming %s (%s, %d/%d filled)",
                ref,
                state.status.value,
                state.filled,
                state.quantity,
            )
            created = row["created_at"]
            if not state.status.is_done:
                state = await self._settle(state, self._step_wait(job), since=created)
            units = await self._book_fills(job, run, state, since=created)
            run.attempts.append(
                Attempt(
                    ref,
                    state.limit_price or math.nan,
                    state.quantity,
                    units,
                    state.status.value,
                    math.nan,
                    math.nan,
                    "resumed",
                )
            )
        return intents.height

    async def _resume_exits(self, strategy_id: str, run: _Run) -> None:
        intents = strategy_intents(self.store, strategy_id, EXIT_PURPOSES)
        if intents.is_empty():
            return
        units, legs, _ = self._holding(strategy_id)
        if not legs:
            legs = [
                (contract_from_row(r), int(r["ratio"]))
                for r in self.book.legs(strategy_id).iter_rows(named=True)
            ]
        und = str(legs[0][0].symbol)
        job = _Job(strategy_id, und, IntentPurpose.CLOSE, legs, max(units, 1), min_credit=None)
        scratch = _Run()
        await self._resume(job, scratch, EXIT_PURPOSES)
        run.attempts.extend(scratch.attempts)
        run.orders.extend(scratch.orders)
        run.executions.extend(scratch.executions)

    # ------------------------------------------------------------------ book reads
    def _positions(self, strategy_id: str) -> pl.DataFrame:
        return self.book.leg_positions(open_only=False).filter(pl.col("strategy_id") == strategy_id)

    def _held_units(self, strategy_id: str, legs: Sequence[tuple[Contract, int]]) -> int:
        """Whole strategy units held now in `legs` (min over legs of quantity / ratio)."""
        pos = self._positions(strategy_id).select("con_id", "quantity")
        return _units(dict(pos.iter_rows()), legs)

    def _entry_units(self, strategy_id: str, legs: Sequence[tuple[Contract, int]]) -> int:
        """Whole units the strategy's entry orders filled (exits since do not count: a retry
        of an entry that was later reduced must not buy the reduction back)."""
        refs = strategy_intents(self.store, strategy_id, ENTRY_PURPOSES)["order_ref"]
        fills = self.book.fills(strategy_id).filter(pl.col("order_ref").is_in(refs.implode()))
        per = fills.group_by("con_id").agg(pl.col("quantity").sum())
        return _units(dict(per.iter_rows()), legs)

    def _holding(self, strategy_id: str) -> tuple[int, list[tuple[Contract, int]], str]:
        """(units, [(contract, ratio per unit)], problem) of the strategy's open legs."""
        pos = self._positions(strategy_id).filter(pl.col("quantity") != 0)
        if pos.is_empty():
            return 0, [], ""
        legs: list[tuple[Contract, int]] = []
        units: set[int] = set()
        for r in pos.iter_rows(named=True):
            q, ratio = int(r["quantity"]), int(r["ratio"])
            if ratio == 0 or q % ratio != 0 or q // ratio <= 0:
                return (
                    0,
                    [],
                    (
                        f"leg {r['leg_id']} holds {q} against ratio {ratio}: not a whole number "
                        "of strategy units; close it leg by leg"
                    ),
                )
            units.add(q // ratio)
            legs.append((contract_from_row(r), ratio))
        if len(units) != 1:
            return 0, [], f"legs hold different numbers of units {sorted(units)}; not one combo"
        return units.pop(), legs, ""

    def _entry_credit(self, strategy_id: str, units: int) -> float:
        """Credit per unit received by the strategy's entry fills (from the book)."""
        refs = strategy_intents(self.store, strategy_id, ENTRY_PURPOSES)["order_ref"]
        fills = self.book.fills(strategy_id).filter(pl.col("order_ref").is_in(refs.implode()))
        if fills.is_empty() or units <= 0:
            return math.nan
        paid = float(fills.select((pl.col("quantity") * pl.col("price")).sum()).item())
        return -paid / units

    # ------------------------------------------------------------------ endings
    async def _finish_entry(
        self, cand: Candidate, job: _Job, run: _Run, held: int, *, resumed: bool = False
    ) -> ExecutionResult:
        sid, now = cand.strategy_id, self.clock.now()
        target = int(cand.quantity)
        row = strategy_row(self.store, sid)
        target = int(row["quantity"]) if row else target  # type: ignore[call-overload]
        if held >= target:
            credit = self._entry_credit(sid, held)
            if math.isfinite(credit):
                record_predictions(self.store, [(cand, credit)], created_at=now)
            status = ExecStatus.ALREADY_DONE if resumed and not run.filled else ExecStatus.FILLED
            return self._result(
                sid,
                IntentPurpose.OPEN,
                status,
                target,
                run,
                job.g,
                f"{held} of {target} units filled",
            )
        if held == 0:
            status = run.status or ExecStatus.CANCELLED
            msg = run.message or f"not filled within {self.settings.strategies.fill_timeout_s:g}s"
            self.book.set_strategy_status(sid, StrategyStatus.CANCELLED, f"entry {status}: {msg}")
            close_unfilled_legs(self.store, sid, now)
            return self._result(sid, IntentPurpose.OPEN, status, target, run, job.g, msg)
        # partial: some whole units are on
        if self.settings.strategies.partial_fill_policy == "unwind":
            unwind = await self.execute_exit(sid, purpose=IntentPurpose.CLOSE)
            left = self._held_units(sid, job.legs)
            if left == 0:
                self.book.set_strategy_status(
                    sid, StrategyStatus.CLOSED, f"partial entry ({held}/{target}) unwound"
                )
                res = self._result(
                    sid,
                    IntentPurpose.OPEN,
                    ExecStatus.UNWOUND,
                    target,
                    run,
                    job.g,
                    f"{held} of {target} filled; unwound",
                )
                return replace(res, unwind=unwind)
            set_strategy_quantity(
                self.store,
                sid,
                left,
                f"partial entry {held}/{target}; unwind left {left} open "
                f"({unwind.status}): exit rules manage it",
                now,
            )
            res = self._result(
                sid,
                IntentPurpose.OPEN,
                ExecStatus.PARTIAL,
                target,
                run,
                job.g,
                f"{held} of {target} filled; unwind incomplete, {left} open",
            )
            return replace(res, unwind=unwind)
        set_strategy_quantity(
            self.store, sid, held, f"partial entry: {held} of {target} filled; rest cancelled", now
        )
        credit = self._entry_credit(sid, held)
        if math.isfinite(credit):
            record_predictions(self.store, [(cand.with_quantity(held), credit)], created_at=now)
        return self._result(
            sid,
            IntentPurpose.OPEN,
            ExecStatus.PARTIAL,
            target,
            run,
            job.g,
            run.message
            or f"{held} of {target} filled; remainder cancelled (partial_fill_policy=complete)",
        )

    def _finish_plain(self, job: _Job, run: _Run) -> ExecutionResult:
        filled = run.filled // job.g
        if filled >= job.target:
            status = ExecStatus.FILLED
        elif filled > 0:
            status = ExecStatus.PARTIAL
        else:
            status = run.status or ExecStatus.CANCELLED
        msg = run.message or f"{filled} of {job.target} units filled"
        return self._result(job.strategy_id, job.purpose, status, job.target, run, job.g, msg)

    def _result(
        self,
        sid: str,
        purpose: IntentPurpose,
        status: ExecStatus,
        requested: int,
        run: _Run,
        g: int,
        message: str,
    ) -> ExecutionResult:
        filled = run.filled // g
        avg = run.avg * g if run.filled else math.nan
        return ExecutionResult(
            strategy_id=sid,
            purpose=purpose.value,
            status=status,
            requested=requested,
            filled=filled,
            avg_price=avg,
            attempts=tuple(run.attempts),
            orders=tuple(run.orders),
            executions=tuple(run.executions),
            message=message,
            hard_caps=run.hard,
        )

    def _interrupted(self, job: _Job, run: _Run, exc: Exception) -> ExecutionResult:
        return self._interrupted_plain(job.strategy_id, job.purpose, run, exc, job.target, job.g)

    def _interrupted_plain(
        self,
        sid: str,
        purpose: IntentPurpose,
        run: _Run,
        exc: Exception,
        requested: int = 0,
        g: int = 1,
    ) -> ExecutionResult:
        if isinstance(exc, BrokerError) and exc.kind is not ErrorClass.CONNECTIVITY:
            status = ExecStatus.REJECTED
        else:
            status = ExecStatus.INTERRUPTED
        log.warning("execution of %s %s: %s", sid, status.value, exc)
        return self._result(
            sid,
            purpose,
            status,
            requested,
            run,
            g,
            f"{exc}; intents kept: the next call resumes them",
        )


def _units(have: dict[int, int], legs: Sequence[tuple[Contract, int]]) -> int:
    """Whole strategy units in per-contract quantities `have` (0 on a wrong-signed leg)."""
    units = [
        int(have.get(c.con_id, 0)) // r if r > 0 else int(-have.get(c.con_id, 0)) // -r
        for c, r in legs
    ]
    return max(0, min(units)) if units else 0


__all__ = [
    "Attempt",
    "ComboExecutor",
    "ExecStatus",
    "ExecutionResult",
    "Waiter",
    "real_wait",
    "sim_waiter",
]
