"""V6's heartbeat: every 5 minutes in regular trading hours (and ad hoc), one trading cycle
under the circuit breaker, ending in a state that tells the story.

guard (stale backlog / market closed -> Completed "Stale"/"MarketClosed") -> the home's
cycle lease (another cycle holds it -> Completed "Skipped": one cycle per home, however
started; see core.cycle.lease) -> breaker gate
-> (OPEN: Cancelled "CircuitOpen", broker untouched) -> one broker connection ->
reconcile -> quotes and greeks through the slot registry -> exit rules -> exits ->
(unless exits-only) entry candidates -> portfolio limits -> entries -> summary -> record
the cycle with the breaker -> final state:

- Completed            breaker CLOSED, cycle fine
- Failed CircuitTripped  this cycle tripped the breaker (message = the reason); also a
                       failed half-open probe (the breaker re-opens)
- Cancelled CircuitOpen  breaker OPEN, not in reducing mode: nothing done
- Completed ExitsOnly  breaker OPEN in reducing mode: exit rules ran, no entries
- Completed HalfOpenProbe  the probe after the cool-down succeeded and closed the breaker
- Failed BreakerUnavailable  breaker state unreadable (or `risk_state` lost/rolled back):
                       nothing traded, broker not touched
- Failed StoreCorrupt  a table V6 wrote is lost or rolled back (message = table + fix):
                       breaker tripped (data_quality), broker not touched
- Failed               the cycle failed but did not (yet) trip the breaker
- Completed Skipped    another cycle holds the lease ("another cycle running (run X since
                       T)"): nothing done, broker untouched

No flow-level retries: a returned Failed state would re-run the flow and trip again.
Retries live on the read-only broker tasks only; the breaker gate, exit rules and breaker
record run in the flow body (see `tasks.cycle`).
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import State

from core.cycle import run_trading_cycle
from core.cycle.lease import hold_cycle_lease
from core.risk.breaker import OutcomeType
from core.run_guard import Session
from core.runtime import current_runtime
from flows.naming import market_run_name, outcome_tags, tag_run
from flows.states import from_outcome, skipped
from tasks.alerts import alert_on_failure
from tasks.console import publish_console_artifacts
from tasks.cycle import prefect_wrap, publish_cycle_artifacts
from tasks.guards import should_skip


def _run_id() -> str:
    run = flow_run.id
    return f"cycle-{run}" if run else f"cycle-{uuid.uuid4().hex[:12]}"


@flow(
    name="trading_cycle",
    retries=0,
    flow_run_name=market_run_name("cycle"),
    on_failure=[alert_on_failure],
    on_crashed=[alert_on_failure],
)
async def trading_cycle(exits_only: bool = False, guard: bool = True) -> State:
    """`exits_only=True`: run the exit rules only (an ad hoc de-risking run).
    `guard=False`: skip the stale/market-hours check (a manual run outside the schedule)."""
    if guard:
        skip = should_skip(Session.REGULAR)
        if skip is not None:
            await tag_run(outcome_tags(skip.name))
            return skipped(skip)
    rt = current_runtime()
    run_id = _run_id()
    ttl = timedelta(seconds=rt.settings.cycle.lease_ttl_s)
    async with hold_cycle_lease(rt.store, run_id, ttl) as busy:
        if busy is not None:
            await tag_run(outcome_tags(busy.skip().name))
            return skipped(busy.skip())
        run = await run_trading_cycle(
            rt, run_id, wrap=prefect_wrap(rt.settings), exits_only=exits_only
        )
    await publish_cycle_artifacts(run)
    await publish_console_artifacts(rt)
    await tag_run(outcome_tags(run.outcome.name, run.gate))
    summary = run.summary()
    log = get_run_logger()
    level = (
        log.info if run.outcome.name in ("Completed", "HalfOpenProbe", "ExitsOnly") else log.warning
    )
    level("trading cycle %s: %s (%s)", run.run_id, run.outcome.name, run.outcome.message)
    # A failed state carries no result (Prefect would try to raise the dict as its error);
    # the summary artifact has everything.
    failed = run.outcome.type is OutcomeType.FAILED
    return from_outcome(run.outcome, data=None if failed else summary)
