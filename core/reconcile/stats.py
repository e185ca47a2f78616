"""Average-cost statistics of positions from fills, as IB accounts them."""

from __future__ import annotations

import polars as pl

from core.reconcile.model import (
    _ENGINE,
)


def _stats_schema(key: str, dtype: pl.DataType) -> dict[str, pl.DataType]:
    return {
        key: dtype,
        "quantity": pl.Int64(),
        "avg_price": pl.Float64(),
        "open_qty": pl.Int64(),
        "open_commission": pl.Float64(),
    }


def _side_aggregates(fills: pl.DataFrame | pl.LazyFrame, key: str) -> pl.DataFrame:
    """Per key: quantity, whether it both bought and sold, and the weighted sums that give
    the average of a position that only ever traded one way. Additive across batches."""
    return _side_aggregates_plan(fills.lazy(), key).collect(engine=_ENGINE)


def _side_aggs() -> dict[str, pl.Expr]:
    q = pl.col("quantity")
    return {
        "_buys": (q > 0).any(),
        "_sells": (q < 0).any(),
        "_notional": (pl.col("price") * q.abs()).sum(),
        "_abs": q.abs().sum(),
        "_comm": pl.col("commission").fill_nan(0.0).fill_null(0.0).sum(),
    }


def _side_aggregates_plan(fills: pl.LazyFrame, key: str) -> pl.LazyFrame:
    return fills.group_by(key).agg(quantity=pl.col("quantity").sum(), **_side_aggs())


def _simple_stats(agg: pl.DataFrame, key: str) -> pl.DataFrame:
    flat = pl.col("quantity") == 0
    return agg.select(
        key,
        "quantity",
        avg_price=pl.when(flat).then(None).otherwise(pl.col("_notional") / pl.col("_abs")),
        open_qty=pl.when(flat).then(0).otherwise(pl.col("_abs")).cast(pl.Int64),
        open_commission=pl.when(flat).then(0.0).otherwise(pl.col("_comm")),
    )


def _ordered_stats(fills: pl.DataFrame, key: str) -> pl.DataFrame:
    """The time-ordered average-cost pass (for keys that both bought and sold)."""
    q = pl.col("quantity")
    comm = pl.col("commission").fill_nan(0.0).fill_null(0.0)
    cum = pl.col("_cum")
    prev = cum - q
    f = (
        fills.lazy()
        .select(key, "time", "exec_id", "quantity", "price", "commission")
        .sort(key, "time", "exec_id")
        .with_columns(_cum=q.cum_sum().over(key))
        .with_columns(_start=(prev == 0) | (prev.sign() * cum.sign() < 0))
        .with_columns(
            _epoch=pl.col("_start").cast(pl.Int32).cum_sum().over(key),
            _final=cum.last().over(key),
            # the part of a flipping fill that opens the new position
            _w=pl.when(pl.col("_start")).then(cum.abs()).otherwise(q.abs()),
        )
        .with_columns(
            _open=(pl.col("_epoch") == pl.col("_epoch").max().over(key))
            & (q.sign() == pl.col("_final").sign())
            & (pl.col("_final") != 0)
        )
    )
    w = pl.when(pl.col("_open")).then(pl.col("_w")).otherwise(0)
    return (
        f.group_by(key)
        .agg(
            quantity=q.sum(),
            _notional=(pl.col("price") * w).sum(),
            open_qty=w.sum(),
            open_commission=(comm * w / q.abs()).sum(),
        )
        .select(
            key,
            "quantity",
            avg_price=pl.when(pl.col("open_qty") > 0)
            .then(pl.col("_notional") / pl.col("open_qty"))
            .otherwise(None),
            open_qty="open_qty",
            open_commission="open_commission",
        )
        .collect(engine=_ENGINE)
    )


def _add_aggregates(agg: pl.DataFrame, add: pl.DataFrame, key: str) -> pl.DataFrame:
    """Side aggregates of two batches of fills combined (they are sums and any())."""
    return (
        agg.join(add, on=key, how="full", coalesce=True, suffix="_n")
        .with_columns(
            quantity=pl.col("quantity").fill_null(0) + pl.col("quantity_n").fill_null(0),
            _buys=pl.col("_buys").fill_null(False) | pl.col("_buys_n").fill_null(False),
            _sells=pl.col("_sells").fill_null(False) | pl.col("_sells_n").fill_null(False),
            _notional=pl.col("_notional").fill_null(0.0) + pl.col("_notional_n").fill_null(0.0),
            _abs=pl.col("_abs").fill_null(0) + pl.col("_abs_n").fill_null(0),
            _comm=pl.col("_comm").fill_null(0.0) + pl.col("_comm_n").fill_null(0.0),
        )
        .select(agg.columns)
    )


def _split_mixed(agg: pl.DataFrame, key: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(keys that both bought and sold and are not flat, simple stats of the others); a
    null key is never matched, so it stays with the simple ones."""
    mixed = pl.col("_buys") & pl.col("_sells") & (pl.col("quantity") != 0)
    simple = agg.filter(~mixed | pl.col(key).is_null())
    return agg.filter(mixed), _simple_stats(simple, key)


def position_stats(fills: pl.DataFrame, key: str) -> pl.DataFrame:
    """Quantity and average-cost price per `key` from fills, as IB accounts them.

    The average covers the opening fills of the current position only: a position that
    went flat (or flipped) starts afresh, and reductions do not change the average.
    Returns key, quantity, avg_price (per unit, ex commission), open_qty, open_commission.

    Most keys only ever traded one way (or are flat): their average is a plain weighted
    mean from one group-by. Only keys that both bought and sold and still hold a position
    need the time-ordered pass, and only their fills are sorted.
    """
    schema = _stats_schema(key, fills.schema[key])
    if fills.is_empty():
        return pl.DataFrame(schema=schema)
    agg = _side_aggregates(fills, key)
    mixed, simple = _split_mixed(agg, key)
    if mixed.is_empty():
        return simple.cast(schema)  # type: ignore[arg-type]
    ordered = _ordered_stats(fills.join(mixed.select(key), on=key, how="semi"), key)
    return pl.concat([simple.cast(schema), ordered.cast(schema)])  # type: ignore[arg-type]
