"""The execution journal: every fill this broker has seen (live, recovered or requested),
once each. After each (re)connect it asks for executions since the last one seen, so fills
made while disconnected are not lost.

How IB's execution reports are read (docs/IB_ASSUMPTIONS.md, "Money path (V6)"):
- a combo's BAG-level execution is the order's net fill, not a position change: it is
  kept apart (`bag_fills`) and never becomes a leg execution;
- a correction (same execId up to the final period, higher version) replaces the fill it
  corrects: one fill per `fill_key`, the highest version wins;
- a commission report that comes late fills in the commission of the fill it names;
- a report that cannot be read (an unknown contract) or that repeats an execId with other
  content is a break (`breaks`), logged and kept with its raw fields, never a crash.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from ib_async import ExecutionFilter, Fill, Trade

from core.broker.base import BrokerError
from core.broker.ib.connection import Connection
from core.broker.ib.convert import (
    exec_version,
    execution_from_fill,
    fill_key,
    ib_filter_time,
    is_bag_fill,
)
from core.broker.ib.logs import v6_logger
from core.broker.ib.requests import Requests
from core.domain import Execution

logger = v6_logger(__name__)


class ExecutionJournal:
    """Executions by exec_id, their listeners, and the executions request."""

    def __init__(self, conn: Connection, requests: Requests) -> None:
        self._conn = conn
        self._requests = requests
        conn.ib.execDetailsEvent += self._on_exec_details
        conn.ib.commissionReportEvent += self._on_commission
        self._journal: dict[str, Execution] = {}  # by fill_key: the latest version
        self._breaks: list[ExecutionBreak] = []
        self._last_exec_time: datetime | None = None
        self._listeners: list[Callable[[Execution], None]] = []

    def journal(self) -> list[Execution]:
        """Every execution seen, once each, in time order."""
        return sorted(self._journal.values(), key=lambda e: (e.time, e.exec_id))

    def add_listener(self, listener: Callable[[Execution], None]) -> Callable[[], None]:
        """Call `listener` for each new execution (a correction is one, a late commission
        is not); returns the unsubscribe."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def breaks(self) -> list[ExecutionBreak]:
        """Execution reports that could not be booked as they came, with their raw fields."""
        return list(self._breaks)

    async def executions(self, since: datetime | None = None) -> list[Execution]:
        """Fills at or after `since` (seconds resolution on the wire), each fill once in its
        latest version; BAG-level reports and unreadable ones are left out."""
        if since is not None and since.tzinfo is None:
            raise ValueError(f"since must be tz-aware UTC, got {since!r}")
        await self._conn.ready()
        fills = await self.fetch_fills(since)
        floor = since.replace(microsecond=0) if since is not None else None
        keys: set[str] = set()
        for f in fills:
            self._ingest(f)
            if not is_bag_fill(f):
                keys.add(fill_key(f.execution.execId))
        out = [self._journal[k] for k in keys if k in self._journal]
        out = [e for e in out if floor is None or e.time >= floor]
        return sorted(out, key=lambda e: (e.time, e.exec_id))

    async def fetch_fills(self, since: datetime | None) -> list[Fill]:
        """The broker's fills since `since` (all it has when None), with the commission
        reports ib_async already holds for them."""
        flt = ExecutionFilter(time=ib_filter_time(since)) if since else ExecutionFilter()
        ib = self._conn.ib
        fills: list[Fill] = await self._requests.request("executions", ib.reqExecutionsAsync(flt))
        known = {f.execution.execId: f for f in ib.fills()}
        out = []
        for f in fills:
            seen = known.get(f.execution.execId)
            if seen is not None and seen.commissionReport.execId:
                f = Fill(f.contract, f.execution, seen.commissionReport, f.time)
            out.append(f)
        return out

    async def recover(self) -> None:
        """Ask for executions since the last one seen (all, on a first connect)."""
        since = self._last_exec_time
        try:
            fills = await self.fetch_fills(since - timedelta(seconds=1) if since else None)
        except BrokerError as exc:
            logger.warning("could not recover executions after connecting: %s", exc)
            return
        new = [e for f in fills if (e := self._ingest(f)) is not None]
        if new and since is not None:
            logger.info("recovered %d execution(s) made while disconnected", len(new))

    def _on_exec_details(self, trade: Trade, fill: Fill) -> None:
        self._ingest(fill)

    def _on_commission(self, trade: Trade, fill: Fill, report: object) -> None:
        self._ingest(fill)

    def _ingest(self, fill: Fill) -> Execution | None:
        """Record a fill once; a correction replaces the version it corrects, a later
        commission report fills in the cost. Returns the execution when it is new."""
        if is_bag_fill(fill):
            return None
        try:
            e = execution_from_fill(fill)
        except (ValueError, KeyError) as exc:
            self._break(fill, f"unreadable execution: {exc}")
            return None
        key = fill_key(e.exec_id)
        known = self._journal.get(key)
        if known is not None:
            return self._update(known, e, fill)
        self._journal[key] = e
        if self._last_exec_time is None or e.time > self._last_exec_time:
            self._last_exec_time = e.time
        self._notify(e)
        return e

    def _update(self, known: Execution, e: Execution, fill: Fill) -> Execution | None:
        """A report of a fill already in the journal: a correction, a late commission, a
        repeat, or a conflict (same execId, other content: a break, the first kept)."""
        key = fill_key(e.exec_id)
        new_v, old_v = exec_version(e.exec_id), exec_version(known.exec_id)
        if new_v > old_v:
            logger.info("execution %s corrects %s", e.exec_id, known.exec_id)
            self._journal[key] = e
            self._notify(e)
            return e
        if new_v < old_v:
            return None  # an older version, already replaced
        if _content(known) != _content(e):
            self._break(fill, f"execId {e.exec_id} reported again with other content")
            return None
        if math.isnan(known.commission) and not math.isnan(e.commission):
            self._journal[key] = e  # the same execution, now with its cost: not a new one
        return None

    def _notify(self, e: Execution) -> None:
        for listener in list(self._listeners):
            try:
                listener(e)
            except Exception:
                logger.exception("execution listener failed for %s", e.exec_id)

    def _break(self, fill: Fill, reason: str) -> None:
        x, c = fill.execution, fill.contract
        raw = {
            "execId": x.execId,
            "orderId": x.orderId,
            "permId": x.permId,
            "orderRef": x.orderRef,
            "side": x.side,
            "shares": float(x.shares),
            "price": x.price,
            "time": str(x.time),
            "acctNumber": x.acctNumber,
            "secType": c.secType,
            "conId": c.conId,
            "symbol": c.symbol,
            "localSymbol": c.localSymbol,
        }
        if any(b.raw == raw for b in self._breaks):
            return
        logger.error("execution break: %s (%s)", reason, raw)
        self._breaks.append(ExecutionBreak(reason, raw))


@dataclass(frozen=True)
class ExecutionBreak:
    """An execution report V6 could not book as it came: why, and its raw fields."""

    reason: str
    raw: dict[str, object]


def _content(e: Execution) -> tuple[object, ...]:
    """What must not change between two reports of one execId version."""
    return (e.contract.con_id, e.side, e.quantity, e.price, e.time, e.order_id, e.perm_id)
