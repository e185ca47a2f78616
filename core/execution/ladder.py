"""The repricing ladder: one combo job worked as BAG limit orders from mid toward natural.

Each step quotes the combo, prices it within the job's bounds, checks the hard caps with
today's usage, writes the intent, places the order, waits its share of `fill_timeout_s`,
cancels and confirms the cancel, then books the order's fills and its final state. `resume`
settles the refs an earlier call left unfinished, the same way, before anything new goes
out.

Commits per step: the intent before the send (the one write crash safety needs: a ref
the broker may hold is always in `order_intents`), then after the step settles the fills
(with their legs' and strategy's first-fill status, once per entry) and one row per
order in `orders`. The order's in-flight states are not written: a crash in between
leaves an intent the next run settles with the broker (`resume`), and reconciliation
records any V6 order the book lacks.

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

import polars as pl

from core.book.ledger import Book
from core.broker.base import Broker, BrokerError, ErrorClass
from core.clock import Clock, SimClock
from core.config import Settings
from core.domain import Action, Contract, Execution, OrderRequest, OrderState, OrderStatus
from core.domain.order_refs import make_order_ref
from core.domain.strategies import IntentPurpose
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
from core.execution.intents import record_intent, sent_today, strategy_intents
from core.execution.results import Attempt, ExecStatus, Progress
from core.risk.limits import check_hard_caps
from core.risk.margin import check_margin

log = logging.getLogger(f"v6.{__name__}")

Waiter = Callable[[float], Awaitable[None]]
CANCEL_CONFIRM_POLLS = 10
_DONE_ORDER = [s.value for s in OrderStatus if s.is_done]


def sim_waiter(clock: SimClock) -> Waiter:
    """Advance simulated time (the exchange catches up on the broker's next call)."""

    async def wait(seconds: float) -> None:
        clock.advance(timedelta(seconds=seconds))

    return wait


async def real_wait(seconds: float) -> None:
    await asyncio.sleep(seconds)


class CancelUnconfirmed(Exception):
    """A cancel the broker has not confirmed: the order may still fill."""


@dataclass
class ComboJob:
    """The combo one call works: whose, why, which legs, how many units, within what bounds."""

    strategy_id: str
    underlying: str
    purpose: IntentPurpose
    legs: list[tuple[Contract, int]]  # signed ratio per strategy unit, as traded (BUY combo)
    target: int  # strategy units
    min_credit: float | None  # per strategy unit: a credit at mid never reprices below this
    max_debit: float | None = None  # per strategy unit: never pay more than this
    urgent: bool = False
    reduces_risk: bool = False
    # entries: ask the broker's what-if margin for the first order before it is sent
    margin_check: bool = False
    # derived
    bag: Contract = field(init=False)  # what is traded: the BAG, or the one leg itself
    g: int = field(init=False)  # combo units per strategy unit
    unit_legs: list[tuple[Contract, int]] = field(init=False)  # per combo unit

    def __post_init__(self) -> None:
        self.legs = net_legs(self.legs)
        if len(self.legs) == 1:  # one instrument (delivered stock, a leg left alone): no BAG
            contract, ratio = self.legs[0]
            self.bag, self.g = contract, abs(ratio)
        else:
            self.bag, self.g = combo_contract(self.underlying, self.legs)
        self.unit_legs = [(c, r // self.g) for c, r in self.legs]

    @property
    def direct(self) -> bool:
        """True when the job trades one contract as itself (BUY or SELL), not as a BAG."""
        return len(self.legs) == 1

    def order(self, quantity: int, price: float, ref: str) -> OrderRequest:
        """The order for `quantity` combo units at `price`, the net debit per unit (the
        BUY-combo convention the ladder prices in). A direct job sells a short-ratio leg:
        the credit -price becomes its positive limit."""
        if not self.direct:
            return OrderRequest(self.bag, Action.BUY, quantity, limit_price=price, order_ref=ref)
        sign = 1 if self.unit_legs[0][1] > 0 else -1
        action = Action.BUY if sign > 0 else Action.SELL
        return OrderRequest(self.bag, action, quantity, limit_price=sign * price, order_ref=ref)

    def debit(self, avg_fill_price: float) -> float:
        """A broker's average fill price of this job's order as a net debit per unit."""
        if self.direct and self.unit_legs[0][1] < 0:
            return -avg_fill_price
        return avg_fill_price

    @property
    def target_combos(self) -> int:
        return self.target * self.g


class Ladder:
    """Sends, settles and books the orders of combo jobs (see the module doc)."""

    def __init__(
        self,
        broker: Broker,
        book: Book,
        clock: Clock,
        settings: Settings,
        wait: Waiter,
        net_liquidation: float,
    ) -> None:
        self.broker = broker
        self.book = book
        self.clock = clock
        self.settings = settings
        self._wait = wait
        self.net_liquidation = net_liquidation  # the max-loss hard caps scale with it

    def steps(self, job: ComboJob) -> int:
        return 0 if job.urgent else self.settings.strategies.reprice_steps

    def _step_wait(self, job: ComboJob) -> float:
        return self.settings.strategies.fill_timeout_s / (self.steps(job) + 1)

    async def climb(self, job: ComboJob, progress: Progress, start_step: int) -> None:
        """Work the job's remainder from step `start_step` to natural, until it fills or
        something stops it (`progress.status`)."""
        steps = self.steps(job)
        last: float | None = None
        for i in range(start_step, steps + 1):
            remaining = job.target_combos - progress.filled
            if remaining <= 0 or progress.status is not None:
                return
            quote = await self._quote(job)
            step, of = (1, 1) if job.urgent else (i, steps)
            price = self._price(job, quote, step, of)
            if price is None:
                if progress.attempts:  # already worked the order: stop quietly at the bound
                    return
                progress.stop(ExecStatus.NO_PRICE, self._no_price(job, quote))
                return
            if price == last and i < steps:
                continue  # rounding made this step the same price: go straight to the next
            last = price
            await self._attempt(job, progress, quote, price, remaining)
            if (
                job.purpose is IntentPurpose.OPEN
                and self.settings.strategies.partial_fill_policy == "unwind"
                and 0 < progress.filled < job.target_combos
            ):
                return  # unwind the filled part rather than chase the rest

    async def at_natural(self, job: ComboJob, progress: Progress) -> None:
        """The 'complete' policy: one more order for the remainder at natural."""
        quote = await self._quote(job)
        price = self._price(job, quote, 1, 1)
        if price is not None:
            await self._attempt(job, progress, quote, price, job.target_combos - progress.filled)

    async def resume(
        self, job: ComboJob, progress: Progress, purposes: Sequence[IntentPurpose]
    ) -> int:
        """Settle the strategy's unfinished refs of `purposes`; returns how many intents exist.

        A ref the broker does not know never reached it (the crash came between intent and
        submit): it is left alone and a new ref carries the work forward.
        """
        store = self.book.store
        intents = strategy_intents(store, job.strategy_id, purposes)
        if intents.is_empty():
            return 0
        orders = store.read(
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
            units = await self._book_fills(job, progress, state)
            progress.attempts.append(
                Attempt(
                    order_ref=ref,
                    limit_price=state.limit_price or math.nan,
                    quantity=state.quantity,
                    filled=units,
                    status=state.status.value,
                    mid=math.nan,
                    natural=math.nan,
                    message="resumed",
                )
            )
        return intents.height

    # ------------------------------------------------------------------ pricing
    def _price(self, job: ComboJob, quote: ComboQuote, step: int, steps: int) -> float | None:
        caps = []
        if job.min_credit is not None:
            floor = credit_cap(quote, job.min_credit / job.g)
            if floor is not None:
                caps.append(floor)
        if job.max_debit is not None:
            caps.append(job.max_debit / job.g)
        return ladder_price(quote, step, steps, cap=min(caps) if caps else None)

    @staticmethod
    def _no_price(job: ComboJob, quote: ComboQuote) -> str:
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

    async def _quote(self, job: ComboJob) -> ComboQuote:
        quotes = await self.broker.quotes([c for c, _ in job.unit_legs])
        return combo_quote(job.unit_legs, quotes)

    # ------------------------------------------------------------------ one order
    async def _attempt(
        self, job: ComboJob, progress: Progress, quote: ComboQuote, price: float, remaining: int
    ) -> None:
        sid = job.strategy_id
        ref = make_order_ref(sid, self.book.next_intent_seq(sid), None)
        order = job.order(remaining, price, ref)
        now = self.clock.now()
        day = sent_today(self.book.store, now)
        legs = order_legs_frame(sid, job.underlying, job.unit_legs, remaining, abs(price))
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
            progress.hard = caps
            progress.stop(ExecStatus.BLOCKED, f"hard cap: {caps.describe()}")
            log.warning("order %s blocked by a hard cap: %s", ref, caps.describe())
            return
        if job.margin_check:
            job.margin_check = False  # once per call: the first order is the largest
            refusal = await self._margin_refusal(order)
            if refusal is not None:
                progress.stop(ExecStatus.BLOCKED, refusal)
                log.warning("order %s not sent: %s", ref, refusal)
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
            progress.stop(ExecStatus.REJECTED, f"{ref}: {exc}")
            return
        if state.status is OrderStatus.REJECTED:
            self.book.record_order(state)
            progress.orders.append(state)
            progress.attempts.append(
                _sent(ref, state, limit=price, quantity=remaining, filled=0, quote=quote)
            )
            progress.stop(ExecStatus.REJECTED, f"{ref}: {state.message}")
            return
        state = await self._settle(state, self._step_wait(job), since=now)
        units = await self._book_fills(job, progress, state)
        progress.attempts.append(
            _sent(ref, state, limit=price, quantity=remaining, filled=units, quote=quote)
        )

    async def _margin_refusal(self, order: OrderRequest) -> str | None:
        """Why the broker's what-if margin for `order` refuses it (None: within the limit).
        A what-if the broker refuses or cannot answer refuses the entry; a lost
        connection is raised, as for any order."""
        try:
            impact = await self.broker.what_if_margin(replace(order, what_if=True))
        except BrokerError as exc:
            if exc.kind is ErrorClass.CONNECTIVITY:
                raise
            return f"margin: the broker's what-if failed ({exc}); entry refused"
        check = check_margin(
            impact,
            net_liquidation=self.net_liquidation,
            max_margin_pct=self.settings.limits.max_margin_pct,
        )
        log.info("what-if for %s: %s", order.order_ref, check.reason)
        return None if check.ok else check.reason

    async def _settle(self, state: OrderState, wait_s: float, since: datetime) -> OrderState:
        """Wait up to `wait_s` for the order to finish, then cancel it and confirm.

        Only the broker's final status counts: a cancel can lose to a fill (fully: FILLED;
        partly: CANCELLED with the fills), and an order whose cancel is not confirmed or
        cannot be sent stops the job (CancelUnconfirmed) so no next step goes out beside it.
        """
        poll = self.settings.strategies.fill_poll_s
        polls = max(1, math.ceil(wait_s / poll - 1e-9))
        ref = state.order_ref
        for _ in range(polls):
            if state.status.is_done:
                break
            await self._wait(min(poll, wait_s))
            state = await self.broker.find_order(ref) or state
        if not state.status.is_done:
            try:
                state = await self.broker.cancel_order(state.order_id)
            except BrokerError as exc:
                if exc.kind is ErrorClass.CONNECTIVITY:
                    raise
                self.book.record_order(state)
                raise CancelUnconfirmed(
                    f"cannot cancel {ref} (order {state.order_id}): {exc}; nothing more is "
                    "sent until it is settled (resume later)"
                ) from exc
            for _ in range(CANCEL_CONFIRM_POLLS):
                if state.status.is_done:
                    break
                await self._wait(poll)
                state = await self.broker.find_order(ref) or state
            if not state.status.is_done:
                self.book.record_order(state)
                raise CancelUnconfirmed(
                    f"cancel of {ref} (order {state.order_id}) not confirmed; it may still "
                    "fill: nothing more is sent until it is settled (resume later)"
                )
        return state

    async def _book_fills(self, job: ComboJob, progress: Progress, state: OrderState) -> int:
        """Record the order's executions and final state; returns combo units filled.

        The order's executions are found by its identity (orderRef, permId), among all the
        broker still has, never by a window of the host's clock: the broker's clock may
        differ from it by any amount."""
        execs = await self.broker.executions()
        mine = [e for e in execs if _of_order(e, state)]
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
            avg = job.debit(state.avg_fill_price)
        progress.orders.append(state)
        progress.executions.extend(mine)
        if units:
            progress.filled += units
            progress.cost += units * (avg if math.isfinite(avg) else 0.0)
        return units


def _of_order(e: Execution, state: OrderState) -> bool:
    """Whether execution `e` belongs to the order `state` (by orderRef or permId)."""
    return e.order_ref == state.order_ref or (state.perm_id > 0 and e.perm_id == state.perm_id)


def _sent(
    ref: str, state: OrderState, *, limit: float, quantity: int, filled: int, quote: ComboQuote
) -> Attempt:
    """The record of an order this call priced and sent (`ref`, in the state `state`)."""
    return Attempt(
        order_ref=ref,
        limit_price=limit,
        quantity=quantity,
        filled=filled,
        status=state.status.value,
        mid=quote.mid,
        natural=quote.natural,
        message=state.message,
    )
