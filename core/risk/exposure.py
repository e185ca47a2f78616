"""Portfolio exposures as polars frames: the input contract of the limit checks.

Two frames describe a book (the current one, or a single entry candidate):

legs (one row per option leg)
    strategy_id str, underlying str, quantity Int64 (signed contracts: + long, - short),
    delta Float64 (per unit of underlying, IB's convention, e.g. -0.16; null/NaN = unknown),
    multiplier Int64 (e.g. 100), strike Float64.
strategies (one row per strategy)
    strategy_id str, underlying str, max_loss Float64 (USD, defined risk, > 0),
    buying_power Float64 (USD the broker holds against it, >= 0), opened_at Datetime UTC,
    optional closed_at Datetime UTC (null = open; closed rows only count toward
    "new strategies today").

Delta unit: position delta in share-equivalents / 100, i.e. delta * quantity * multiplier
/ 100. For a 100-multiplier option that is "contracts of stock-like exposure": a short
0.16-delta put, quantity -1, is +0.16. `LimitSettings.max_portfolio_delta` uses this unit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta

import polars as pl

from core.domain.timezones import MARKET_TZ, UTC_US

LEG_SCHEMA = pl.Schema(
    {
        "strategy_id": pl.String(),
        "underlying": pl.String(),
        "quantity": pl.Int64(),
        "delta": pl.Float64(),
        "multiplier": pl.Int64(),
        "strike": pl.Float64(),
    }
)
STRATEGY_SCHEMA = pl.Schema(
    {
        "strategy_id": pl.String(),
        "underlying": pl.String(),
        "max_loss": pl.Float64(),
        "buying_power": pl.Float64(),
        "opened_at": UTC_US,
        "closed_at": UTC_US,
    }
)
_OPTIONAL = {"closed_at"}


def conform(frame: pl.DataFrame, schema: pl.Schema, what: str) -> pl.DataFrame:
    """Select and cast `frame` to `schema`, naming the column and the fix on any problem.

    Numeric columns are cast losslessly (an Int32 quantity is fine, 1.5 contracts is not);
    optional columns that are missing are added as nulls.
    """
    problems: list[str] = []
    exprs: list[pl.Expr] = []
    for name, dtype in schema.items():
        if name not in frame.columns:
            if name in _OPTIONAL:
                exprs.append(pl.lit(None, dtype=dtype).alias(name))
            else:
                problems.append(f"{what}: column '{name}' is missing (expected {dtype})")
            continue
        have = frame.schema[name]
        if have == pl.Null:  # an all-None column: type it
            exprs.append(pl.col(name).cast(dtype))
            continue
        if dtype == UTC_US:
            if not isinstance(have, pl.Datetime) or have.time_zone != "UTC":
                problems.append(
                    f"{what}: column '{name}' is {have}, expected a UTC datetime; use "
                    f"pl.col('{name}').dt.convert_time_zone('UTC')"
                )
                continue
            exprs.append(pl.col(name).cast(UTC_US))
            continue
        if dtype == pl.String and have != pl.String:
            problems.append(f"{what}: column '{name}' is {have}, expected a string")
            continue
        if dtype.is_numeric() and not have.is_numeric():
            problems.append(f"{what}: column '{name}' is {have}, expected {dtype}")
            continue
        exprs.append(pl.col(name).cast(dtype, strict=True, wrap_numerical=False).alias(name))
    if problems:
        raise ValueError("; ".join(problems))
    try:
        out = frame.select(exprs)
    except pl.exceptions.InvalidOperationError as exc:
        raise ValueError(f"{what}: a column cannot be cast losslessly: {exc}") from None
    for name, dtype in schema.items():
        if dtype == pl.Int64 and frame.schema.get(name, pl.Int64).is_float():
            bad = frame.filter(pl.col(name) != pl.col(name).round(0))
            if not bad.is_empty():
                raise ValueError(
                    f"{what}: column '{name}' must hold whole numbers, "
                    f"got {bad[name].to_list()[:5]}"
                )
    return out


def leg_delta() -> pl.Expr:
    """Position delta of a leg in share-equivalents / 100 (NaN when delta is unknown)."""
    return (
        pl.col("delta").fill_null(math.nan)
        * pl.col("quantity").cast(pl.Float64)
        * pl.col("multiplier").cast(pl.Float64)
        / 100.0
    )


def delta_by_underlying(legs: pl.DataFrame) -> pl.DataFrame:
    """Net position delta per underlying (a NaN leg delta makes its underlying NaN)."""
    return (
        legs.group_by("underlying")
        .agg(delta=leg_delta().sum(), unknown=leg_delta().is_nan().any())
        .with_columns(
            delta=pl.when(pl.col("unknown")).then(pl.lit(math.nan)).otherwise(pl.col("delta"))
        )
        .drop("unknown")
        .sort("underlying")
    )


SHARES_PER_LOT = 100  # stock counts toward the contract caps in lots of one option's delivery


def order_size(legs: pl.DataFrame) -> tuple[int, float]:
    """(contracts, notional USD) of an order's legs.

    contracts = sum |quantity|, a multiplier-1 leg (stock) counted in 100-share lots (the
    option contract that delivers them); notional = sum |quantity| * multiplier * strike
    (a stock leg's "strike" is its price): the gross underlying amount the legs control. It
    overstates a spread's risk on purpose: the hard caps are a backstop against runaway
    size, not a risk model.
    """
    q = pl.col("quantity").abs()
    row = legs.select(
        contracts=pl.when(pl.col("multiplier") == 1)
        .then((q + SHARES_PER_LOT - 1) // SHARES_PER_LOT)
        .otherwise(q)
        .sum(),
        notional=(
            pl.col("quantity").abs().cast(pl.Float64)
            * pl.col("multiplier").cast(pl.Float64)
            * pl.col("strike")
        ).sum(),
    ).row(0)
    return int(row[0] or 0), float(row[1] or 0.0)


FAR_FACTOR = 3.0  # stress price for legs with unbounded upside risk: 3 x the highest strike


def worst_expiry_value(legs: pl.DataFrame, by: str) -> pl.DataFrame:
    """The lowest value at expiry (USD) of each group of legs: columns `by`, `worst`.

    `legs`: `by`, sec_type, right, strike, quantity (signed contracts), multiplier. Every
    leg is valued at the same underlying price S (a roll's old and new expiries alike).
    The value is piecewise linear in S, so its minimum sits at S = 0, at a strike, or on
    the far side, taken at `FAR_FACTOR` x the highest strike. A group's max loss is then
    the premium it paid minus `worst` (never below 0).
    """
    points = pl.concat(
        [
            legs.select(by).unique().with_columns(S=pl.lit(0.0)),
            legs.select(by, S=pl.col("strike").cast(pl.Float64)).drop_nulls(),
            legs.group_by(by).agg(
                S=pl.col("strike").max().cast(pl.Float64).fill_null(0.0) * FAR_FACTOR
            ),
        ]
    ).unique()
    k, s = pl.col("strike"), pl.col("S")
    value = (
        pl.when(pl.col("sec_type") == "STK")
        .then(s)
        .when(pl.col("right") == "C")
        .then((s - k).clip(lower_bound=0.0))
        .otherwise((k - s).clip(lower_bound=0.0))
    )
    return (
        legs.join(points, on=by)
        .group_by(by, "S")
        .agg(v=(pl.col("quantity") * pl.col("multiplier") * value).sum())
        .group_by(by)
        .agg(worst=pl.col("v").min())
    )


def daily_returns(
    bars: pl.DataFrame | pl.LazyFrame,
    symbols: Sequence[str],
    now: datetime,
    lookback_days: int,
) -> pl.DataFrame:
    """Close-to-close daily returns (market-date closes) for the last `lookback_days` sessions.

    `bars` is `underlying_bars`-shaped (symbol, ts, close). Returns one row per market date
    and one column per symbol that has bars; missing days are null.
    """
    wanted = sorted(set(symbols))
    start = now - timedelta(days=2 * lookback_days + 10)  # calendar days covering the sessions
    closes = (
        bars.lazy()
        .filter(pl.col("symbol").is_in(wanted) & (pl.col("ts") <= now) & (pl.col("ts") > start))
        .with_columns(day=pl.col("ts").dt.convert_time_zone(MARKET_TZ.key).dt.date())
        .group_by("symbol", "day")
        .agg(close=pl.col("close").sort_by("ts").last())
        .collect()
    )
    if closes.is_empty():
        return pl.DataFrame({"day": []}, schema={"day": pl.Date})
    wide = closes.pivot(on="symbol", index="day", values="close").sort("day")
    cols = [c for c in wide.columns if c != "day"]
    return (
        wide.tail(lookback_days + 1)
        .with_columns([(pl.col(c) / pl.col(c).shift(1) - 1.0).alias(c) for c in cols])
        .slice(1)
    )


def correlations(returns: pl.DataFrame, target: str, others: Sequence[str]) -> pl.DataFrame:
    """Pairwise-complete correlation of `target`'s returns with each of `others`.

    Returns symbol, corr (null when it cannot be computed), n_obs (overlapping returns).
    """
    rows = [s for s in dict.fromkeys(others) if s != target]
    if not rows:
        return pl.DataFrame(schema={"symbol": pl.String, "corr": pl.Float64, "n_obs": pl.Int64})
    have = set(returns.columns)
    exprs: list[pl.Expr] = []
    for sym in rows:
        if target in have and sym in have:
            a, b = pl.col(target), pl.col(sym)
            both = a.is_not_null() & b.is_not_null() & a.is_finite() & b.is_finite()
            exprs.append(pl.corr(a.filter(both), b.filter(both)).alias(f"c:{sym}"))
            exprs.append(both.sum().cast(pl.Int64).alias(f"n:{sym}"))
        else:
            exprs.append(pl.lit(None, dtype=pl.Float64).alias(f"c:{sym}"))
            exprs.append(pl.lit(0, dtype=pl.Int64).alias(f"n:{sym}"))
    stats = returns.select(exprs).row(0, named=True) if returns.height else {}
    corr = [stats.get(f"c:{s}") for s in rows]
    return pl.DataFrame(
        {
            "symbol": rows,
            "corr": [None if c is None or not math.isfinite(c) else float(c) for c in corr],
            "n_obs": [int(stats.get(f"n:{s}") or 0) for s in rows],
        },
        schema={"symbol": pl.String, "corr": pl.Float64, "n_obs": pl.Int64},
    )
