"""Tasks of the trading cycle: each core step (`v6.core.cycle`) as a Prefect task.

`prefect_wrap(settings)` is the `Wrap` the flow hands to `run_trading_cycle`: read-only
steps retry with exponential back-off (`settings.cycle`), steps that place orders never
retry (a retry could only repeat what the executor's orderRef idempotency already covers,
and the next cycle resumes anything interrupted), and the breaker record never retries
(a second attempt would not see the transition the first one wrote).

Every argument goes in `quote(...)`: the cycle context holds a live broker connection and
big frames; Prefect must neither hash them (NO_CACHE) nor walk them for upstream futures.
Tasks are awaited directly on the flow's event loop, never submitted (an ib_async
connection is bound to its loop).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from prefect import Task, get_run_logger, task
from prefect.artifacts import acreate_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from v6.core.config import Settings
from v6.core.cycle import READ_ONLY_STEPS, CycleRun, Step, Wrap
from v6.core.cycle.summary import CycleArtifacts, artifacts_for

SUMMARY_KEY = "trading-cycle-summary"


@cache
def _task_for(name: str, fn: Step) -> Task[Any, Any]:
    return task(name=name, cache_policy=NO_CACHE, retries=0)(fn)


def prefect_wrap(settings: Settings) -> Wrap:
    """Each step as a task with the cycle's retry policy (see the module doc)."""
    cfg = settings.cycle
    delays = [cfg.retry_backoff_s * 2**i for i in range(cfg.read_retries)]

    def wrap(name: str, fn: Step) -> Step:
        t = _task_for(name, fn)
        if name in READ_ONLY_STEPS and cfg.read_retries:
            t = t.with_options(
                retries=cfg.read_retries, retry_delay_seconds=delays, retry_jitter_factor=0.2
            )

        async def call(*args: Any) -> Any:
            return await t(*(quote(a) for a in args))

        return call

    return wrap


@task(name="publish-cycle-artifacts", cache_policy=NO_CACHE)
async def publish_cycle_artifacts(run: CycleRun) -> Mapping[str, int]:
    """One markdown page: outcome, breaker state, health and the cycle's tables."""
    arts: CycleArtifacts = artifacts_for(run)
    await acreate_markdown_artifact(
        key=SUMMARY_KEY, markdown=arts.markdown, description=arts.description
    )
    get_run_logger().info("%s", arts.description)
    return {name: len(rows) for name, rows in arts.tables.items()}


__all__ = ["SUMMARY_KEY", "prefect_wrap", "publish_cycle_artifacts"]
