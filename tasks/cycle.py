"""Tasks of the trading cycle: the core steps (`core.cycle`) at broker I/O boundaries
as Prefect tasks.

`prefect_wrap(settings)` is the `Wrap` the flow hands to `run_trading_cycle`:
- broker reads (reconcile, market data, entry candidates, summary) are tasks that retry
  with exponential back-off (`settings.cycle`);
- order steps (exits, entries) are tasks that never retry (a retry could only repeat what
  the executor's orderRef idempotency already covers; the next cycle resumes anything
  interrupted);
- the breaker gate, the exit rules and the breaker record run in the flow body, as in the
  plain composition: they touch no broker, only the Delta store (which retries its own
  commit conflicts), and have no retry policy to carry (the gate never raises, the exit
  rules decide the same again next cycle, a second breaker record would not see the
  transition the first one wrote). The breaker shows as the run's final state and on the
  summary page, not as tasks.

Why not every step a task: on this setup a task run costs ~3 ms in the flow's process and
~15-20 ms of API-server CPU (three state events recorded), competing for the same cores as
the cycle; with 8 tasks and a separate artifact task Prefect was ~35% of a 0.6-0.9 s cycle
(benchmarks/cycle.py).

Every argument goes in `quote(...)`: the cycle context holds a live broker connection and
big frames; Prefect must neither hash them (NO_CACHE) nor walk them for upstream futures.
Results stay in memory (`persist_result=False`: they hold frames and the broker handle).
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

from core.config import Settings
from core.cycle import READ_ONLY_STEPS, CycleRun, Step, Wrap
from core.cycle.run import EXIT_RULES, GATE, RECORD
from core.cycle.summary import CycleArtifacts, artifacts_for

SUMMARY_KEY = "trading-cycle-summary"
IN_FLOW_STEPS = frozenset({GATE, EXIT_RULES, RECORD})  # no broker I/O: not tasks (see above)


@cache
def _task_for(name: str, fn: Step) -> Task[Any, Any]:
    return task(name=name, cache_policy=NO_CACHE, persist_result=False, retries=0)(fn)


def prefect_wrap(settings: Settings) -> Wrap:
    """Broker steps as tasks with the cycle's retry policy; the rest as is (module doc)."""
    cfg = settings.cycle
    delays = [cfg.retry_backoff_s * 2**i for i in range(cfg.read_retries)]

    def wrap(name: str, fn: Step) -> Step:
        if name in IN_FLOW_STEPS:
            return fn
        t = _task_for(name, fn)
        if name in READ_ONLY_STEPS and cfg.read_retries:
            t = t.with_options(
                retries=cfg.read_retries, retry_delay_seconds=delays, retry_jitter_factor=0.2
            )

        async def call(*args: Any) -> Any:
            return await t(*(quote(a) for a in args))

        return call

    return wrap


async def publish_cycle_artifacts(run: CycleRun) -> Mapping[str, int]:
    """One markdown page on the flow run: outcome, breaker state, health, the cycle's tables.

    Called from the flow body, not a task: it is one API call to Prefect itself, nothing
    to retry or to show as a step."""
    arts: CycleArtifacts = artifacts_for(run)
    await acreate_markdown_artifact(
        key=SUMMARY_KEY, markdown=arts.markdown, description=arts.description
    )
    get_run_logger().info("%s", arts.description)
    return {name: len(rows) for name, rows in arts.tables.items()}


__all__ = ["IN_FLOW_STEPS", "SUMMARY_KEY", "prefect_wrap", "publish_cycle_artifacts"]
