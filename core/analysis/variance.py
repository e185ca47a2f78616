"""Historical (backtest) vs live: is live trading still behaving the way history said it would?

Pure functions over polars frames; the flow does the I/O. Every comparison is made per
cell: (strategy_type, regime), each strategy type over all regimes, each regime over all
types, and everything (`"ALL"` marks the aggregated dimension).

Method, stated once so the numbers can be trusted:
- Live side = trades closed in the window (`window_days` back from the run); historical
  side = one whole backtest run (by default the latest).
- Win = realised `pnl > 0` (money after commissions, what "probability of profit" means).
- Prediction error = predicted minus realised: `expected_return_pct - pnl_pct` and
  `prob_profit - win`; bias > 0 means the model was over-optimistic. MAE, MSE and bias
  are reported per cell and side; the live-vs-historical difference of the error is
  Welch-tested like any other mean.
- Tests: Welch t (mean P&L %, holding days, slippage, prediction errors; from group
  aggregates, vectorised over all cells), two-sample Kolmogorov-Smirnov (whole
  distribution of P&L %, holding days, slippage), chi-square on a 2x2 table (win rate)
  and on the 2xK table of exit-reason counts (exit mix). KS p-values are scipy's exact
  ones up to 10,000 values per side and Kolmogorov's limiting law above (see `ks_test`).
- Confidence intervals: percentile bootstrap of live-minus-historical mean, seeded,
  `bootstrap_samples` replicates. A side with more than `bootstrap_max_n` trades is not
  resampled: its replicate means are drawn from the normal approximation (CLT), which is
  what resampling a large sample converges to. This bounds the cost per cell at
  `bootstrap_samples * bootstrap_max_n` draws.
- Minimum sample: a test needs at least `max(min_trades, 2)` non-null values on both
  sides; otherwise its status is "insufficient data, n=<n> (...)" and every number on the
  row (values, statistic, p-values, interval) is null, never a number.
- Multiple testing: Holm's step-down adjustment over every test of the run (it controls
  the family-wise error rate like Bonferroni, and is uniformly more powerful). A row is
  flagged as drift when its Holm-adjusted p-value is below `significance`.
- Chi-square p-values are asymptotic; with very few trades per exit reason they are
  approximate, which the minimum sample size only partly guards against.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
from scipy import stats

from core.config import AnalysisSettings
from core.domain.timezones import UTC_US
from core.store.schemas.analysis import INSUFFICIENT

log = logging.getLogger(f"v6.{__name__}")

ALL = "ALL"
LIVE = "live"
HIST = "hist"
CELL = ("strategy_type", "regime")
# Aggregation levels: which of the cell columns are kept (the others become "ALL").
LEVELS: tuple[tuple[str, ...], ...] = ((), ("strategy_type",), ("regime",), CELL)

# Source column -> metric name in variance_results, for every mean-type comparison.
MEAN_METRICS: dict[str, str] = {
    "pnl_pct": "pnl_pct",
    "holding_days": "holding_days",
    "slippage_vs_mid": "slippage_vs_mid",
    "return_error": "expected_return_error",
    "prob_error": "prob_profit_error",
}
KS_METRICS: tuple[str, ...] = ("pnl_pct", "holding_days", "slippage_vs_mid")
ERROR_COLS: tuple[str, ...] = ("return_error", "prob_error")
BOOT_COLS: tuple[str, ...] = (*MEAN_METRICS, "win")  # aggregated: count, mean, std
TESTS_WITH_P = ("welch_t", "ks", "chi2")
KS_EXACT_MAX_N = 10_000  # scipy's own threshold for exact p-values

TRADE_COLUMNS = (
    "strategy_id",
    "strategy_type",
    "regime",
    "pnl",
    "pnl_pct",
    "holding_days",
    "exit_reason",
    "slippage_vs_mid",
)
PREDICTION_COLUMNS = ("strategy_id", "expected_return_pct", "prob_profit")

RESULT_SCHEMA = pl.Schema(
    {
        "run_date": pl.Date(),
        "metric": pl.String(),
        "test": pl.String(),
        "strategy_type": pl.String(),
        "regime": pl.String(),
        "n_live": pl.Int64(),
        "n_hist": pl.Int64(),
        "live_value": pl.Float64(),
        "hist_value": pl.Float64(),
        "statistic": pl.Float64(),
        "p_value": pl.Float64(),
        "p_adjusted": pl.Float64(),
        "ci_low": pl.Float64(),
        "ci_high": pl.Float64(),
        "drift": pl.Boolean(),
        "status": pl.String(),
        "window_days": pl.Int64(),
        "hist_run_id": pl.String(),
        "config_hash": pl.String(),
        "computed_at": UTC_US,
    }
)
_ROW_SCHEMA = {
    k: RESULT_SCHEMA[k]
    for k in (
        "metric",
        "test",
        "strategy_type",
        "regime",
        "n_live",
        "n_hist",
        "live_value",
        "hist_value",
        "statistic",
        "p_value",
        "ci_low",
        "ci_high",
    )
}


class AnalysisInputError(ValueError):
    """Input frames the analysis cannot use; the message names the frame and the fix."""


@dataclass(frozen=True)
class VarianceReport:
    """Everything one night's analysis found, ready to store, weigh and render."""

    results: pl.DataFrame  # variance_results rows
    summary: pl.DataFrame  # per cell and side: n, win rate, P&L %, holding, slippage
    prediction_errors: pl.DataFrame  # per cell, side and target: n, mae, mse, bias
    exit_mix: pl.DataFrame  # per cell and exit reason: n_live, n_hist
    run_date: date
    n_live: int
    n_hist: int
    hist_run_id: str | None
    config_hash: str | None

    @property
    def drifts(self) -> pl.DataFrame:
        return self.results.filter(pl.col("drift"))

    @property
    def insufficient(self) -> pl.DataFrame:
        return self.results.filter(pl.col("status").str.starts_with(INSUFFICIENT))

    def headline(self) -> dict[str, Any]:
        """The few numbers the owner looks at first (overall cell)."""
        overall = self.summary.filter((pl.col("strategy_type") == ALL) & (pl.col("regime") == ALL))
        out: dict[str, Any] = {
            "run_date": self.run_date.isoformat(),
            "n_live": self.n_live,
            "n_hist": self.n_hist,
            "hist_run_id": self.hist_run_id,
            "tests": int(self.results.filter(pl.col("test").is_in(TESTS_WITH_P)).height),
            "drift_flags": int(self.drifts.height),
            "insufficient": int(self.insufficient.height),
        }
        for side in (LIVE, HIST):
            row = overall.filter(pl.col("side") == side)
            for col in ("win_rate", "mean_pnl_pct", "total_pnl"):
                out[f"{side}_{col}"] = row.get_column(col).item() if row.height else None
        return out


