"""The backtest as one task: per-cycle tasks would cost more than the cycles themselves
(about 5 ms of Prefect overhead a task, measured), and the run's progress is shown as a
progress artifact (and, when the runtime carries one, on the CLI's progress bar)."""

from __future__ import annotations

import inspect
from datetime import date, datetime

from prefect import get_run_logger, task
from prefect.artifacts import acreate_progress_artifact, aupdate_progress_artifact
from prefect.cache_policies import NO_CACHE

from core.backtest.run import BacktestResult, run_backtest
from core.runtime import current_runtime


@task(name="simulate-and-export", cache_policy=NO_CACHE)
async def simulate(
    days: int, start: date | None, seed: int | None, cycle_minutes: int
) -> BacktestResult:
    rt = current_runtime()
    logger = get_run_logger()
    artifact = await acreate_progress_artifact(
        0.0, key="backtest-progress", description="simulated cycles done"
    )
    step = 0
    watcher = rt.backtest_progress

    async def progress(done: int, total: int, at: datetime) -> None:
        nonlocal step
        if watcher is not None:  # every cycle: a terminal bar is cheap, an API call is not
            pending = watcher(done, total, at)
            if inspect.isawaitable(pending):
                await pending
        pct = 100.0 * done / total
        if pct >= step + 5 or done == total:  # ~20 updates a run, not one per cycle
            step = int(pct)
            await aupdate_progress_artifact(artifact, pct)
            logger.info("backtest %3.0f%%: cycle %d/%d at %s", pct, done, total, at.isoformat())

    result = await run_backtest(
        rt.settings,
        rt.store,
        days=days,
        start=start,
        seed=seed,
        cycle_minutes=cycle_minutes,
        progress=progress,
    )
    logger.info(
        "backtest %s: %d trades, %d predictions, %.2f simulated days/s",
        result.run_id,
        result.trades,
        result.predictions,
        result.days_per_second,
    )
    return result
