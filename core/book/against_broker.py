"""Reconcile the book against a live broker: read, `reconcile`, write. The one composition
behind both the trading cycle's reconcile step and the position_reconciliation flow, so
the two cannot drift (watermark, account, tolerance, write order).

It lives in `book`, above `reconcile`: the reconciliation engine decides from frames (no
I/O), and the book reads the broker and books the result. Retrying it whole is safe: the
reads are read-only and `Book.apply` re-merges the same rows (fills insert-only), so a
retry after a partial write books nothing twice.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from core.book.ledger import Book
from core.broker.base import Broker
from core.config import Settings
from core.domain import AccountSummary
from core.reconcile.acks import acknowledged
from core.reconcile.engine import reconcile
from core.reconcile.model import (
    BookFrames,
    BrokerFrames,
    ReconcileResult,
    Tolerance,
    executions_since,
)
from core.reconcile.screen import ReportBounds

log = logging.getLogger(f"v6.{__name__}")


@dataclass(frozen=True)
class Reconciliation:
    """One reconciliation against the broker: what it read, decided and wrote."""

    result: ReconcileResult
    before: BookFrames  # the book as read, before this reconciliation's writes
    since: datetime | None  # the executions watermark the broker was asked from
    broker: BrokerFrames  # what the broker reported
    account: str | None  # the account reconciled; None = every account the broker reports
    written: Mapping[str, int]  # rows written per table


async def reconcile_against_broker(
    book: Book,
    broker: Broker,
    settings: Settings,
    run_id: str,
    *,
    account: str | None = None,
    summary: AccountSummary | None = None,
) -> Reconciliation:
    """Make `book` agree with `broker` (connected) and write the result.

    The account reconciled: `settings.broker.account`, else `account` (the one the broker
    named, e.g. in its account summary), else the single account the broker's positions
    and executions name (None, no filter, when they name several or none). Its size (the
    sanity bounds' yardstick, see `core.reconcile.screen`) is `summary`'s net liquidation,
    read from the broker when not given.
    """
    cfg = settings.reconciliation
    before, last = book.frames(), book.last_reconciled_at()
    since = executions_since(last, timedelta(minutes=cfg.executions_overlap_min))
    if summary is None:
        summary = await broker.account_summary()
    positions = await broker.positions()
    executions = await broker.executions(since)
    open_orders = await broker.open_orders()
    as_of = book.clock.now()
    frames = BrokerFrames.from_domain(positions, executions, open_orders)
    acct = settings.broker.account or account or _single_account(frames)
    bounds = ReportBounds(
        net_liq=summary.net_liquidation,
        quantity_multiple=cfg.absurd_quantity_multiple,
        quantity_floor=cfg.absurd_quantity_floor,
        cost_multiple=cfg.absurd_cost_multiple,
        adopt_max_pct=cfg.adopt_external_max_pct,
        acknowledged=acknowledged(book.store),
    )
    result = reconcile(
        before,
        frames,
        as_of=as_of,
        run_id=run_id,
        account=acct,
        tolerance=Tolerance(cfg.avg_price_tolerance, cfg.avg_price_tolerance_rel),
        bounds=bounds,
    )
    written = book.apply(result)
    book.fill_in_commissions(frames.executions)
    if result.unresolved_breaks:
        log.warning(
            "reconciliation: %d unresolved break(s), %d suspect report(s)",
            result.unresolved_breaks,
            result.suspect_reports,
        )
    return Reconciliation(result, before, since, frames, acct, written)


def _single_account(frames: BrokerFrames) -> str | None:
    """The account the broker's positions and executions name, when there is exactly one."""
    accounts = (
        pl.concat([frames.positions.select("account"), frames.executions.select("account")])
        .filter(pl.col("account").is_not_null() & (pl.col("account") != ""))
        .unique()
    )
    return accounts.item() if accounts.height == 1 else None
