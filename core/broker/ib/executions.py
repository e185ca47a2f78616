"""The execution journal: every fill this broker has seen (live, recovered or requested),
once each by exec_id. After each (re)connect it asks for executions since the last one
seen, so fills made while disconnected are not lost."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta

from ib_async import ExecutionFilter, Fill, Trade

from core.broker.base import BrokerError
from core.broker.ib.connection import Connection
from core.broker.ib.convert import execution_from_fill, ib_filter_time
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
        self._journal: dict[str, Execution] = {}
        self._last_exec_time: datetime | None = None
        self._listeners: list[Callable[[Execution], None]] = []

    def journal(self) -> list[Execution]:
        """Every execution seen, once each, in time order."""
        return sorted(self._journal.values(), key=lambda e: (e.time, e.exec_id))

    def add_listener(self, listener: Callable[[Execution], None]) -> Callable[[], None]:
        """Call `listener` for each new execution; returns the unsubscribe."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    async def executions(self, since: datetime | None = None) -> list[Execution]:
        """Fills at or after `since` (seconds resolution on the wire), each exec_id once."""
        if since is not None and since.tzinfo is None:
            raise ValueError(f"since must be tz-aware UTC, got {since!r}")
        await self._conn.ready()
        fills = await self.fetch_fills(since)
        floor = since.replace(microsecond=0) if since is not None else None
        out: list[Execution] = []
        seen: set[str] = set()
        for f in fills:
            self._ingest(f)
            e = execution_from_fill(f)
            if e.exec_id in seen or (floor is not None and e.time < floor):
                continue
            seen.add(e.exec_id)
            out.append(e)
        return out

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
        """Record a fill once (by exec_id); a later commission report fills in the cost."""
        e = execution_from_fill(fill)
        known = self._journal.get(e.exec_id)
        if known is not None:
            if math.isnan(known.commission) and not math.isnan(e.commission):
                self._journal[e.exec_id] = e
            return None
        self._journal[e.exec_id] = e
        if self._last_exec_time is None or e.time > self._last_exec_time:
            self._last_exec_time = e.time
        for listener in list(self._listeners):
            try:
                listener(e)
            except Exception:
                logger.exception("execution listener failed for %s", e.exec_id)
        return e
