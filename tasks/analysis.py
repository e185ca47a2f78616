"""Tasks of the nightly variance analysis: thin wrappers over `core.analysis`.

None touches the broker. Reads retry (a transient storage error heals); writes are
idempotent merges keyed by run date, so a retry cannot double anything. Frames pass
between tasks in memory, so no task caches or persists its result.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import polars as pl
from prefect import get_run_logger, task
from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact
from prefect.cache_policies import NO_CACHE

from core.analysis.report import artifact_rows, markdown_summary, write_html_report
from core.analysis.variance import VarianceReport, analyse
from core.analysis.variance_store import (
    VarianceInputs,
    load_inputs,
    market_date,
    previous_weights,
    save_results,
    save_weights,
)
from core.analysis.weights import update_weights
from core.book.trades import record_closed_trades
from core.runtime import current_runtime

SUMMARY_KEY = "variance-summary"
TESTS_KEY = "variance-tests"


@task(name="record-closed-trades", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
async def record_closed_trades_task() -> int:
    """Bring the live side up to date: every closed V6 strategy becomes a `trades` row."""
    new = record_closed_trades(current_runtime().store)
    get_run_logger().info("closed trades recorded: %d new", new)
    return new


@task(name="load-variance-inputs", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
async def load_variance_inputs(as_of: datetime, hist_run_id: str | None = None) -> VarianceInputs:
    rt = current_runtime()
    inputs = load_inputs(
        rt.store,
        as_of=as_of,
        window_days=rt.settings.analysis.window_days,
        hist_run_id=hist_run_id,
    )
    get_run_logger().info(
        "live: %d trades closed %s..%s; historical: run %s, %d trades",
        inputs.live_trades.height,
        inputs.window_start.isoformat(),
        inputs.window_end.isoformat(),
        inputs.hist_run_id,
        inputs.hist_trades.height,
    )
    return inputs


@task(name="analyse-variance", cache_policy=NO_CACHE)
async def analyse_variance(
    inputs: VarianceInputs, as_of: datetime, seed: int = 0
) -> VarianceReport:
    rt = current_runtime()
    report = analyse(
        inputs.live_trades,
        inputs.hist_trades,
        inputs.live_predictions,
        inputs.hist_predictions,
        settings=rt.settings.analysis,
        run_date=market_date(as_of, rt.settings.schedules.timezone),
        computed_at=as_of,
        hist_run_id=inputs.hist_run_id,
        config_hash=inputs.config_hash,
        seed=seed,
    )
    get_run_logger().info(
        "%d result rows, %d drift flags, %d insufficient-data rows",
        report.results.height,
        report.drifts.height,
        report.insufficient.height,
    )
    return report


@task(name="store-variance-results", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
async def store_variance_results(report: VarianceReport) -> int:
    result = save_results(current_runtime().store, report)
    return result.rows_inserted + result.rows_updated


@task(name="update-strategy-weights", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
async def update_strategy_weights(report: VarianceReport, as_of: datetime) -> pl.DataFrame:
    rt = current_runtime()
    previous = previous_weights(rt.store, report.run_date)
    weights = update_weights(
        report.results,
        previous,
        settings=rt.settings.analysis,
        run_date=report.run_date,
        as_of=as_of,
        strategy_types=rt.settings.strategies.enabled,
    )
    save_weights(rt.store, weights)
    logger = get_run_logger()
    for row in weights.iter_rows(named=True):
        logger.info(
            "weight %s: %.2f -> %.2f (%s)",
            row["strategy_type"],
            row["previous_weight"],
            row["weight"],
            row["action"],
        )
    return weights


@task(name="write-variance-report", cache_policy=NO_CACHE)
async def write_variance_report(
    report: VarianceReport, inputs: VarianceInputs, weights: pl.DataFrame
) -> Path:
    rt = current_runtime()
    path = write_html_report(
        report, inputs.live_trades, inputs.hist_trades, rt.settings.storage.reports_dir, weights
    )
    get_run_logger().info("report written to %s", path)
    return path


@task(name="publish-variance-artifacts", cache_policy=NO_CACHE)
async def publish_variance_artifacts(
    report: VarianceReport, weights: pl.DataFrame, report_path: Path
) -> str:
    uri = report_path.resolve().as_uri()
    await acreate_markdown_artifact(
        markdown_summary(report, weights, uri),
        key=SUMMARY_KEY,
        description=f"historical vs live, {report.run_date.isoformat()}",
    )
    await acreate_table_artifact(
        artifact_rows(report),
        key=TESTS_KEY,
        description=f"two-sample tests (Holm-adjusted), {report.run_date.isoformat()}",
    )
    return uri
