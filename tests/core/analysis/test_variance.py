"""Historical-vs-live variance analysis: drift where there is drift, none where there is none."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from scipy import stats

from core.analysis.synthetic import synthetic_trades
from core.analysis.variance import (
    ALL,
    AnalysisInputError,
    VarianceReport,
    analyse,
    bootstrap_means,
    holm,
    ks_test,
    latest_run_id,
    live_window,
)
from core.config import AnalysisSettings
from core.store import REGISTRY
from core.store.validation import prepare

SETTINGS = AnalysisSettings(bootstrap_samples=200)
RUN_DATE = date(2026, 3, 31)
NUMBERS = ["live_value", "hist_value", "statistic", "p_value", "p_adjusted", "ci_low", "ci_high"]


def run(
    live: tuple[pl.DataFrame, pl.DataFrame],
    hist: tuple[pl.DataFrame, pl.DataFrame],
    settings: AnalysisSettings = SETTINGS,
) -> VarianceReport:
    return analyse(
        live[0],
        hist[0],
        live[1],
        hist[1],
        settings=settings,
        run_date=RUN_DATE,
        computed_at=datetime(2026, 3, 31, 22, 30, tzinfo=UTC),
        hist_run_id="BT-SYNTH",
        config_hash="synthetic",
    )


def row(
    report: VarianceReport, metric: str, test: str, stype: str = ALL, regime: str = ALL
) -> dict:
    sel = report.results.filter(
        (pl.col("metric") == metric)
        & (pl.col("test") == test)
        & (pl.col("strategy_type") == stype)
        & (pl.col("regime") == regime)
    )
    assert sel.height == 1, (metric, test, stype, regime)
    return sel.row(0, named=True)


def drifted(report: VarianceReport) -> set[tuple[str, str]]:
    return {(m, t) for m, t in report.drifts.select("metric", "test").iter_rows()}


@pytest.fixture(scope="module")
def hist() -> tuple[pl.DataFrame, pl.DataFrame]:
    return synthetic_trades(6000, seed=2, source="backtest")


def test_identical_samples_show_no_drift(hist) -> None:
    trades, preds = hist
    live = (
        trades.drop("run_id", "run_at", "config_hash").with_columns(source=pl.lit("live")),
        preds.drop("run_id", "run_at", "config_hash"),
    )
    report = run(live, hist)
    assert report.drifts.is_empty()
    ks = row(report, "pnl_pct", "ks")
    assert ks["statistic"] == 0.0 and ks["p_value"] == 1.0
    welch = row(report, "pnl_pct", "welch_t")
    assert welch["statistic"] == pytest.approx(0.0, abs=1e-9)
    assert welch["ci_low"] < 0 < welch["ci_high"] or welch["ci_low"] == welch["ci_high"] == 0
    assert row(report, "exit_reason", "chi2")["p_value"] == pytest.approx(1.0)


def test_independent_draws_of_the_same_distribution_show_no_drift(hist) -> None:
    report = run(synthetic_trades(1500, seed=11), hist)
    assert report.drifts.is_empty(), report.drifts


def test_pnl_shifted_down_is_flagged_on_pnl_pct(hist) -> None:
    report = run(synthetic_trades(1500, seed=11, pnl_pct_shift=-25.0), hist)
    flags = drifted(report)
    assert ("pnl_pct", "welch_t") in flags and ("pnl_pct", "ks") in flags
    welch = row(report, "pnl_pct", "welch_t")
    assert welch["drift"] and welch["status"] == "drift"
    assert welch["live_value"] < welch["hist_value"]
    assert welch["ci_high"] < 0  # bootstrap CI of live - hist excludes zero, on the right side
    assert welch["live_value"] - welch["hist_value"] == pytest.approx(-25.0, abs=6.0)
    # Metrics that did not move are not flagged.
    for metric in ("holding_days", "slippage_vs_mid"):
        assert not any(m == metric for m, _ in flags), metric


def test_lower_win_rate_is_flagged_on_win_rate(hist) -> None:
    report = run(synthetic_trades(1500, seed=12, win_prob=0.55), hist)
    win = row(report, "win_rate", "chi2")
    assert win["drift"]
    assert win["live_value"] < win["hist_value"]
    assert win["ci_high"] < 0
    assert ("holding_days", "welch_t") not in drifted(report)


def test_longer_holding_is_flagged_on_holding_days_only(hist) -> None:
    report = run(synthetic_trades(1500, seed=13, holding_scale=1.5), hist)
    flags = drifted(report)
    assert ("holding_days", "welch_t") in flags and ("holding_days", "ks") in flags
    assert (
        row(report, "holding_days", "welch_t")["live_value"]
        > row(report, "holding_days", "welch_t")["hist_value"]
    )
    assert not {("pnl_pct", "welch_t"), ("win_rate", "chi2")} & flags


def test_changed_exit_mix_is_flagged_on_exit_reason(hist) -> None:
    trades, preds = synthetic_trades(1500, seed=14)
    # Same P&L, but every winner now leaves by time exit: only the mix changed.
    trades = trades.with_columns(
        exit_reason=pl.when(pl.col("pnl_pct") > 0)
        .then(pl.lit("time_exit"))
        .otherwise(pl.col("exit_reason"))
    )
    report = run((trades, preds), hist)
    assert row(report, "exit_reason", "chi2")["drift"]
    assert ("pnl_pct", "welch_t") not in drifted(report)


def test_over_optimistic_predictions_are_flagged_on_prediction_error(hist) -> None:
    trades, preds = synthetic_trades(1500, seed=15)
    preds = preds.with_columns(pl.col("expected_return_pct") + 30.0)
    report = run((trades, preds), hist)
    err = row(report, "expected_return_error", "welch_t")
    assert err["drift"] and err["live_value"] > err["hist_value"]
    bias = row(report, "expected_return_error", "bias")
    assert bias["live_value"] - bias["hist_value"] == pytest.approx(30.0, abs=6.0)
    mae, mse = (
        row(report, "expected_return_error", "mae"),
        row(report, "expected_return_error", "mse"),
    )
    assert mse["live_value"] >= mae["live_value"] ** 2  # Jensen: E[e^2] >= E[|e|]^2


def test_small_samples_say_insufficient_data_and_carry_no_numbers(hist) -> None:
    report = run(synthetic_trades(4, seed=16, pnl_pct_shift=-80.0), hist)
    assert report.drifts.is_empty()
    overall = report.results.filter((pl.col("strategy_type") == ALL) & (pl.col("regime") == ALL))
    assert overall.height > 0
    assert overall.get_column("status").str.starts_with("insufficient data, n=").all()
    assert row(report, "pnl_pct", "welch_t")["status"] == "insufficient data, n=4 (live; need 10)"
    assert overall.select(pl.all_horizontal(pl.col(NUMBERS).is_null())).to_series().all()


def test_insufficient_is_per_cell_and_per_side(hist) -> None:
    settings = AnalysisSettings(bootstrap_samples=200, min_trades=30)
    report = run(synthetic_trades(60, seed=17), hist, settings)
    overall = row(report, "pnl_pct", "welch_t")
    assert overall["status"] in ("ok", "drift") and overall["p_value"] is not None
    fine = report.results.filter(
        (pl.col("strategy_type") != ALL)
        & (pl.col("regime") != ALL)
        & (pl.col("test") == "welch_t")
        & (pl.col("metric") == "pnl_pct")
    )
    assert fine.height > 0
    assert fine.get_column("status").str.starts_with("insufficient data, n=").all()
    assert fine.get_column("p_value").is_null().all()
    # A short historical side is named as such.
    report = run(synthetic_trades(200, seed=18), synthetic_trades(5, seed=19, source="backtest"))
    assert row(report, "pnl_pct", "ks")["status"] == "insufficient data, n=5 (historical; need 10)"


def test_empty_inputs_still_report_the_overall_cell() -> None:
    empty_live = synthetic_trades(0, seed=1)
    report = run(empty_live, synthetic_trades(0, seed=2, source="backtest"))
    assert row(report, "pnl_pct", "welch_t")["status"].startswith("insufficient data, n=0")
    assert report.headline()["n_live"] == 0


def test_results_match_the_table_schema_and_hold_no_nan(hist) -> None:
    report = run(synthetic_trades(500, seed=20, pnl_pct_shift=-10.0), hist)
    prepare(REGISTRY["variance_results"], report.results)  # raises on any violation
    keys = ["metric", "test", "strategy_type", "regime"]
    assert report.results.select(keys).is_unique().all()


def test_cell_statistics_equal_a_direct_computation(hist) -> None:
    live = synthetic_trades(800, seed=21)
    report = run(live, hist)
    trades = live[0]
    for stype in ("iron_condor", ALL):
        sub = trades if stype == ALL else trades.filter(pl.col("strategy_type") == stype)
        h = hist[0] if stype == ALL else hist[0].filter(pl.col("strategy_type") == stype)
        a, b = sub.get_column("pnl_pct").to_numpy(), h.get_column("pnl_pct").to_numpy()
        welch = row(report, "pnl_pct", "welch_t", stype)
        direct = stats.ttest_ind(a, b, equal_var=False)
        assert welch["live_value"] == pytest.approx(a.mean())
        assert welch["statistic"] == pytest.approx(direct.statistic, rel=1e-9)
        assert welch["p_value"] == pytest.approx(direct.pvalue, rel=1e-9)
        ks = row(report, "pnl_pct", "ks", stype)
        assert ks["statistic"] == pytest.approx(stats.ks_2samp(a, b).statistic)
        assert ks["live_value"] == pytest.approx(np.median(a))
    regime_cell = row(report, "holding_days", "welch_t", ALL, "crash")
    crash = trades.filter(pl.col("regime") == "crash").get_column("holding_days")
    assert regime_cell["n_live"] == crash.len()
    assert regime_cell["live_value"] == pytest.approx(crash.mean())


def test_analysis_is_reproducible_for_a_seed(hist) -> None:
    live = synthetic_trades(300, seed=22)
    first, second = run(live, hist), run(live, hist)
    # Same rows resampled; polars' parallel sums may differ in the last bits only.
    exact = [c for c, d in first.results.schema.items() if d != pl.Float64]
    assert first.results.select(exact).equals(second.results.select(exact))
    for col in NUMBERS:
        a = first.results.get_column(col).fill_null(np.nan).to_numpy()
        b = second.results.get_column(col).fill_null(np.nan).to_numpy()
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True, err_msg=col)


def test_missing_columns_are_named() -> None:
    trades, _ = synthetic_trades(20, seed=1)
    with pytest.raises(AnalysisInputError, match=r"live trades lacks columns \['pnl_pct'\]"):
        analyse(trades.drop("pnl_pct"), trades, settings=SETTINGS, run_date=RUN_DATE)


# -- building blocks ----------------------------------------------------------------------------


def test_holm_adjustment() -> None:
    p = np.array([0.01, 0.04, np.nan, 0.03, 0.5])
    adj = holm(p)
    # m = 4 tests: sorted 0.01, 0.03, 0.04, 0.5 -> 0.04, 0.09, 0.09 (monotone), 0.5
    assert np.isnan(adj[2])
    np.testing.assert_allclose(adj[[0, 3, 1, 4]], [0.04, 0.09, 0.09, 0.5])
    assert (adj[~np.isnan(p)] >= p[~np.isnan(p)]).all()
    assert holm(np.array([0.9, 0.8])).max() == 1.0


def test_bootstrap_means_resample_rows_and_skip_missing_values() -> None:
    values = np.array([[1.0, 10.0], [2.0, np.nan], [3.0, 30.0], [4.0, 40.0]])
    got = bootstrap_means(values, np.random.default_rng(5), 300)
    idx = np.random.default_rng(5).integers(0, 4, size=(300, 4))
    np.testing.assert_allclose(got[:, 0], values[idx, 0].mean(axis=1))
    np.testing.assert_allclose(got[:, 1], np.nanmean(values[idx, 1], axis=1))


def test_large_sides_use_the_normal_approximation_with_the_same_interval() -> None:
    live = synthetic_trades(1500, seed=23, pnl_pct_shift=-5.0)
    hist = synthetic_trades(2500, seed=24, source="backtest")
    resampled = run(live, hist, AnalysisSettings(bootstrap_samples=1000, bootstrap_max_n=5000))
    approx = run(live, hist, AnalysisSettings(bootstrap_samples=1000, bootstrap_max_n=100))
    a, b = row(resampled, "pnl_pct", "welch_t"), row(approx, "pnl_pct", "welch_t")
    width = a["ci_high"] - a["ci_low"]
    assert abs(a["ci_low"] - b["ci_low"]) < 0.1 * width
    assert abs(a["ci_high"] - b["ci_high"]) < 0.1 * width


def test_ks_test_large_samples_match_scipy() -> None:
    rng = np.random.default_rng(3)
    a, b = np.sort(rng.normal(size=20_000) + 0.02), np.sort(rng.normal(size=30_000))
    d, p = ks_test(a, b)
    ref = stats.ks_2samp(a, b)
    assert d == pytest.approx(ref.statistic)
    assert p == pytest.approx(ref.pvalue, rel=0.05)


def test_live_window_and_latest_run() -> None:
    as_of = datetime(2026, 3, 31, 22, 30, tzinfo=UTC)
    assert live_window(as_of, 30) == (as_of - timedelta(days=30), as_of)
    with pytest.raises(AnalysisInputError, match="tz-aware UTC"):
        live_window(datetime(2026, 3, 31), 30)
    old, _ = synthetic_trades(
        5, source="backtest", run_id="BT-A", run_at=datetime(2026, 3, 1, tzinfo=UTC)
    )
    new, _ = synthetic_trades(
        5, source="backtest", run_id="BT-B", run_at=datetime(2026, 3, 20, tzinfo=UTC), id_prefix="X"
    )
    assert latest_run_id(pl.concat([new, old])) == "BT-B"
    assert latest_run_id(old.head(0)) is None
