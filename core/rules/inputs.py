"""The strategy snapshot: one row per open strategy, everything the exit rules look at.

Units and meaning of every column (the rules compare these to `RuleSettings` thresholds):

- `profit_pct`: P&L as % of the entry credit (of the debit for long positions); +80 = 80% of
  the credit kept, -200 = lost twice the credit. `profit_pct_expr` computes it from prices.
- `dte`: calendar days to the nearest expiry (Int64), as of the market date.
- `net_delta`, `net_gamma`: greeks of ONE unit of the strategy (one spread / one contract),
  per share, signed (short delta < 0): not multiplied by quantity or by 100.
- `iv`: current implied vol of the strategy (decimal, 0.20 = 20%); `entry_iv` the same at
  entry. "IV jumps > 50%" means (iv / entry_iv - 1) * 100 > 50: a relative change.
- `iv_percentile`: where today's IV sits in its own history, 0..100.
- `vix`, `entry_vix`: VIX level now and at entry; "VIX up > 5 points" = vix - entry_vix > 5.
- `underlying_move_1h_pct`: % change of the underlying from its close one hour ago to its
  latest close (negative = fall). "Falls > 3% in an hour" means this is < -3.
- `stock_shares`: signed shares of stock assignment or exercise delivered into the
  strategy (Int64).
- `pin_distance_pct`: |strike / spot - 1| x 100 of the short option leg closest to the
  underlying among those expiring today (market date); +inf when none expires today.
- `dividend_cushion`, `dividend_days`: for the short calls that are in the money and whose
  expiry is on or after the underlying's next ex-dividend date (after today): the smallest
  extrinsic value (mid - intrinsic, $ per share) less the next dividend, and the calendar
  days to that ex-date. Below zero, a holder gains by exercising on the eve of the ex-date.
  Both +inf when no short call is so exposed.
- `put_extrinsic`: the smallest extrinsic value ($ per share) of the short puts in the
  money; +inf when none is.
- `regime`: the market regime of the underlying (`regime.py`), null/"unknown" when not known.

`entry_iv`/`entry_vix` are optional here: once recorded they live in `rule_state` (which
wins, being write-once); a snapshot value only fills a strategy that has none yet.

NaN and +-inf in any float input become null: a missing quote or a NaN greek must surface as
NO_DATA, never compare as a number (polars orders NaN above every value). The exception is
+inf in the exposure columns above (`INF_MEANS_NONE`): "nothing exposed", which compares as
far from every threshold; NaN and -inf there are null all the same.

Only the cycle's snapshot, built from the book's legs, knows delivered stock and the
exposures: a snapshot without those columns has none (stock 0, exposures +inf).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta

import polars as pl

from core.domain.regimes import Regime
from core.domain.strategies import StrategyType
from core.rules.vocab import KNOWN_REGIMES

FLOAT_INPUTS = (
    "profit_pct",
    "net_delta",
    "net_gamma",
    "iv",
    "iv_percentile",
    "vix",
    "underlying_move_1h_pct",
)
REQUIRED: Mapping[str, pl.DataType] = {
    "strategy_id": pl.String(),
    "strategy_type": pl.String(),
    "dte": pl.Int64(),
    **{name: pl.Float64() for name in FLOAT_INPUTS},
}
OPTIONAL: Mapping[str, pl.DataType] = {
    "underlying": pl.String(),
    "entry_iv": pl.Float64(),
    "entry_vix": pl.Float64(),
    "regime": pl.String(),
}
SNAPSHOT_SCHEMA = pl.Schema(
    {
        "strategy_id": pl.String(),
        "strategy_type": pl.String(),
        "underlying": pl.String(),
        "regime": pl.String(),
        "profit_pct": pl.Float64(),
        "dte": pl.Int64(),
        "net_delta": pl.Float64(),
        "net_gamma": pl.Float64(),
        "iv": pl.Float64(),
        "entry_iv": pl.Float64(),
        "iv_percentile": pl.Float64(),
        "vix": pl.Float64(),
        "entry_vix": pl.Float64(),
        "underlying_move_1h_pct": pl.Float64(),
        "stock_shares": pl.Int64(),
        "pin_distance_pct": pl.Float64(),
        "dividend_cushion": pl.Float64(),
        "dividend_days": pl.Float64(),
        "put_extrinsic": pl.Float64(),
    }
)
INF_MEANS_NONE = ("pin_distance_pct", "dividend_cushion", "dividend_days", "put_extrinsic")
_ABSENT: Mapping[str, float] = {"stock_shares": 0, **dict.fromkeys(INF_MEANS_NONE, math.inf)}
_STRATEGY_TYPES = [t.value for t in StrategyType]
_REGIMES = sorted({*KNOWN_REGIMES, Regime.UNKNOWN.value})


def normalize_snapshot(snapshot: pl.DataFrame, *, check_vocabulary: bool = True) -> pl.DataFrame:
    """Validate and coerce a snapshot to `SNAPSHOT_SCHEMA` (extra columns are dropped).

    A missing column or a wrong type is a programming error and raises; a missing *value*
    (null/NaN/inf) is data and flows through as null, to become NO_DATA in the engine.
    """
    return snapshot_lazy(snapshot, check_vocabulary=check_vocabulary).collect()


def snapshot_lazy(snapshot: pl.DataFrame, *, check_vocabulary: bool = True) -> pl.LazyFrame:
    """`normalize_snapshot` as a lazy query (checks run now, casts when collected)."""
    return snapshot.lazy().select(snapshot_exprs(snapshot, check_vocabulary=check_vocabulary))


def snapshot_exprs(snapshot: pl.DataFrame, *, check_vocabulary: bool = True) -> list[pl.Expr]:
    """Check a snapshot and return the expressions that normalize it (one per schema column),
    so the engine can run them inside its own query instead of materializing a copy.

    Columns, dtypes and ids are checked now (raising). `check_vocabulary=False` skips the
    strategy_type/regime check, for a caller that does it in its own pass (the engine checks
    them while computing its type codes).
    """
    problems: list[str] = []
    for name, dtype in REQUIRED.items():
        if name not in snapshot.columns:
            problems.append(f"column '{name}' is missing (expected {dtype})")
    if problems:
        raise ValueError("strategy snapshot: " + "; ".join(problems))
    exprs: list[pl.Expr] = []
    for name, dtype in SNAPSHOT_SCHEMA.items():
        if name not in snapshot.columns:
            exprs.append(pl.lit(_ABSENT.get(name), dtype=dtype).alias(name))
            continue
        have = snapshot.schema[name]
        if not _castable(have, dtype):
            problems.append(f"column '{name}' has dtype {have}, expected {dtype}")
            continue
        col = pl.col(name).cast(dtype)
        if name in INF_MEANS_NONE:
            col = pl.when(col.is_finite() | (col == math.inf)).then(col)  # NaN, -inf -> null
        elif dtype == pl.Float64:
            col = pl.when(col.is_finite()).then(col)  # NaN, inf -> null
        exprs.append(col.alias(name))
    if problems:
        raise ValueError(
            "strategy snapshot: " + "; ".join(problems) + "; cast the columns before evaluating"
        )
    keys = ("strategy_id", "strategy_type", "regime") if check_vocabulary else ("strategy_id",)
    _check_values(
        snapshot.select(e for e in exprs if e.meta.output_name() in keys), check_vocabulary
    )
    return exprs


def _castable(have: pl.DataType, want: pl.DataType) -> bool:
    if have == want or have == pl.Null:
        return True
    if want == pl.Float64:
        return have.is_numeric()
    if want == pl.Int64:
        return have.is_integer()
    return False


def _check_values(frame: pl.DataFrame, vocabulary: bool) -> None:
    """Identity and vocabulary checks, as one aggregate pass (details only on failure)."""
    c = pl.col
    bad_type = ~c("strategy_type").is_in(_STRATEGY_TYPES) | c("strategy_type").is_null()
    bad_regime = c("regime").is_not_null() & ~c("regime").is_in(_REGIMES)
    zero = pl.lit(0, dtype=pl.UInt32)
    null_ids, unique_ids, n_bad_types, n_bad_regimes = frame.select(
        c("strategy_id").null_count().alias("null_ids"),
        c("strategy_id").n_unique().alias("unique_ids"),
        (bad_type.sum() if vocabulary else zero).alias("bad_types"),
        (bad_regime.sum() if vocabulary else zero).alias("bad_regimes"),
    ).row(0)
    problems: list[str] = []
    if null_ids:
        problems.append(f"{null_ids} row(s) have a null strategy_id")
    if unique_ids != frame.height:
        dup = frame.filter(c("strategy_id").is_duplicated())["strategy_id"].unique().sort()
        problems.append(f"strategy_id values {dup.head(5).to_list()} appear more than once")
    if n_bad_types:
        shown = frame.filter(bad_type)["strategy_type"].unique().head(5).to_list()
        problems.append(f"strategy_type values {shown} are not one of {_STRATEGY_TYPES}")
    if n_bad_regimes:
        shown = frame.filter(bad_regime)["regime"].unique().head(5).to_list()
        problems.append(f"regime values {shown} are not one of {_REGIMES} (or null)")
    if problems:
        raise ValueError("strategy snapshot: " + "; ".join(problems))


def profit_pct_expr(entry_price: pl.Expr, mark: pl.Expr, is_credit: pl.Expr) -> pl.Expr:
    """P&L as % of what was paid/received at entry.

    Prices are per unit and positive: for a credit strategy `entry_price` is the credit
    received and `mark` the debit to close it now, so profit = (credit - mark) / credit; for
    a long (debit) position profit = (mark - debit) / debit. A non-positive entry price has no
    meaningful percentage and gives null.
    """
    pnl = pl.when(is_credit).then(entry_price - mark).otherwise(mark - entry_price)
    return pl.when(entry_price > 0).then(pnl / entry_price * 100.0)


def dte_expr(expiry: pl.Expr, today: date) -> pl.Expr:
    """Calendar days from `today` (the market date, America/New_York) to `expiry`."""
    return (expiry - pl.lit(today)).dt.total_days().cast(pl.Int64)


def underlying_move_1h(
    bars: pl.DataFrame | pl.LazyFrame,
    now: datetime,
    *,
    max_staleness: timedelta = timedelta(minutes=15),
) -> pl.DataFrame:
    """Per symbol: % change from the close one hour ago to the latest close, as of `now`.

    `bars` has symbol, ts (bar start, UTC), close. Both closes must be fresh (the latest no
    older than `max_staleness`, the reference within `max_staleness` before now-1h); otherwise
    the move is null, which the catastrophe rule reports as missing rather than as calm.
    """
    now = _utc(now)
    hour_ago = now - timedelta(hours=1)
    c = pl.col
    lf = bars.lazy().select("symbol", "ts", "close").filter(c("ts") <= now).sort("symbol", "ts")
    latest = lf.group_by("symbol").agg(c("ts").last().alias("_ts"), c("close").last().alias("_c"))
    ref = (
        lf.filter(c("ts") <= hour_ago)
        .group_by("symbol")
        .agg(c("ts").last().alias("_ts0"), c("close").last().alias("_c0"))
    )
    fresh = (c("_ts") >= now - max_staleness) & (c("_ts0") >= hour_ago - max_staleness)
    return (
        latest.join(ref, on="symbol", how="left")
        .select(
            "symbol",
            pl.when(fresh & (c("_c0") > 0))
            .then((c("_c") / c("_c0") - 1.0) * 100.0)
            .alias("underlying_move_1h_pct"),
        )
        .sort("symbol")
        .collect()
    )


def build_snapshot(
    strategies: pl.DataFrame,
    *,
    regimes: pl.DataFrame | None = None,
    moves: pl.DataFrame | None = None,
    today: date | None = None,
) -> pl.DataFrame:
    """Assemble a snapshot from per-strategy facts plus per-underlying context.

    - `profit_pct` is taken as given, or computed from `entry_price`, `mark`, `is_credit`.
    - `dte` is taken as given, or computed from an `expiry` Date column and `today`.
    - `regimes` (symbol, regime; from `detect_regimes`) and `moves` (symbol,
      underlying_move_1h_pct; from `underlying_move_1h`) are joined on `underlying`; a
      strategy whose underlying is absent gets null (unknown regime / missing move).
    """
    frame = strategies
    if "profit_pct" not in frame.columns:
        need = {"entry_price", "mark", "is_credit"} - set(frame.columns)
        if need:
            raise ValueError(
                f"build_snapshot: give 'profit_pct' or all of entry_price, mark, is_credit "
                f"(missing {sorted(need)})"
            )
        frame = frame.with_columns(
            profit_pct_expr(pl.col("entry_price"), pl.col("mark"), pl.col("is_credit")).alias(
                "profit_pct"
            )
        )
    if "dte" not in frame.columns:
        if "expiry" not in frame.columns or today is None:
            raise ValueError("build_snapshot: give 'dte', or an 'expiry' column and today=")
        frame = frame.with_columns(dte_expr(pl.col("expiry"), today).alias("dte"))
    for extra, column in ((regimes, "regime"), (moves, "underlying_move_1h_pct")):
        if extra is None:
            continue
        if "underlying" not in frame.columns:
            raise ValueError(f"build_snapshot: joining {column} needs an 'underlying' column")
        frame = frame.drop(column, strict=False).join(
            extra.select(pl.col("symbol").alias("underlying"), column),
            on="underlying",
            how="left",
        )
    return normalize_snapshot(frame)


def _utc(ts: datetime) -> datetime:
    if ts.tzinfo is None:
        raise ValueError(f"now={ts!r} is naive; pass a tz-aware datetime (e.g. datetime.now(UTC))")
    return ts.astimezone(UTC)