# -- window and run selection --------------------------------------------------------------


def live_window(as_of: datetime, window_days: int) -> tuple[datetime, datetime]:
    """(start, end] of the live window: trades closed in the last `window_days` days."""
    if as_of.tzinfo is None or as_of.utcoffset() != timedelta(0):
        raise AnalysisInputError(f"as_of must be tz-aware UTC, got {as_of!r}; pass datetime.UTC")
    if window_days < 1:
        raise AnalysisInputError(f"window_days must be >= 1, got {window_days}")
    return as_of - timedelta(days=window_days), as_of


def latest_run_id(backtest_trades: pl.LazyFrame | pl.DataFrame) -> str | None:
    """The run with the latest `run_at` (ties broken by run_id), or None without runs."""
    runs = (
        backtest_trades.lazy()
        .group_by("run_id")
        .agg(pl.col("run_at").max())
        .sort(["run_at", "run_id"])
        .tail(1)
        .collect()
    )
    return None if runs.is_empty() else str(runs.get_column("run_id").item())


# -- the analysis --------------------------------------------------------------------------


def analyse(
    live_trades: pl.DataFrame,
    hist_trades: pl.DataFrame,
    live_predictions: pl.DataFrame | None = None,
    hist_predictions: pl.DataFrame | None = None,
    *,
    settings: AnalysisSettings,
    run_date: date,
    computed_at: datetime | None = None,
    hist_run_id: str | None = None,
    config_hash: str | None = None,
    seed: int = 0,
) -> VarianceReport:
    """Compare live trades (already windowed) with historical ones; see the module doc."""
    computed_at = computed_at or datetime.now(UTC)
    obs = pl.concat(
        [
            _observations(live_trades, live_predictions, LIVE),
            _observations(hist_trades, hist_predictions, HIST),
        ]
    )
    # One pass over the trades per finest cell; coarser cells combine those moments.
    fine_lf = obs.lazy().group_by(["side", *CELL]).agg(_fine_aggregations())
    exit_lf = obs.lazy().group_by(["side", *CELL, "exit_reason"]).agg(n=pl.len().cast(pl.Int64))
    fine, fine_exit = pl.collect_all([fine_lf, exit_lf])
    # Fixed order so the combinations and tables below (and hence a seeded run) repeat;
    # only the last bits of polars' parallel sums may differ between runs.
    fine = fine.sort(["side", *CELL])
    fine_exit = fine_exit.sort(["side", *CELL, "exit_reason"])
    side_stats = _combine_levels(fine)
    exit_mix = _exit_levels(fine_exit)
    wide = _wide(side_stats)
    min_n = max(settings.min_trades, 2)

    raw = _RawCells(obs)
    rows = [
        _welch_rows(wide),
        _descriptive_rows(wide),
        _win_rate_rows(wide, min_n),
        _ks_rows(wide, raw, min_n),
        _exit_mix_rows(wide, exit_mix, min_n),
    ]
    results = pl.concat([r for r in rows if r.height], how="vertical")
    results = _attach_cis(results, wide, raw, settings, min_n, seed)
    results = (
        _finish(results, settings, min_n)
        .with_columns(
            run_date=pl.lit(run_date, pl.Date),
            window_days=pl.lit(settings.window_days, pl.Int64),
            hist_run_id=pl.lit(hist_run_id, pl.String),
            config_hash=pl.lit(config_hash, pl.String),
            computed_at=pl.lit(computed_at).cast(UTC_US),
        )
        .select(RESULT_SCHEMA.names())
        .sort(["metric", "test", *CELL])
    )

    return VarianceReport(
        results=results,
        summary=_summary(side_stats),
        prediction_errors=_prediction_errors(side_stats),
        exit_mix=exit_mix,
        run_date=run_date,
        n_live=live_trades.height,
        n_hist=hist_trades.height,
        hist_run_id=hist_run_id,
        config_hash=config_hash,
    )


