"""Running a reconciliation: the passes in order and the rows they produce."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import polars as pl

from core.domain.timezones import MARKET_TZ
from core.reconcile.model import (
    _BREAK_INFO,
    _NF_SCHEMA,
    BookFrames,
    BrokerFrames,
    ReconcileResult,
    Tolerance,
    _conform,
    _describe_expr,
    _schema,
)
from core.reconcile.orders import _Orders
from core.reconcile.passes import _Passes
from core.reconcile.screen import ReportBounds, absurd_reports

log = logging.getLogger(f"v6.{__name__}")


def reconcile(
    book: BookFrames,
    broker: BrokerFrames,
    *,
    as_of: datetime,
    run_id: str,
    account: str | None = None,
    tolerance: Tolerance | None = None,
    bounds: ReportBounds | None = None,
    fills_only: bool = False,
) -> ReconcileResult:
    """Compare broker and book; return what to write so that the book equals the broker.

    `bounds`: what a believable report looks like and which breaks a person acknowledged
    (see `core.reconcile.screen`); the default checks finiteness and quantities only.
    `fills_only=True` only links executions of V6's own orders to their legs (what
    `Book.record_fills` uses during a trading cycle): no breaks, positions or orders.
    """
    if as_of.tzinfo is None:
        raise ValueError(f"as_of must be tz-aware UTC, got naive {as_of!r}")
    tol = tolerance or Tolerance()
    today = as_of.astimezone(MARKET_TZ).date()
    ctx = _Context(
        book, broker, as_of, run_id, today, tol, account, bounds or ReportBounds(), fills_only
    )
    return ctx.run_fills_only() if fills_only else ctx.run()


class _Context(_Passes, _Orders):
    """One reconciliation: the passes in order, then the rows to write."""

    # -- snapshot and breaks ----------------------------------------------------------------------
    def snapshot(self, stats: pl.DataFrame) -> pl.DataFrame:
        con = (
            self.info.join(self._delta(), on="con_id", how="full", coalesce=True)
            .with_columns(
                book_quantity_before=pl.col("book0").fill_null(0),
                book_quantity=pl.col("book0").fill_null(0) + pl.col("d").fill_null(0),
                broker_quantity=pl.col("broker").fill_null(0),
            )
            .filter(
                (pl.col("book_quantity_before") != 0)
                | (pl.col("book_quantity") != 0)
                | (pl.col("broker_quantity") != 0)
            )
        )
        # the average after this run's adjustments: the broker's where it was adjusted
        con = con.join(stats.select("con_id", _avg="avg_price"), on="con_id", how="left").select(
            pl.exclude("symbol", "sec_type", "multiplier", "_avg", "broker_avg"),
            pl.col("symbol").fill_null("?"),
            pl.col("sec_type").fill_null("STK"),
            pl.col("multiplier").fill_null(1),
            run_id=pl.lit(self.run_id),
            as_of=self.now,
            broker_avg_price=pl.col("broker_avg"),
            book_avg_price=pl.col("_avg"),
            agrees=pl.col("book_quantity") == pl.col("broker_quantity"),
            date=pl.lit(self.as_of.astimezone(UTC).date()),
        )
        return _conform(con, _schema("positions_snapshots"))

    def break_rows(self, nf: pl.DataFrame) -> pl.DataFrame:
        if not self.break_parts:
            return pl.DataFrame(schema=_schema("reconciliation_breaks"))
        b = pl.concat(self.break_parts)
        # legs named by the fills each break produced; synthetic breaks name them by break_id
        # (only breaks that lack their leg or strategy need to look)
        need = b.filter(pl.col("leg_id").is_null() | pl.col("strategy_id").is_null())
        if need.height:
            leg_of = (
                nf.filter(pl.col("break_id").is_in(need.get_column("break_id").implode()))
                .sort("exec_id")
                .filter(pl.col("break_id").is_first_distinct())
                .select("break_id", _leg="leg_id", _sid="strategy_id")
            )
            b = b.join(leg_of, on="break_id", how="left").with_columns(
                leg_id=pl.coalesce("leg_id", "_leg"), strategy_id=pl.coalesce("strategy_id", "_sid")
            )
        has_con = pl.col("con_id").is_not_null()
        b = (
            b.join(
                self.info.select(_BREAK_INFO),
                on="con_id",
                how="left",
            )
            .with_columns(
                run_id=pl.lit(self.run_id),
                detected_at=self.now,
                book_quantity=pl.when(has_con).then(pl.col("book0").fill_null(0)),
                broker_quantity=pl.when(has_con).then(pl.col("broker").fill_null(0)),
                broker_avg_price=pl.coalesce("broker_avg_price", "broker_avg"),
                contract=_describe_expr(),
            )
            .filter(pl.col("break_id").is_first_distinct())
        )
        return _conform(b, _schema("reconciliation_breaks"))

    def _fill_rows(self, nf: pl.DataFrame) -> pl.DataFrame:
        return _conform(
            nf.with_columns(
                side=pl.when(pl.col("quantity") > 0).then(pl.lit("BUY")).otherwise(pl.lit("SELL")),
                recorded_at=self.now,
                order_ref=pl.col("order_ref").fill_null(""),
                order_id=pl.col("order_id").fill_null(0),
                perm_id=pl.col("perm_id").fill_null(0),
                account=pl.col("account").fill_null(""),
                commission=pl.when(pl.col("commission").is_finite()).then(pl.col("commission")),
            ).filter(pl.col("quantity") != 0),
            _schema("fills"),
        )

    def run_fills_only(self) -> ReconcileResult:
        self.corrections_pass()
        self.executions_pass(v6_only=True)
        nf, new_strats, new_legs = self.finalize_targets()
        legs, strategies = self.leg_and_strategy_updates(nf, new_strats, new_legs)
        return ReconcileResult(
            run_id=self.run_id,
            as_of=self.as_of,
            fills=self._fill_rows(nf),
            strategies=strategies,
            legs=legs,
            orders=pl.DataFrame(schema=_schema("orders")),
            breaks=pl.DataFrame(schema=_schema("reconciliation_breaks")),
            snapshot=pl.DataFrame(schema=_schema("positions_snapshots")),
            duplicate_reports=self.duplicates,
        )

    def refused(self, absurd: pl.DataFrame) -> ReconcileResult:
        """The report holds absurd numbers: only their breaks, nothing booked, no snapshot
        (the executions watermark stays where it was)."""
        self.break_parts = [absurd]
        empty = pl.DataFrame(schema=_schema("fills"))
        return ReconcileResult(
            run_id=self.run_id,
            as_of=self.as_of,
            fills=empty,
            strategies=pl.DataFrame(schema=_schema("strategies")),
            legs=pl.DataFrame(schema=_schema("legs")),
            orders=pl.DataFrame(schema=_schema("orders")),
            breaks=self.break_rows(_conform(empty, _NF_SCHEMA)),
            snapshot=pl.DataFrame(schema=_schema("positions_snapshots")),
            duplicate_reports=self.duplicates,
        )

    def run(self) -> ReconcileResult:
        held = self.info.select(pl.col("book0").abs().max()).item()
        absurd = absurd_reports(self.positions, self._new_exec, int(held or 0), self.bounds)
        if absurd.height:
            log.error(
                "reconciliation %s: %d absurd broker report(s); nothing booked",
                self.run_id,
                absurd.height,
            )
            return self.refused(absurd)
        self.conflicts_pass()
        self.unbookable_pass()
        self.corrections_pass()
        self.executions_pass()
        self.focus()
        self.vanished_pass()
        self.quantity_pass()
        self.hold_pass()
        self.price_pass()
        nf, new_strats, new_legs = self.finalize_targets()
        legs, strategies = self.leg_and_strategy_updates(nf, new_strats, new_legs)
        orders = self.orders_pass(nf)
        breaks = self.break_rows(nf)
        snapshot = self.snapshot(self._stats_now())
        fills = self._fill_rows(nf)
        result = ReconcileResult(
            run_id=self.run_id,
            as_of=self.as_of,
            fills=fills,
            strategies=strategies,
            legs=legs,
            orders=orders,
            breaks=breaks,
            snapshot=snapshot,
            duplicate_reports=self.duplicates,
        )
        if result.breaks.height:
            log.info(
                "reconciliation %s: %d break(s), %d unresolved, %d fill(s) booked",
                self.run_id,
                result.breaks.height,
                result.unresolved_breaks,
                fills.height,
            )
        return result
