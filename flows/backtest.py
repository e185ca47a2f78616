"""Ad hoc: the historical side of the variance analysis.

Runs V6's own trading cycle over simulated sessions on a fast clock and stores the
closed trades and entry predictions in `backtest_trades` / `backtest_predictions`,
tagged with the run id and the configuration hash.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from prefect import flow
from prefect.artifacts import acreate_markdown_artifact

from tasks.alerts import alert_on_failure
from tasks.backtest import simulate


@flow(
    name="backtest",
    retries=0,
    flow_run_name="backtest {days} days from {start} seed {seed}",
    on_failure=[alert_on_failure],
    on_crashed=[alert_on_failure],
)
async def backtest(
    days: int = 20, start: date | None = None, seed: int | None = None, cycle_minutes: int = 60
) -> dict[str, Any]:
    """`days` simulated sessions from `start` (default: the simulator's start date)."""
    result = await simulate(days, start, seed, cycle_minutes)
    outcomes = ", ".join(f"{name} {n}" for name, n in sorted(result.outcomes.items()))
    await acreate_markdown_artifact(
        key="backtest-summary",
        markdown=(
            f"### Backtest {result.run_id}\n\n| | |\n|---|---|\n"
            f"| sessions | {result.sessions} ({result.first_day} .. {result.last_day}) |\n"
            f"| cycles | {result.cycles} ({outcomes}) |\n"
            f"| trades closed | {result.trades} |\n| entries predicted | {result.predictions} |\n"
            f"| config hash | `{result.config_hash}` |\n"
            f"| speed | {result.days_per_second:.2f} simulated days/s |\n"
        ),
        description="backtest run summary",
    )
    return {
        "run_id": result.run_id,
        "config_hash": result.config_hash,
        "sessions": result.sessions,
        "cycles": result.cycles,
        "trades": result.trades,
        "predictions": result.predictions,
        "days_per_second": round(result.days_per_second, 3),
        "outcomes": result.outcomes,
    }
