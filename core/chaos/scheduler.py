"""A seeded fault plan: which fault fires before which cycle.

The plan is a pure function of (seed, cycles): a failing soak is replayed exactly by
re-running with the seed it printed. Every kind is scheduled at least once when the run
has room for it (one full shuffled round first), then extra faults fall at random.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum


class FaultKind(StrEnum):
    CONNECTION_DROP = "connection_drop"  # socket drops after an order reaches the exchange
    CONNECTIVITY_1100 = "connectivity_1100_1102"  # gateway loses, then regains, IB servers
    ORDER_REJECT = "order_reject"
    DUPLICATE_EXECUTION = "duplicate_execution"
    DELAYED_FILLS = "delayed_fills"
    PARTIAL_FILL = "partial_fill"
    NAN_GREEKS = "nan_greeks"
    STALE_QUOTES = "stale_quotes"
    CROSSED_QUOTES = "crossed_quotes"
    PACING = "pacing_violation"
    LINE_EXHAUSTION = "market_data_lines"
    PROCESS_KILL = "process_kill"  # killed between order submit and book record; restart
    COMMIT_CONFLICT = "delta_commit_conflict"  # a concurrent writer on a cycle table
    CRASH_DAY = "crash_day"  # a scripted crash regime for one whole session
    # IB's money-path habits (issue 17), forced on top of their seeded default rates
    EXEC_CORRECTION = "execution_correction"  # the next fill is reported wrong, then corrected
    LATE_COMMISSION = "late_commission"  # the next commission report comes late
    FILL_AFTER_CANCEL = "fill_after_cancel"  # the next cancel loses the race to a fill
    CLIENT_ID_326 = "client_id_326"  # the next connect finds its clientId still taken
    EARLY_ASSIGNMENT = "early_assignment"  # a short option position is assigned
    EXPIRY_EXERCISE = "expiry_exercise"  # an option position settles as at its expiry
    # wrong state that reads fine (issue 18): the cycle must fail closed
    LOST_TABLE = "lost_table"  # a book table's Delta log is gone
    ROLLED_BACK_TABLE = "rolled_back_table"  # a book table's latest commit is gone
    ABSURD_POSITION = "absurd_position"  # the gateway reports 1e15 contracts at 1e300
    UNDECODABLE_MESSAGE = "undecodable_message"  # a position message ib_async cannot decode
    CONCURRENT_CYCLE = "concurrent_cycle"  # another cycle holds the lease
    # IB's data and connectivity path (issue 24)
    DATA_LOST_1101 = "data_lost_1101"  # IB restores the connection with every subscription lost
    ENTITLEMENT = "entitlement_error"  # IB withholds market data (10197: a competing session)
    RESET_WINDOW = "reset_window"  # the gateway is down inside the planned outage window


# Kinds armed per cycle (the crash day is a session-level setting chosen up front).
CYCLE_KINDS: tuple[FaultKind, ...] = tuple(k for k in FaultKind if k is not FaultKind.CRASH_DAY)


@dataclass(frozen=True)
class FaultPlan:
    seed: int
    by_cycle: dict[int, tuple[FaultKind, ...]] = field(default_factory=dict)
    crash_session: int | None = None  # index into the run's sessions

    def at(self, cycle: int) -> tuple[FaultKind, ...]:
        return self.by_cycle.get(cycle, ())

    def counts(self) -> Counter[str]:
        c: Counter[str] = Counter(k.value for ks in self.by_cycle.values() for k in ks)
        if self.crash_session is not None:
            c[FaultKind.CRASH_DAY.value] += 1
        return c


def plan_faults(
    seed: int,
    cycles: int,
    sessions: int,
    *,
    rate: float = 0.3,
    first_cycle: int = 1,
    kinds: tuple[FaultKind, ...] = CYCLE_KINDS,
) -> FaultPlan:
    """Faults for `cycles` cycles over `sessions` sessions, drawn from `kinds`.

    `first_cycle` keeps the first cycles clean so the book has positions to break.
    One fault per cycle: faults of one cycle would otherwise mask each other's handling.
    """
    if cycles < 1 or sessions < 1:
        raise ValueError(f"plan_faults: cycles ({cycles}) and sessions ({sessions}) must be >= 1")
    if not kinds or not set(kinds) <= set(CYCLE_KINDS):
        raise ValueError(f"plan_faults: kinds must be per-cycle fault kinds, got {kinds}")
    if not 0 <= rate <= 1:
        raise ValueError(f"plan_faults: rate must be within [0, 1], got {rate}")
    rng = random.Random(seed)
    slots = list(range(min(first_cycle, cycles - 1), cycles))
    first_round = list(kinds)
    rng.shuffle(first_round)
    by_cycle: dict[int, tuple[FaultKind, ...]] = {}
    # Spread the first round over the first ~half of the run, every other cycle, so each
    # fault's aftermath (recovery, breaker cooldown) is seen before the next one lands.
    spaced = slots[::2] if len(slots) >= 2 * len(first_round) else slots
    for cycle, kind in zip(spaced, first_round, strict=False):
        by_cycle[cycle] = (kind,)
    for cycle in slots:
        if cycle not in by_cycle and rng.random() < rate:
            by_cycle[cycle] = (rng.choice(kinds),)
    crash = rng.randrange(sessions) if sessions > 1 else 0
    return FaultPlan(seed=seed, by_cycle=by_cycle, crash_session=crash)
