"""Trades, predictions (live and backtest), variance results and strategy-type weights.

The live and backtest tables share one column layout so the nightly variance analysis
compares like with like; backtest rows add the run they came from (`run_id`, `run_at`)
and the hash of the config the run used (`config_hash`).

Conventions the writers must follow (the analysis relies on them):
- `pnl_pct` and `expected_return_pct` are both percent of the entry credit (the basis
  the exit rules use), so "expected vs realised" subtracts like for like.
- `regime` is the regime at entry (the one the strategy was chosen under).
- `holding_days` is (closed_at - opened_at) in days, fractional.
- `slippage_vs_mid` is fill price minus mid at the time of the order, signed so that a
  positive number is a cost to V6, per share; null when the mid was unknown.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import pandera.polars as pa
import polars as pl
from pandera.engines.polars_engine import DateTime

from core.domain.timezones import UTC_US
from core.store.spec import TableSpec

UtcTs = DateTime(time_zone="UTC", time_unit="us")
_NONEMPTY = {"min_value": 1}
INSUFFICIENT = "insufficient data"


class _Strict(pa.DataFrameModel):
    class Config:
        strict = True
        coerce = False


class Trade(_Strict):
    """One closed trade (a full close or one partial close of a strategy)."""

    trade_id: str = pa.Field(str_length=_NONEMPTY, description="unique id of this close")
    strategy_id: str = pa.Field(str_length=_NONEMPTY, description="the strategy position closed")
    strategy_type: str = pa.Field(str_length=_NONEMPTY, description="e.g. iron_condor")
    underlying: str = pa.Field(str_length=_NONEMPTY)
    regime: str = pa.Field(str_length=_NONEMPTY, description="regime at entry")
    opened_at: UtcTs  # type: ignore[valid-type]
    closed_at: UtcTs  # type: ignore[valid-type]
    holding_days: float = pa.Field(ge=0)
    quantity: pl.Int64 = pa.Field(gt=0, description="contracts (combos) closed")
    entry_credit: float = pa.Field(description="per share; negative for a debit entry")
    exit_debit: float = pa.Field(description="per share; negative for a credit exit")
    pnl: float = pa.Field(description="USD, after commissions")
    pnl_pct: float = pa.Field(description="percent of the entry credit")
    exit_reason: str = pa.Field(str_length=_NONEMPTY, description="rule that closed it")
    slippage_vs_mid: float = pa.Field(nullable=True, description="per share; positive = cost")
    source: str = pa.Field(isin=["live"])

    @pa.dataframe_check(error="closed_at is before opened_at")
    @classmethod
    def closes_after_open(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("closed_at") >= pl.col("opened_at"))

    @pa.dataframe_check(error="a float column holds NaN; write null for unknown values")
    @classmethod
    def no_nan(cls, data: pa.PolarsData) -> pl.LazyFrame:
        cols = ["holding_days", "entry_credit", "exit_debit", "pnl", "pnl_pct", "slippage_vs_mid"]
        return data.lazyframe.select(~pl.any_horizontal(pl.col(cols).is_nan().fill_null(False)))


class BacktestTrade(Trade):
    source: str = pa.Field(isin=["backtest"])
    run_id: str = pa.Field(str_length=_NONEMPTY, description="backtest run that produced it")
    run_at: UtcTs = pa.Field(description="when that run started; the latest run is the default")  # type: ignore[valid-type]
    config_hash: str = pa.Field(str_length=_NONEMPTY, description="hash of the config it ran with")


class Prediction(_Strict):
    """What V6 expected of a strategy when it entered it."""

    strategy_id: str = pa.Field(str_length=_NONEMPTY)
    strategy_type: str = pa.Field(str_length=_NONEMPTY)
    underlying: str = pa.Field(str_length=_NONEMPTY)
    regime: str = pa.Field(str_length=_NONEMPTY)
    created_at: UtcTs  # type: ignore[valid-type]
    expected_return_pct: float = pa.Field(description="percent of the entry credit")
    prob_profit: float = pa.Field(ge=0, le=1)
    score: float = pa.Field(description="candidate score after strategy-type weighting")
    iv_rank: float = pa.Field(ge=0, le=100, nullable=True)
    skew: float = pa.Field(nullable=True)
    dte: pl.Int64 = pa.Field(ge=0)
    width: float = pa.Field(gt=0, description="wing width, points")
    entry_price: float = pa.Field(description="limit price at entry, per share")

    @pa.dataframe_check(error="a float column holds NaN; write null for unknown values")
    @classmethod
    def no_nan(cls, data: pa.PolarsData) -> pl.LazyFrame:
        cols = [
            "expected_return_pct",
            "prob_profit",
            "score",
            "iv_rank",
            "skew",
            "width",
            "entry_price",
        ]
        return data.lazyframe.select(~pl.any_horizontal(pl.col(cols).is_nan().fill_null(False)))


class BacktestPrediction(Prediction):
    run_id: str = pa.Field(str_length=_NONEMPTY)
    run_at: UtcTs  # type: ignore[valid-type]
    config_hash: str = pa.Field(str_length=_NONEMPTY)


class VarianceResult(_Strict):
    """One test (or one descriptive number) of one metric in one (strategy_type, regime) cell.

    "ALL" in strategy_type/regime marks an aggregate cell. Below the minimum sample size
    the row says so in `status` and carries no statistic, p-value or interval.
    """

    run_date: pl.Date = pa.Field(description="market date of the analysis")
    metric: str = pa.Field(str_length=_NONEMPTY, description="e.g. pnl_pct, win_rate")
    test: str = pa.Field(str_length=_NONEMPTY, description="welch_t, ks, chi2, mae, mse, bias")
    strategy_type: str = pa.Field(str_length=_NONEMPTY)
    regime: str = pa.Field(str_length=_NONEMPTY)
    n_live: pl.Int64 = pa.Field(ge=0)
    n_hist: pl.Int64 = pa.Field(ge=0)
    live_value: float = pa.Field(nullable=True, description="the metric on the live side")
    hist_value: float = pa.Field(nullable=True, description="the metric on the historical side")
    statistic: float = pa.Field(nullable=True)
    p_value: float = pa.Field(nullable=True, ge=0, le=1)
    p_adjusted: float = pa.Field(nullable=True, ge=0, le=1, description="Holm-adjusted p-value")
    ci_low: float = pa.Field(nullable=True, description="bootstrap CI of live minus hist")
    ci_high: float = pa.Field(nullable=True)
    drift: bool
    status: str = pa.Field(str_length=_NONEMPTY, description="ok | drift | insufficient data, n=…")
    window_days: pl.Int64 = pa.Field(ge=1)
    hist_run_id: str = pa.Field(nullable=True)
    config_hash: str = pa.Field(nullable=True)
    computed_at: UtcTs  # type: ignore[valid-type]

    @pa.dataframe_check(error="an insufficient-data row carries a number; it must carry nulls")
    @classmethod
    def insufficient_has_no_numbers(cls, data: pa.PolarsData) -> pl.LazyFrame:
        c = pl.col
        short = c("status").str.starts_with(INSUFFICIENT)
        numbers = pl.any_horizontal(
            c(
                [
                    "live_value",
                    "hist_value",
                    "statistic",
                    "p_value",
                    "p_adjusted",
                    "ci_low",
                    "ci_high",
                ]
            ).is_not_null()
        )
        return data.lazyframe.select(~(short & (numbers | c("drift"))))

    @pa.dataframe_check(error="a float column holds NaN; write null for unknown values")
    @classmethod
    def no_nan(cls, data: pa.PolarsData) -> pl.LazyFrame:
        cols = [
            "live_value",
            "hist_value",
            "statistic",
            "p_value",
            "p_adjusted",
            "ci_low",
            "ci_high",
        ]
        return data.lazyframe.select(~pl.any_horizontal(pl.col(cols).is_nan().fill_null(False)))


class StrategyWeight(_Strict):
    """The multiplier candidate scoring applies to a strategy type, with why it has it."""

    run_date: pl.Date
    as_of: UtcTs = pa.Field(description="when it was computed; the latest row wins")  # type: ignore[valid-type]
    strategy_type: str = pa.Field(str_length=_NONEMPTY)
    weight: float = pa.Field(gt=0)
    previous_weight: float = pa.Field(gt=0)
    action: str = pa.Field(isin=["cut", "recover", "hold", "insufficient"])
    n_live: pl.Int64 = pa.Field(ge=0)
    n_hist: pl.Int64 = pa.Field(ge=0)
    pnl_pct_diff: float = pa.Field(nullable=True, description="live minus hist mean pnl_pct")
    win_rate_diff: float = pa.Field(nullable=True, description="live minus hist win rate")
    p_value: float = pa.Field(nullable=True, ge=0, le=1, description="smallest adjusted p used")
    evidence: str = pa.Field(description="JSON: the numbers and the rule that moved the weight")


_T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
_T1 = datetime(2026, 3, 20, 19, 0, tzinfo=UTC)


def _trade_row() -> dict[str, list[object]]:
    return {
        "trade_id": ["T-0001"],
        "strategy_id": ["S-0001"],
        "strategy_type": ["iron_condor"],
        "underlying": ["SPY"],
        "regime": ["normal"],
        "opened_at": [_T0],
        "closed_at": [_T1],
        "holding_days": [(_T1 - _T0).total_seconds() / 86400],
        "quantity": [1],
        "entry_credit": [1.50],
        "exit_debit": [0.30],
        "pnl": [118.7],
        "pnl_pct": [80.0],
        "exit_reason": ["profit_target"],
        "slippage_vs_mid": [0.02],
        "source": ["live"],
    }


def _pred_row() -> dict[str, list[object]]:
    return {
        "strategy_id": ["S-0001"],
        "strategy_type": ["iron_condor"],
        "underlying": ["SPY"],
        "regime": ["normal"],
        "created_at": [_T0],
        "expected_return_pct": [35.0],
        "prob_profit": [0.72],
        "score": [0.61],
        "iv_rank": [42.0],
        "skew": [0.03],
        "dte": [45],
        "width": [5.0],
        "entry_price": [1.50],
    }


_RUN = {
    "run_id": ["BT-2026-03-01"],
    "run_at": [datetime(2026, 3, 1, 23, 0, tzinfo=UTC)],
    "config_hash": ["3f9a0c2e"],
}


def _trade_example() -> pl.DataFrame:
    return pl.DataFrame(_trade_row()).with_columns(pl.col("opened_at", "closed_at").cast(UTC_US))


def _bt_trade_example() -> pl.DataFrame:
    row = {**_trade_row(), "source": ["backtest"], **_RUN}
    return pl.DataFrame(row).with_columns(pl.col("opened_at", "closed_at", "run_at").cast(UTC_US))


def _pred_example() -> pl.DataFrame:
    return pl.DataFrame(_pred_row()).with_columns(pl.col("created_at").cast(UTC_US))


def _bt_pred_example() -> pl.DataFrame:
    return pl.DataFrame({**_pred_row(), **_RUN}).with_columns(
        pl.col("created_at", "run_at").cast(UTC_US)
    )


def _variance_example() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "run_date": [date(2026, 3, 20)],
            "metric": ["pnl_pct"],
            "test": ["welch_t"],
            "strategy_type": ["iron_condor"],
            "regime": ["ALL"],
            "n_live": [24],
            "n_hist": [812],
            "live_value": [31.5],
            "hist_value": [38.2],
            "statistic": [-1.21],
            "p_value": [0.23],
            "p_adjusted": [1.0],
            "ci_low": [-17.4],
            "ci_high": [4.1],
            "drift": [False],
            "status": ["ok"],
            "window_days": [30],
            "hist_run_id": ["BT-2026-03-01"],
            "config_hash": ["3f9a0c2e"],
            "computed_at": [_T1],
        },
        schema_overrides={"computed_at": UTC_US},
    )


def _weight_example() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "run_date": [date(2026, 3, 20)],
            "as_of": [_T1],
            "strategy_type": ["iron_condor"],
            "weight": [1.0],
            "previous_weight": [1.0],
            "action": ["hold"],
            "n_live": [24],
            "n_hist": [812],
            "pnl_pct_diff": [-6.7],
            "win_rate_diff": [-0.02],
            "p_value": [0.23],
            "evidence": ['{"rule": "no significant underperformance"}'],
        },
        schema_overrides={"as_of": UTC_US},
    )


TABLES = [
    TableSpec(
        name="trades",
        model=Trade,
        description="live closed trades with realised P&L, holding time, exit reason, slippage",
        keys=("trade_id",),
        example=_trade_example,
    ),
    TableSpec(
        name="predictions",
        model=Prediction,
        description="live predictions at entry: expected return, probability of profit, score",
        keys=("strategy_id",),
        example=_pred_example,
    ),
    TableSpec(
        name="backtest_trades",
        model=BacktestTrade,
        description="closed trades of backtest runs (the historical side of variance analysis)",
        keys=("run_id", "trade_id"),
        example=_bt_trade_example,
    ),
    TableSpec(
        name="backtest_predictions",
        model=BacktestPrediction,
        description="predictions at entry made during backtest runs",
        keys=("run_id", "strategy_id"),
        example=_bt_pred_example,
    ),
    TableSpec(
        name="variance_results",
        model=VarianceResult,
        description="nightly historical-vs-live tests per metric, strategy type and regime",
        keys=("run_date", "metric", "test", "strategy_type", "regime"),
        example=_variance_example,
    ),
    TableSpec(
        name="strategy_weights",
        model=StrategyWeight,
        description="bounded strategy-type weights fed to candidate scoring, with evidence",
        keys=("run_date", "strategy_type"),
        example=_weight_example,
    ),
]