def _require(frame: pl.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise AnalysisInputError(
            f"{what} lacks columns {missing} (has {frame.columns}); read it from its table "
            "with the analysis schema (core.store.schemas.analysis)"
        )


def _observations(
    trades: pl.DataFrame, predictions: pl.DataFrame | None, side: str
) -> pl.DataFrame:
    """One row per trade with the columns every metric needs, predictions joined on."""
    _require(trades, TRADE_COLUMNS, f"{side} trades")
    keys = ["strategy_id"]
    if predictions is not None and "run_id" in trades.columns and "run_id" in predictions.columns:
        keys.append("run_id")
    lf = trades.lazy().select(*keys, *TRADE_COLUMNS[1:])
    if predictions is not None and predictions.height:
        _require(predictions, PREDICTION_COLUMNS, f"{side} predictions")
        pred = (
            predictions.lazy()
            .select(*keys, "expected_return_pct", "prob_profit")
            .unique(keys, keep="last")
        )
        lf = lf.join(pred, on=keys, how="left", maintain_order="left")
    else:
        lf = lf.with_columns(
            expected_return_pct=pl.lit(None, pl.Float64), prob_profit=pl.lit(None, pl.Float64)
        )
    win = (pl.col("pnl") > 0).cast(pl.Float64)
    return lf.select(
        side=pl.lit(side),
        strategy_type=pl.col("strategy_type"),
        regime=pl.col("regime"),
        pnl=pl.col("pnl").cast(pl.Float64),
        pnl_pct=pl.col("pnl_pct").cast(pl.Float64),
        holding_days=pl.col("holding_days").cast(pl.Float64),
        slippage_vs_mid=pl.col("slippage_vs_mid").cast(pl.Float64),
        exit_reason=pl.col("exit_reason"),
        win=win,
        return_error=pl.col("expected_return_pct") - pl.col("pnl_pct"),
        prob_error=pl.col("prob_profit") - win,
    ).collect()


def _at_level(lf: pl.LazyFrame, level: tuple[str, ...]) -> pl.LazyFrame:
    return lf.with_columns(pl.lit(ALL).alias(c) for c in CELL if c not in level)


def _fine_aggregations() -> list[pl.Expr]:
    """Combinable moments per finest cell: count, mean, M2 (sum of squared deviations)."""
    c = pl.col
    out: list[pl.Expr] = [pl.len().cast(pl.Int64).alias("n"), c("pnl").sum().alias("total_pnl")]
    for col in BOOT_COLS:
        out += [
            c(col).count().cast(pl.Int64).alias(f"{col}__n"),
            c(col).mean().alias(f"{col}__mean"),
            (c(col).var(ddof=0) * c(col).count()).fill_null(0.0).alias(f"{col}__m2"),
        ]
    for col in ERROR_COLS:
        out += [c(col).abs().sum().alias(f"{col}__abs"), c(col).pow(2).sum().alias(f"{col}__sq")]
    return out


def _combine_levels(fine: pl.DataFrame) -> pl.DataFrame:
    """Per side and cell at every level: n, mean, std, MAE, MSE, from the finest cells.

    Means and M2 combine exactly (Chan et al.'s parallel formula), so the coarse cells
    need no second pass over the trades.
    """
    c = pl.col
    aggs: list[pl.Expr] = [c("n").sum(), c("total_pnl").sum()]
    for col in BOOT_COLS:
        n_i, mean_i = c(f"{col}__n"), c(f"{col}__mean").fill_null(0.0)
        n = n_i.sum()
        mean = (n_i * mean_i).sum() / n
        aggs += [
            n.alias(f"{col}__n"),
            mean.alias(f"{col}__mean"),
            (c(f"{col}__m2").fill_null(0.0) + n_i * (mean_i - mean).pow(2))
            .sum()
            .alias(f"{col}__m2"),
        ]
    for col in ERROR_COLS:
        aggs += [
            (c(f"{col}__{k}").sum() / c(f"{col}__n").sum()).alias(f"{col}__{m}")
            for k, m in (("abs", "mae"), ("sq", "mse"))
        ]
    levelled = pl.concat([_at_level(fine.lazy(), level) for level in LEVELS])
    combined = levelled.group_by(["side", *CELL]).agg(aggs).collect()
    stds = [
        pl.when(c(f"{col}__n") >= 2)
        .then((c(f"{col}__m2") / (c(f"{col}__n") - 1)).sqrt())
        .alias(f"{col}__std")
        for col in BOOT_COLS
    ]
    means = [
        pl.when(c(f"{col}__n") > 0).then(c(f"{col}__mean")).alias(f"{col}__mean")
        for col in BOOT_COLS
    ]
    return combined.with_columns(*stds, *means, win_rate=c("win__mean")).drop(
        [f"{col}__m2" for col in BOOT_COLS]
    )


def _exit_levels(fine_exit: pl.DataFrame) -> pl.DataFrame:
    """Exit-reason counts per cell at every level, live and historical side by side."""
    levelled = pl.concat([_at_level(fine_exit.lazy(), level) for level in LEVELS])
    return (
        levelled.group_by([*CELL, "exit_reason"])
        .agg(
            n_live=_side_count(LIVE),
            n_hist=_side_count(HIST),
        )
        .sort([*CELL, "exit_reason"])
        .collect()
    )


def _side_count(side: str) -> pl.Expr:
    return pl.col("n").filter(pl.col("side") == side).sum().cast(pl.Int64)


def _wide(side_stats: pl.DataFrame) -> pl.DataFrame:
    """One row per cell, `<stat>_live` and `<stat>_hist` side by side; n = 0 where absent."""
    value_cols = [c for c in side_stats.columns if c not in ("side", *CELL)]
    parts = [
        side_stats.filter(pl.col("side") == side)
        .drop("side")
        .rename({c: f"{c}_{side}" for c in value_cols})
        for side in (LIVE, HIST)
    ]
    cells = (
        pl.concat([p.select(CELL) for p in parts])
        .vstack(pl.DataFrame({"strategy_type": [ALL], "regime": [ALL]}))
        .unique()
    )
    wide = cells.join(parts[0], on=CELL, how="left").join(parts[1], on=CELL, how="left")
    counts = [c for c in wide.columns if c == f"n_{LIVE}" or c == f"n_{HIST}" or "__n_" in c]
    return wide.with_columns(pl.col(counts).fill_null(0)).sort(CELL)


def _rows(**cols: Any) -> pl.DataFrame:
    """A results fragment with the common row schema; absent columns are null."""
    n = len(next(iter(v for v in cols.values() if isinstance(v, list | np.ndarray | pl.Series))))
    data = {k: cols.get(k, [None] * n) for k in _ROW_SCHEMA}
    for k, v in data.items():
        if isinstance(v, str):
            data[k] = [v] * n
        elif isinstance(v, np.ndarray):
            data[k] = [None if not np.isfinite(x) else float(x) for x in v.tolist()]
    return pl.DataFrame(data, schema=_ROW_SCHEMA)


def _welch_rows(wide: pl.DataFrame) -> pl.DataFrame:
    """Welch t for every mean-type metric and cell at once, from the group aggregates."""
    frames = []
    for col, metric in MEAN_METRICS.items():
        g = {
            f"{k}_{s}": wide.get_column(f"{col}__{k}_{s}")
            .cast(pl.Float64)
            .fill_null(np.nan)
            .to_numpy()
            for k in ("mean", "std", "n")
            for s in (LIVE, HIST)
        }
        with np.errstate(divide="ignore", invalid="ignore"):
            t, p = stats.ttest_ind_from_stats(
                g["mean_live"],
                g["std_live"],
                g["n_live"],
                g["mean_hist"],
                g["std_hist"],
                g["n_hist"],
                equal_var=False,
            )
        t, p = np.asarray(t, dtype=float), np.asarray(p, dtype=float)
        # Both sides constant: the t statistic is 0/0. Equal means -> no evidence; unequal
        # means -> certain difference (the limit of the test as the variances vanish).
        degenerate = (g["std_live"] == 0) & (g["std_hist"] == 0)
        same = g["mean_live"] == g["mean_hist"]
        t = np.where(degenerate & same, 0.0, t)
        p = np.where(degenerate, np.where(same, 1.0, 0.0), p)
        frames.append(
            _rows(
                metric=metric,
                test="welch_t",
                strategy_type=wide.get_column("strategy_type").to_list(),
                regime=wide.get_column("regime").to_list(),
                n_live=wide.get_column(f"{col}__n_{LIVE}").to_list(),
                n_hist=wide.get_column(f"{col}__n_{HIST}").to_list(),
                live_value=g["mean_live"],
                hist_value=g["mean_hist"],
                statistic=t,
                p_value=p,
            )
        )
    return pl.concat(frames)


def _descriptive_rows(wide: pl.DataFrame) -> pl.DataFrame:
    """MAE, MSE and bias of both prediction errors, per side (no test: description)."""
    frames = []
    for col in ERROR_COLS:
        for stat, src in (("mae", "mae"), ("mse", "mse"), ("bias", "mean")):
            frames.append(
                _rows(
                    metric=MEAN_METRICS[col],
                    test=stat,
                    strategy_type=wide.get_column("strategy_type").to_list(),
                    regime=wide.get_column("regime").to_list(),
                    n_live=wide.get_column(f"{col}__n_{LIVE}").to_list(),
                    n_hist=wide.get_column(f"{col}__n_{HIST}").to_list(),
                    live_value=_floats(wide, f"{col}__{src}_{LIVE}"),
                    hist_value=_floats(wide, f"{col}__{src}_{HIST}"),
                )
            )
    return pl.concat(frames)


def _floats(wide: pl.DataFrame, col: str) -> np.ndarray:
    return wide.get_column(col).cast(pl.Float64).fill_null(np.nan).to_numpy()


def _win_rate_rows(wide: pl.DataFrame, min_n: int) -> pl.DataFrame:
    """Chi-square on the 2x2 win/loss table per cell (Yates-corrected, scipy's default)."""
    n_l = wide.get_column(f"n_{LIVE}").to_numpy()
    n_h = wide.get_column(f"n_{HIST}").to_numpy()
    r_l = _floats(wide, f"win_rate_{LIVE}")
    r_h = _floats(wide, f"win_rate_{HIST}")
    stat = np.full(wide.height, np.nan)
    pval = np.full(wide.height, np.nan)
    for i in np.flatnonzero((n_l >= min_n) & (n_h >= min_n)):
        wins = np.rint([r_l[i] * n_l[i], r_h[i] * n_h[i]])
        table = np.array([wins, [n_l[i], n_h[i]] - wins])
        if (table.sum(axis=1) == 0).any():  # all wins or all losses on both sides
            stat[i], pval[i] = 0.0, 1.0
        else:
            res = stats.chi2_contingency(table)
            stat[i], pval[i] = res.statistic, res.pvalue
    return _rows(
        metric="win_rate",
        test="chi2",
        strategy_type=wide.get_column("strategy_type").to_list(),
        regime=wide.get_column("regime").to_list(),
        n_live=n_l.tolist(),
        n_hist=n_h.tolist(),
        live_value=r_l,
        hist_value=r_h,
        statistic=stat,
        p_value=pval,
    )


class _RawCells:
    """Per-cell raw samples for the tests that need them (KS, bootstrap).

    The columns become numpy arrays once (null -> NaN); a cell is the union of the row
    indices of the finest cells it covers, so no level copies the whole frame.
    """

    def __init__(self, obs: pl.DataFrame) -> None:
        self._cols = {
            col: obs.get_column(col).cast(pl.Float64).fill_null(np.nan).to_numpy()
            for col in BOOT_COLS
        }
        groups = (
            obs.select("side", *CELL)
            .with_row_index("i")
            .group_by(["side", *CELL])
            .agg(pl.col("i").sort())
            .sort(["side", *CELL])
        )
        index = groups.get_column("i")
        self._fine: dict[tuple[str, str, str], np.ndarray] = {
            (side, t, r): index[k].to_numpy().astype(np.int64)
            for k, (side, t, r) in enumerate(groups.select("side", *CELL).iter_rows())
        }

    def rows(self, strategy_type: str, regime: str, side: str) -> np.ndarray:
        parts = [
            idx
            for (s, t, r), idx in self._fine.items()
            if s == side and strategy_type in (ALL, t) and regime in (ALL, r)
        ]
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)

    def values(self, strategy_type: str, regime: str, side: str, col: str) -> np.ndarray:
        """The non-missing values of one column in one cell."""
        v = self._cols[col][self.rows(strategy_type, regime, side)]
        return v[~np.isnan(v)]

    def matrix(self, strategy_type: str, regime: str, side: str) -> np.ndarray:
        """(n, len(BOOT_COLS)) values of one cell, NaN = missing."""
        rows = self.rows(strategy_type, regime, side)
        return np.column_stack([self._cols[col][rows] for col in BOOT_COLS])


