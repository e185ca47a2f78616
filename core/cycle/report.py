"""What one trading cycle saw and did: each step's result and the cycle's report.

Its own module so that the steps (which fill it) and the runner (which owns it) both
import it, and neither imports the other.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl

from core.broker.base import BrokerError, ErrorClass
from core.cycle.market import MarketView
from core.domain import AccountSummary, OrderStatus
from core.execution.executor import ExecStatus, ExecutionResult
from core.reconcile import ReconcileResult
from core.risk.breaker import CycleHealth, GateMode
from core.rules.engine import RulesRun
from core.strategy.pipeline import EntryPlan

log = logging.getLogger(f"v6.{__name__}")


@dataclass(frozen=True)
class ReconcileStep:
    result: ReconcileResult
    account: AccountSummary
    start_net_liq: float  # today's baseline (written by the first cycle of the day)
    pending: int = 0  # V6 strategies PENDING before this reconciliation (entries to settle)
    clock_skew_s: float = math.nan  # broker clock minus host clock, seconds (reported only)

    @property
    def unresolved_breaks(self) -> int:
        return self.result.unresolved_breaks


@dataclass(frozen=True)
class RulesStep:
    run: RulesRun | None  # None when nothing is held
    snapshot: pl.DataFrame  # strategy_snapshot rows (with units, managed, ...)

    @property
    def decisions(self) -> pl.DataFrame:
        return self.run.decisions if self.run is not None else pl.DataFrame()

    @property
    def data_points(self) -> int:
        """Strategies the rules may act on (the data-quality denominator)."""
        if self.snapshot.is_empty():
            return 0
        return int(self.snapshot.select(pl.col("managed").sum()).item())

    @property
    def no_data(self) -> int:
        return 0 if self.run is None else self.run.no_data

    @property
    def actionable(self) -> int:
        return 0 if self.run is None else self.run.actionable().height


@dataclass(frozen=True)
class ExitOrder:
    """One exit decision and what its execution did."""

    strategy_id: str
    action: str
    urgency: str
    reason: str
    result: ExecutionResult | None
    error: str | None = None


@dataclass(frozen=True)
class ExitsStep:
    resumed: tuple[ExecutionResult, ...] = ()
    orders: tuple[ExitOrder, ...] = ()

    @property
    def problems(self) -> list[str]:
        """Exits that could not be worked (an error, or the connection gave out): the cycle
        must not add risk after these."""
        out = [f"{o.strategy_id}: {o.error}" for o in self.orders if o.error]
        out += [
            f"{o.strategy_id}: {o.result.message}"
            for o in self.orders
            if o.result is not None and o.result.status is ExecStatus.INTERRUPTED
        ]
        return out

    def results(self) -> list[ExecutionResult]:
        got = [o.result for o in self.orders if o.result is not None]
        return [*self.resumed, *got]


@dataclass(frozen=True)
class EntryStep:
    plan: EntryPlan | None
    chain_rows: int = 0
    skipped_reason: str = ""


@dataclass(frozen=True)
class EntriesStep:
    results: tuple[ExecutionResult, ...] = ()


@dataclass(frozen=True)
class SummaryStep:
    account: AccountSummary | None
    net_liq: float  # NaN when unknown
    start_net_liq: float  # NaN when unknown
    positions: pl.DataFrame  # held legs with marks
    as_of: datetime

    @property
    def daily_pnl(self) -> float:
        if math.isfinite(self.net_liq) and math.isfinite(self.start_net_liq):
            return round(self.net_liq - self.start_net_liq, 2)
        return math.nan


@dataclass
class CycleReport:
    """Everything one cycle saw and did: the artifact's content and the breaker's input."""

    run_id: str
    mode: GateMode
    started_at: datetime
    exits_only: bool = False
    reconcile: ReconcileStep | None = None
    market: MarketView | None = None
    rules: RulesStep | None = None
    exits: ExitsStep | None = None
    plan: EntryStep | None = None
    entries: EntriesStep | None = None
    summary: SummaryStep | None = None
    failure: str | None = None
    failed_step: str | None = None
    disconnected_s: float = 0.0
    entries_skipped: str | None = None  # why entries did not run although the gate allowed
    broker_unreachable: bool = False  # the failure was the connection to IB (CONNECTIVITY)
    steps: list[str] = field(default_factory=list)
    finished_at: datetime | None = None

    def fail(self, step: str, exc: BaseException) -> None:
        text = str(exc).strip().splitlines()
        self.broker_unreachable = (
            isinstance(exc, BrokerError) and exc.kind is ErrorClass.CONNECTIVITY
        )
        self.failed_step = step
        self.failure = f"{step}: {type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
        log.error("cycle %s failed in %s: %s", self.run_id, step, exc)

    @property
    def ok(self) -> bool:
        return self.failure is None

    def health(self) -> CycleHealth:
        """The breaker's view of this cycle (unknown numbers are NaN, never zero)."""
        summary = self.summary
        net_liq = summary.net_liq if summary is not None else math.nan
        pnl = summary.daily_pnl if summary is not None else math.nan
        if not (math.isfinite(net_liq) and net_liq > 0):
            net_liq, pnl = math.nan, math.nan
        rules = self.rules
        # a broker report reconciliation could not trust is a failed data item of its own,
        # and so is a quote the broker withheld (an entitlement answer: 354, 10197, ...)
        suspect = self.reconcile.result.suspect_reports if self.reconcile else 0
        suspect += len(self.market.withheld) if self.market else 0
        return CycleHealth(
            ok=self.ok,
            failure=self.failure,
            daily_pnl=pnl,
            net_liq=net_liq,
            rejections=rejected_orders(all_results(self)),
            disconnected_s=float(self.disconnected_s),
            unresolved_breaks=self.reconcile.unresolved_breaks if self.reconcile else 0,
            data_quality_failures=(rules.no_data if rules else 0) + suspect,
            data_points=(rules.data_points if rules else 0) + suspect,
        )


def all_results(report: CycleReport) -> list[ExecutionResult]:
    out: list[ExecutionResult] = []
    if report.exits is not None:
        out += report.exits.results()
    if report.entries is not None:
        out += list(report.entries.results)
    return out


def rejected_orders(results: Sequence[ExecutionResult]) -> int:
    """Orders the broker refused (an unwind's too): the breaker's rejection count."""
    n = 0
    for r in results:
        n += sum(1 for a in r.attempts if a.status == OrderStatus.REJECTED)
        refused = any(a.status == OrderStatus.REJECTED for a in r.attempts)
        if r.status is ExecStatus.REJECTED and not refused:
            n += 1  # refused before an order state came back (BrokerError REJECTION)
        if r.unwind is not None:
            n += rejected_orders([r.unwind])
    return n


def order_rows(results: Sequence[ExecutionResult]) -> list[dict[str, Any]]:
    """Every order attempt of the cycle, for the artifact."""
    rows: list[dict[str, Any]] = []
    for r in results:
        for a in r.attempts:
            rows.append(
                {
                    "strategy_id": r.strategy_id,
                    "purpose": r.purpose,
                    "order_ref": a.order_ref,
                    "limit": a.limit_price,
                    "quantity": a.quantity,
                    "filled": a.filled,
                    "status": a.status,
                    "message": a.message,
                }
            )
    return rows


__all__ = [
    "CycleReport",
    "EntriesStep",
    "EntryStep",
    "ExitOrder",
    "ExitsStep",
    "ReconcileStep",
    "RulesStep",
    "SummaryStep",
    "all_results",
    "order_rows",
    "rejected_orders",
]
