"""What an execution call did: its status, the orders it sent, and what filled.

`Progress` is the running tally of one call in combo units (what the broker trades);
`ExecutionResult` reports it per strategy unit, built only through its named
constructors, one per kind of ending the executor produces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from core.broker.base import BrokerError, ErrorClass
from core.domain import Execution, OrderState
from core.domain.strategies import IntentPurpose
from core.risk.limits import LimitResult


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


@dataclass
class Progress:
    """What one call has done so far: attempts, broker states, executions, fills in combo
    units, and the reason (if any) that stopped the ladder."""

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

    def add_records(self, other: Progress) -> None:
        """Take over `other`'s attempts, orders and executions (not its fills)."""
        self.attempts.extend(other.attempts)
        self.orders.extend(other.orders)
        self.executions.extend(other.executions)

    @property
    def avg(self) -> float:
        return self.cost / self.filled if self.filled else math.nan


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

    @classmethod
    def settled(
        cls,
        progress: Progress,
        *,
        strategy_id: str,
        purpose: IntentPurpose,
        status: ExecStatus,
        requested: int,
        combos_per_unit: int,
        message: str,
        unwind: ExecutionResult | None = None,
    ) -> ExecutionResult:
        """The call worked its orders to an end: `progress` (combo units) per strategy
        unit, `combos_per_unit` combo units making one strategy unit."""
        return cls(
            strategy_id=strategy_id,
            purpose=purpose.value,
            status=status,
            requested=requested,
            filled=progress.filled // combos_per_unit,
            avg_price=progress.avg * combos_per_unit if progress.filled else math.nan,
            attempts=tuple(progress.attempts),
            orders=tuple(progress.orders),
            executions=tuple(progress.executions),
            message=message,
            unwind=unwind,
            hard_caps=progress.hard,
        )

    @classmethod
    def already_done(
        cls, progress: Progress, *, strategy_id: str, purpose: IntentPurpose, reason: str
    ) -> ExecutionResult:
        """Nothing (more) to send: the work was done before, or by the orders resumed."""
        return cls.settled(
            progress,
            strategy_id=strategy_id,
            purpose=purpose,
            status=ExecStatus.ALREADY_DONE,
            requested=0,
            combos_per_unit=1,
            message=reason,
        )

    @classmethod
    def not_closable(
        cls, progress: Progress, *, strategy_id: str, purpose: IntentPurpose, reason: str
    ) -> ExecutionResult:
        """The strategy's holding cannot go out as one combo (or there is none to roll)."""
        return cls.settled(
            progress,
            strategy_id=strategy_id,
            purpose=purpose,
            status=ExecStatus.NOT_CLOSABLE,
            requested=0,
            combos_per_unit=1,
            message=reason,
        )

    @classmethod
    def from_error(
        cls,
        progress: Progress,
        *,
        strategy_id: str,
        purpose: IntentPurpose,
        error: Exception,
        requested: int = 0,
        combos_per_unit: int = 1,
    ) -> ExecutionResult:
        """A call cut short by `error`: REJECTED when the broker refused, INTERRUPTED when
        the connection or a cancel confirmation was lost. Intents stay for the next call."""
        if isinstance(error, BrokerError) and error.kind is not ErrorClass.CONNECTIVITY:
            status = ExecStatus.REJECTED
        else:
            status = ExecStatus.INTERRUPTED
        return cls.settled(
            progress,
            strategy_id=strategy_id,
            purpose=purpose,
            status=status,
            requested=requested,
            combos_per_unit=combos_per_unit,
            message=f"{error}; intents kept: the next call resumes them",
        )

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


__all__ = ["Attempt", "ExecStatus", "ExecutionResult", "Progress"]
