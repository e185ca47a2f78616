"""The nightly variance_analysis flow on a temp store seeded with synthetic trades."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from core.analysis.synthetic import synthetic_trades
from core.analysis.weights import read_strategy_weights
from core.clock import SimClock
from core.config import load_settings
from core.runtime import Runtime, use_runtime
from core.store import REGISTRY, DeltaStore
from flows.variance_analysis import variance_analysis

AS_OF = datetime(2026, 3, 31, 22, 30, tzinfo=UTC)  # 18:30 New York
TYPES = ("iron_condor", "bull_put_spread", "bear_call_spread")


def seed_store(store: DeltaStore) -> None:
    live, live_pred = synthetic_trades(400, seed=1, pnl_pct_shift=-40.0, win_prob=0.5, end=AS_OF)
    # Closed before the 30-day window: must not count.
    old, old_pred = synthetic_trades(
        50, seed=9, end=AS_OF - timedelta(days=40), days=5, id_prefix="O"
    )
    store.merge("trades", pl.concat([live, old]))
    store.merge("predictions", pl.concat([live_pred, old_pred]))
    # Two backtest runs: the latest (BT-2) is the historical side by default.
    for run_id, run_at, shift in (
        ("BT-1", AS_OF - timedelta(days=9), -40.0),
        ("BT-2", AS_OF - timedelta(days=2), 0.0),
    ):
        hist, hist_pred = synthetic_trades(
            2500,
            seed=2,
            source="backtest",
            run_id=run_id,
            run_at=run_at,
            config_hash=f"hash-{run_id}",
            pnl_pct_shift=shift,
            end=AS_OF - timedelta(days=3),
            days=365,
        )
        store.merge("backtest_trades", hist)
        store.merge("backtest_predictions", hist_pred)
    # Last night's weights: iron_condor already cut once.
    example = REGISTRY["strategy_weights"].example()
    store.merge(
        "strategy_weights",
        example.with_columns(
            run_date=pl.lit(date(2026, 3, 30)),
            weight=pl.lit(0.9),
            as_of=pl.lit(AS_OF - timedelta(days=1)).cast(example["as_of"].dtype),
        ),
    )


async def test_variance_analysis_flags_drift_cuts_weights_and_reports(
    tmp_path: Path, no_config: Path
) -> None:
    settings = load_settings(
        storage={"root": str(tmp_path / "data"), "reports_dir": str(tmp_path / "reports")},
        analysis={"bootstrap_samples": 200},
    )
    store = DeltaStore.from_settings(settings)
    seed_store(store)

    with use_runtime(Runtime(settings, store, clock=SimClock(AS_OF))):
        summary = await variance_analysis()

    assert summary["run_date"] == "2026-03-31"
    assert summary["n_live"] == 400  # the 50 old trades are outside the window
    assert summary["hist_run_id"] == "BT-2" and summary["config_hash"] == "hash-BT-2"
    assert summary["n_hist"] == 2500
    assert summary["drift_flags"] > 0
    assert summary["live_mean_pnl_pct"] < summary["hist_mean_pnl_pct"]
    assert summary["weights"] == {
        "iron_condor": 0.8,
        "bull_put_spread": 0.9,
        "bear_call_spread": 0.9,
    }

    results = store.read("variance_results").collect()
    assert results.height == summary["results_written"] > 0
    assert results.get_column("run_date").unique().to_list() == [date(2026, 3, 31)]
    pnl = results.filter(
        (pl.col("metric") == "pnl_pct")
        & (pl.col("test") == "welch_t")
        & (pl.col("strategy_type") == "ALL")
        & (pl.col("regime") == "ALL")
    )
    assert pnl.get_column("drift").to_list() == [True]
    assert pnl.get_column("hist_run_id").to_list() == ["BT-2"]
    assert read_strategy_weights(store, TYPES)["iron_condor"] == 0.8

    report = tmp_path / "reports" / "variance-2026-03-31.html"
    assert report.exists() and summary["report"] == report.resolve().as_uri()

    async with get_client() as client:
        md = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["variance-summary"]))
        )
        table = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["variance-tests"]))
        )
    assert md and md[-1].type == "markdown"
    assert any(report.resolve().as_uri() in str(a.data) for a in md)
    assert table and table[-1].type == "table"

    # Re-running the same night replaces its rows and does not step the weights twice.
    with use_runtime(Runtime(settings, store, clock=SimClock(AS_OF))):
        again = await variance_analysis()
    assert again["weights"] == summary["weights"]
    assert store.read("variance_results").collect().height == results.height
    assert store.read("strategy_weights").collect().height == 1 + 3
