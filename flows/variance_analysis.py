"""Nightly: is live trading still behaving the way history (the backtest) said it would?

Reads the live window and a backtest run, tests every metric per strategy type and
regime, records the results and the strategy-type weights (one commit each), writes
the HTML report and publishes the key numbers as Prefect artifacts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow

from core.runtime import current_runtime
from flows.naming import market_run_name
from tasks.alerts import alert_on_failure
from tasks.analysis import (
    analyse_variance,
    load_variance_inputs,
    publish_variance_artifacts,
    record_closed_trades_task,
    store_variance_results,
    update_strategy_weights,
    write_variance_report,
)


@flow(
    name="variance_analysis",
    flow_run_name=market_run_name("variance"),
    on_failure=[alert_on_failure],
    on_crashed=[alert_on_failure],
)
async def variance_analysis(
    as_of: datetime | None = None, hist_run_id: str | None = None, seed: int = 0
) -> dict[str, Any]:
    """`as_of` defaults to the runtime clock's now; `hist_run_id` to the latest backtest run."""
    rt = current_runtime()
    as_of = as_of or rt.clock.now()
    new_trades = await record_closed_trades_task()
    inputs = await load_variance_inputs(as_of, hist_run_id)
    report = await analyse_variance(inputs, as_of, seed)
    written = await store_variance_results(report)
    weights = await update_strategy_weights(report, as_of)
    path = await write_variance_report(report, inputs, weights)
    uri = await publish_variance_artifacts(report, weights, path)
    return {
        **report.headline(),
        "config_hash": report.config_hash,
        "new_live_trades": new_trades,
        "results_written": written,
        "weights": dict(
            zip(
                weights.get_column("strategy_type").to_list(),
                weights.get_column("weight").to_list(),
                strict=True,
            )
        ),
        "report": uri,
    }
