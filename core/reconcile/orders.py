"""The orders pass: record, close out or note orders."""

from __future__ import annotations

import polars as pl

from core.domain import OrderStatus
from core.domain.breaks import BreakKind, Resolution, Severity
from core.domain.order_refs import ref_strategy_expr, v6_ref_expr
from core.domain.strategies import FillSource
from core.reconcile.model import (
    _CON_SPAN,
    _NB_SCHEMA,
    _conform,
    _schema,
)
from core.reconcile.views import _Views

_WORKING = [s.value for s in OrderStatus if not s.is_done]  # orders the broker should still work


class _Orders(_Views):
    """Pass 6: the book's orders against the broker's open orders and executions."""

    # -- orders ------------------------------------------------------------------------------
    def orders_pass(self, nf: pl.DataFrame) -> pl.DataFrame:
        now = self.now
        intents = self.book.intents.select(
            "order_ref",
            "strategy_id",
            _iqty="quantity",
            _iaction="action",
            _icon="con_id",
            _ilimit="limit_price",
        )
        book_orders = self.book.orders
        order_schema = _schema("orders")
        breaks: list[pl.DataFrame] = []
        rows: list[pl.DataFrame] = []
        open_refs = self.open_orders.get_column("order_ref").implode()
        if self.open_orders.height:
            rows.append(self._open_orders(intents, book_orders, now, breaks))
        # book orders the broker no longer works: filled or cancelled
        stale = book_orders.clear()
        if book_orders.height:
            stale = book_orders.filter(
                pl.col("status").is_in(_WORKING) & ~pl.col("order_ref").is_in(open_refs)
            )
        # V6 orders seen only through executions (never recorded, already done)
        seen = (
            nf.filter(
                (pl.col("source") == FillSource.BROKER.value)
                & (pl.col("_ref_sid") == pl.col("strategy_id"))
            )
            .group_by("order_ref")
            .agg(
                order_id=pl.col("order_id").first(),
                perm_id=pl.col("perm_id").first(),
                _strategy=pl.col("strategy_id").first(),
                _con=pl.col("con_id").first(),
                _avg=(pl.col("price") * pl.col("quantity").abs()).sum()
                / pl.col("quantity").abs().sum(),
                _side=pl.col("quantity").first(),
            )
        )
        gone = pl.lit(False)
        if book_orders.height:
            gone = pl.col("order_ref").is_in(book_orders.get_column("order_ref").implode())
        if self.open_orders.height:
            gone = gone | pl.col("order_ref").is_in(open_refs)
        if book_orders.height or self.open_orders.height:
            seen = seen.filter(~gone)
        # filled quantity (max over the order's legs) only for the orders that need it
        filled = self._filled(
            pl.concat([stale.get_column("order_ref"), seen.get_column("order_ref")]), nf
        )
        if stale.height:
            stale = (
                stale.join(filled, on="order_ref", how="left")
                .with_columns(
                    filled=pl.min_horizontal(pl.col("_filled").fill_null(0), pl.col("quantity")),
                )
                .with_columns(
                    status=pl.when(pl.col("filled") >= pl.col("quantity"))
                    .then(pl.lit(OrderStatus.FILLED.value))
                    .otherwise(pl.lit(OrderStatus.CANCELLED.value)),
                    updated_at=now,
                )
            )
            breaks.append(
                stale.with_columns(
                    break_id=pl.lit("so-") + pl.col("order_ref"),
                    kind=pl.lit(BreakKind.STALE_ORDER.value),
                    resolution=pl.lit(Resolution.ORDER_UPDATED.value),
                    resolved=pl.lit(True),
                    severity=pl.lit(Severity.INFO.value),
                    quantity_delta=pl.lit(0),
                    detail=pl.format("broker no longer works it: marked {}", pl.col("status")),
                )
            )
            rows.append(_conform(stale, order_schema))
        if seen.height:
            seen = (
                seen.join(intents, on="order_ref", how="left")
                .join(filled, on="order_ref", how="left")
                .with_columns(
                    strategy_id=pl.coalesce("strategy_id", "_strategy"),
                    con_id=pl.coalesce("_icon", "_con"),
                    action=pl.coalesce(
                        "_iaction",
                        pl.when(pl.col("_side") > 0).then(pl.lit("BUY")).otherwise(pl.lit("SELL")),
                    ),
                    quantity=pl.coalesce("_iqty", "_filled"),
                    limit_price="_ilimit",
                    avg_fill_price="_avg",
                    message=pl.lit("recorded by reconciliation from its executions"),
                    updated_at=now,
                )
                .with_columns(
                    filled=pl.min_horizontal(pl.col("_filled").fill_null(0), pl.col("quantity")),
                )
                .with_columns(
                    status=pl.when(pl.col("filled") >= pl.col("quantity"))
                    .then(pl.lit(OrderStatus.FILLED.value))
                    .otherwise(pl.lit(OrderStatus.CANCELLED.value)),
                )
            )
            rows.append(_conform(seen, order_schema))
        if breaks:
            self.break_parts.append(pl.concat([_conform(x, _NB_SCHEMA) for x in breaks]))
        if not rows:
            return pl.DataFrame(schema=order_schema)
        out = pl.concat(rows) if len(rows) > 1 else rows[0]
        return out.filter(pl.col("order_ref").is_first_distinct())

    def _open_orders(
        self,
        intents: pl.DataFrame,
        book_orders: pl.DataFrame,
        now: pl.Expr,
        breaks: list[pl.DataFrame],
    ) -> pl.DataFrame:
        """Orders the broker works: record V6's the book lacks, note the rest (breaks are
        appended to `breaks`); returns the rows whose state differs from the book."""
        oo = self.open_orders.with_columns(
            _v6=v6_ref_expr(pl.col("order_ref")),
        )
        known_sids = self.strategies.select("strategy_id")
        # V6 orders working at the broker
        v6oo = (
            oo.filter(pl.col("_v6"))
            .join(intents, on="order_ref", how="left")
            .with_columns(
                strategy_id=pl.coalesce("strategy_id", ref_strategy_expr(pl.col("order_ref")))
            )
            .with_columns(
                _known=pl.col("strategy_id").is_in(known_sids.get_column("strategy_id").implode())
            )
            .with_columns(
                _inbook=pl.col("order_ref").is_in(book_orders.get_column("order_ref").implode())
            )
        )
        live = v6oo.filter(pl.col("_known")).with_columns(
            avg_fill_price=pl.when(pl.col("avg_fill_price").is_finite())
            .then(pl.col("avg_fill_price"))
            .otherwise(None),
            updated_at=now,
        )
        missing = live.filter(~pl.col("_inbook"))
        if missing.height:
            breaks.append(
                missing.with_columns(
                    break_id=pl.lit("mo-") + pl.col("order_ref"),
                    kind=pl.lit(BreakKind.MISSING_ORDER.value),
                    resolution=pl.lit(Resolution.RECORDED_ORDER.value),
                    resolved=pl.lit(True),
                    severity=pl.lit(Severity.WARNING.value),
                    quantity_delta=pl.lit(0),
                    detail=pl.lit("V6 order working at the broker that the book had not recorded"),
                )
            )
        strays = v6oo.filter(~pl.col("_known"))
        if strays.height:
            breaks.append(
                strays.with_columns(
                    break_id=pl.lit("uo-") + pl.col("order_ref"),
                    strategy_id=pl.lit(None, dtype=pl.String),
                    kind=pl.lit(BreakKind.UNKNOWN_V6_REF.value),
                    resolution=pl.lit(Resolution.UNRESOLVED.value),
                    resolved=pl.lit(False),
                    severity=pl.lit(Severity.URGENT.value),
                    quantity_delta=pl.lit(0),
                    detail=pl.lit("working order with a V6-style ref naming no known strategy"),
                )
            )
        ext = oo.filter(~pl.col("_v6"))
        if ext.height:
            breaks.append(
                ext.with_columns(
                    break_id=pl.format("eo-{}-{}", pl.col("order_id"), pl.col("perm_id")),
                    kind=pl.lit(BreakKind.EXTERNAL_ORDER.value),
                    resolution=pl.lit(Resolution.NOTED.value),
                    resolved=pl.lit(True),
                    severity=pl.lit(Severity.WARNING.value),
                    quantity_delta=pl.lit(0),
                    detail=pl.format(
                        "order not placed by V6: {} {} (status {})",
                        pl.col("action"),
                        pl.col("quantity"),
                        pl.col("status"),
                    ),
                )
            )
        # only rows whose state differs from the book (an unchanged order is not rewritten)
        live_rows = _conform(live, _schema("orders"))
        cols = [
            "order_ref",
            "order_id",
            "perm_id",
            "status",
            "filled",
            "avg_fill_price",
            "limit_price",
            "quantity",
            "message",
        ]
        return live_rows.join(book_orders.select(cols), on=cols, how="anti", nulls_equal=True)

    def _filled(self, refs: pl.Series, nf: pl.DataFrame) -> pl.DataFrame:
        """order_ref -> _filled: the largest quantity any one contract of the order has filled
        (broker fills only), over the book's fills and this run's, for `refs` only.

        The refs are coded as an Enum so that the 80k-row group-by runs on one integer key."""
        cats = refs.drop_nulls().unique()
        if cats.is_empty():
            return pl.DataFrame(schema={"order_ref": pl.String(), "_filled": pl.Int64()})
        enum = pl.Enum(cats)
        keep = (pl.col("source") == FillSource.BROKER.value) & (pl.col("order_ref") != "")
        coded = pl.concat(
            [
                f.filter(keep)
                .select(
                    _rc=pl.col("order_ref").cast(enum, strict=False).to_physical(),
                    con_id="con_id",
                    _q=pl.col("quantity").abs(),
                )
                .filter(pl.col("_rc").is_not_null())
                for f in (self.book.fills, nf)
            ]
        )
        con = pl.col("con_id")
        lo, hi, nulls = coded.select(
            con.min().alias("lo"), con.max().alias("hi"), con.null_count()
        ).row(0)
        if not nulls and (lo is None or (lo >= 0 and hi < _CON_SPAN)):
            # one Int64 key per (order, contract): much faster to group than two columns
            key = pl.col("_rc").cast(pl.Int64) * _CON_SPAN + pl.col("con_id")
            per_con = coded.group_by(key.alias("_k")).agg(
                pl.col("_rc").first(), _f=pl.col("_q").sum()
            )
        else:
            per_con = coded.group_by("_rc", "con_id").agg(_f=pl.col("_q").sum())
        per_ref = per_con.group_by("_rc").agg(_filled=pl.col("_f").max())
        return pl.DataFrame(  # an Enum's physical code is the index of its category
            {
                "order_ref": cats.gather(per_ref.get_column("_rc")),
                "_filled": per_ref.get_column("_filled"),
            }
        )