def ks_test(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sample, two-sided Kolmogorov-Smirnov (D, p) of two sorted samples.

    Up to KS_EXACT_MAX_N per side: scipy's `ks_2samp` (exact p-value). Above: the same D,
    with the p-value of Kolmogorov's limiting distribution (`scipy.stats.kstwobign`) at
    D * sqrt(n1 n2 / (n1 + n2)); at these sizes it matches the finite-sample law to
    within the noise, and avoids scipy's slow finite-n tail computation.
    """
    n1, n2 = a.size, b.size
    if max(n1, n2) <= KS_EXACT_MAX_N:
        res = stats.ks_2samp(a, b)
        return float(res.statistic), float(res.pvalue)
    points = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, points, side="right") / n1
    cdf_b = np.searchsorted(b, points, side="right") / n2
    d = float(np.max(np.abs(cdf_a - cdf_b)))
    p = float(stats.kstwobign.sf(d * np.sqrt(n1 * n2 / (n1 + n2))))
    return d, min(max(p, 0.0), 1.0)


def _sorted_median(v: np.ndarray) -> float:
    mid = v.size // 2
    return float(v[mid] if v.size % 2 else (v[mid - 1] + v[mid]) / 2)


def _ks_rows(wide: pl.DataFrame, raw: _RawCells, min_n: int) -> pl.DataFrame:
    """Two-sample KS per cell and distribution metric (scipy; few cells, so few calls)."""
    frames = []
    for col in KS_METRICS:
        n_l = wide.get_column(f"{col}__n_{LIVE}").to_numpy()
        n_h = wide.get_column(f"{col}__n_{HIST}").to_numpy()
        stat, pval, med_l, med_h = (np.full(wide.height, np.nan) for _ in range(4))
        for i in np.flatnonzero((n_l >= min_n) & (n_h >= min_n)):
            t, r = wide.row(int(i))[:2]
            a = np.sort(raw.values(t, r, LIVE, col))
            b = np.sort(raw.values(t, r, HIST, col))
            stat[i], pval[i] = ks_test(a, b)
            med_l[i], med_h[i] = _sorted_median(a), _sorted_median(b)
        frames.append(
            _rows(
                metric=col,
                test="ks",
                strategy_type=wide.get_column("strategy_type").to_list(),
                regime=wide.get_column("regime").to_list(),
                n_live=n_l.tolist(),
                n_hist=n_h.tolist(),
                live_value=med_l,
                hist_value=med_h,
                statistic=stat,
                p_value=pval,
            )
        )
    return pl.concat(frames)


def _exit_mix_rows(wide: pl.DataFrame, exit_mix: pl.DataFrame, min_n: int) -> pl.DataFrame:
    """Chi-square test of independence of side and exit reason, per cell."""
    n_l = wide.get_column(f"n_{LIVE}").to_numpy()
    n_h = wide.get_column(f"n_{HIST}").to_numpy()
    stat = np.full(wide.height, np.nan)
    pval = np.full(wide.height, np.nan)
    tables = exit_mix.partition_by(list(CELL), as_dict=True)
    for i in np.flatnonzero((n_l >= min_n) & (n_h >= min_n)):
        t, r = wide.row(int(i))[:2]
        counts = tables[(t, r)].select("n_live", "n_hist").to_numpy().T
        counts = counts[:, counts.sum(axis=0) > 0]
        if counts.shape[1] < 2:  # one exit reason only: identical mix
            stat[i], pval[i] = 0.0, 1.0
        else:
            res = stats.chi2_contingency(counts, correction=False)
            stat[i], pval[i] = res.statistic, res.pvalue
    return _rows(
        metric="exit_reason",
        test="chi2",
        strategy_type=wide.get_column("strategy_type").to_list(),
        regime=wide.get_column("regime").to_list(),
        n_live=n_l.tolist(),
        n_hist=n_h.tolist(),
        statistic=stat,
        p_value=pval,
    )


# -- bootstrap -----------------------------------------------------------------------------


def bootstrap_means(values: np.ndarray, rng: np.random.Generator, samples: int) -> np.ndarray:
    """(samples, m) replicate means of the m columns of `values` (n, m; NaN = missing).

    True resampling of rows, vectorised as a (samples, n) count matrix times the data (one
    matmul); a replicate mean skips the missing values its rows hold.
    """
    n, m = values.shape
    if n == 0:
        return np.full((samples, m), np.nan)
    mask = ~np.isnan(values)
    idx = rng.integers(0, n, size=(samples, n))
    flat = (idx + (np.arange(samples) * n)[:, None]).ravel()
    counts = np.bincount(flat, minlength=samples * n).reshape(samples, n).astype(float)
    sums = counts @ np.where(mask, values, 0.0)
    used = counts @ mask.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / used


def normal_means(
    mean: np.ndarray, sd: np.ndarray, count: np.ndarray, rng: np.random.Generator, samples: int
) -> np.ndarray:
    """(samples, m) replicate means from the normal approximation, mean + sd/sqrt(n) * z:
    what resampling a large sample converges to, at the cost of m normal draws."""
    with np.errstate(invalid="ignore", divide="ignore"):
        se = sd / np.sqrt(count)
    return mean + rng.standard_normal((samples, mean.size)) * se


def _attach_cis(
    results: pl.DataFrame,
    wide: pl.DataFrame,
    raw: _RawCells,
    settings: AnalysisSettings,
    min_n: int,
    seed: int,
) -> pl.DataFrame:
    """Bootstrap CI of live minus historical mean on every Welch and win-rate row."""
    alpha = settings.significance
    metric_of = {**MEAN_METRICS, "win": "win_rate"}
    test_of = {col: ("chi2" if col == "win" else "welch_t") for col in BOOT_COLS}
    out: list[dict[str, Any]] = []
    n_rows = {side: wide.get_column(f"n_{side}").to_numpy() for side in (LIVE, HIST)}
    # (cells, len(BOOT_COLS)) matrices of mean, std and count per side, for the CLT draws.
    moments = {
        (s, side): np.column_stack([_floats(wide, f"{c}__{s}_{side}") for c in BOOT_COLS])
        for s in ("mean", "std", "n")
        for side in (LIVE, HIST)
    }
    for i, (t, r) in enumerate(wide.select(CELL).iter_rows()):
        if n_rows[LIVE][i] < min_n or n_rows[HIST][i] < min_n:
            continue
        diffs = []
        for k, side in enumerate((LIVE, HIST)):
            rng = np.random.default_rng([seed, i, k])
            if n_rows[side][i] > settings.bootstrap_max_n:
                g = {s: moments[(s, side)][i] for s in ("mean", "std", "n")}
                diffs.append(
                    normal_means(g["mean"], g["std"], g["n"], rng, settings.bootstrap_samples)
                )
                continue
            diffs.append(bootstrap_means(raw.matrix(t, r, side), rng, settings.bootstrap_samples))
        with np.errstate(invalid="ignore"):
            delta = diffs[0] - diffs[1]
        finite = np.isfinite(delta).any(axis=0)
        lo = np.full(len(BOOT_COLS), np.nan)
        hi = np.full(len(BOOT_COLS), np.nan)
        if finite.any():
            q = np.nanquantile(delta[:, finite], [alpha / 2, 1 - alpha / 2], axis=0)
            lo[finite], hi[finite] = q[0], q[1]
        for j, col in enumerate(BOOT_COLS):
            if np.isfinite(lo[j]):
                out.append(
                    {
                        "metric": metric_of[col],
                        "test": test_of[col],
                        "strategy_type": t,
                        "regime": r,
                        "ci_low_b": float(lo[j]),
                        "ci_high_b": float(hi[j]),
                    }
                )
    if not out:
        return results
    cis = pl.DataFrame(out, schema_overrides={"ci_low_b": pl.Float64, "ci_high_b": pl.Float64})
    keys = ["metric", "test", *CELL]
    return (
        results.join(cis, on=keys, how="left")
        .with_columns(ci_low=pl.col("ci_low_b"), ci_high=pl.col("ci_high_b"))
        .drop("ci_low_b", "ci_high_b")
    )


# -- multiple testing, status, drift ---------------------------------------------------------


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values (NaN stays NaN and does not count as a test)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    scaled = (m - np.arange(m)) * p[order]
    out[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return out


def _finish(results: pl.DataFrame, settings: AnalysisSettings, min_n: int) -> pl.DataFrame:
    """Null out short samples, adjust p-values over the run, flag drift, write the status."""
    c = pl.col
    short_live = c("n_live") < min_n
    short_hist = c("n_hist") < min_n
    short = short_live | short_hist
    numbers = ["live_value", "hist_value", "statistic", "p_value", "ci_low", "ci_high"]
    results = results.with_columns(
        [pl.when(short).then(None).otherwise(c(k)).alias(k) for k in numbers]
    )
    p_adj = holm(results.get_column("p_value").fill_null(np.nan).to_numpy())
    results = results.with_columns(p_adjusted=pl.Series(p_adj, dtype=pl.Float64).fill_nan(None))
    drift = c("p_adjusted").is_not_null() & (c("p_adjusted") < settings.significance)
    which = (
        pl.when(short_live)
        .then(pl.format("n={} (live; need {})", c("n_live"), pl.lit(min_n)))
        .otherwise(pl.format("n={} (historical; need {})", c("n_hist"), pl.lit(min_n)))
    )
    status = (
        pl.when(short)
        .then(pl.lit(f"{INSUFFICIENT}, ") + which)
        .when(drift)
        .then(pl.lit("drift"))
        .otherwise(pl.lit("ok"))
    )
    return results.with_columns(drift=drift.fill_null(False), status=status)


# -- frames for the report -------------------------------------------------------------------


def _summary(side_stats: pl.DataFrame) -> pl.DataFrame:
    c = pl.col
    return side_stats.select(
        "side",
        *CELL,
        "n",
        "win_rate",
        mean_pnl_pct=c("pnl_pct__mean"),
        total_pnl=c("total_pnl"),
        mean_holding_days=c("holding_days__mean"),
        mean_slippage=c("slippage_vs_mid__mean"),
    ).sort(["side", *CELL])


def _prediction_errors(side_stats: pl.DataFrame) -> pl.DataFrame:
    frames = [
        side_stats.select(
            "side",
            *CELL,
            target=pl.lit(target),
            n=pl.col(f"{col}__n"),
            mae=pl.col(f"{col}__mae"),
            mse=pl.col(f"{col}__mse"),
            bias=pl.col(f"{col}__mean"),
        )
        for col, target in (("return_error", "expected_return_pct"), ("prob_error", "prob_profit"))
    ]
    return pl.concat(frames).sort(["target", "side", *CELL])
