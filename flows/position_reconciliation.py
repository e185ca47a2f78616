"""Every 5 minutes in market hours, and at the start of every trading cycle: make the
Delta book agree with the broker and explain every difference.

The broker is the truth. Missing fills are booked exactly once, unknown positions are
adopted as EXTERNAL (never traded until a person tags them), vanished legs are closed
with their reason (expired, assigned, exercised, closed outside V6), and any remaining
difference gets a tagged reconciliation fill. Every case is a row in
`reconciliation_breaks`; the run returns `unresolved_breaks`, a circuit-breaker input.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import State

from core.run_guard import Session
from core.runtime import current_runtime
from flows.states import skipped
from tasks.broker import connect_broker
from tasks.guards import should_skip
from tasks.reconcile import (
    fetch_with_retries,
    load_book,
    publish_artifact,
    reconcile_book,
    slot_usage,
    watermark,
)
from tasks.reconcile import (
    write_reconciliation as write_results,
)


def _run_id(stamp: str) -> str:
    run = flow_run.id
    return f"recon-{stamp}-{str(run)[:8]}" if run else f"recon-{stamp}"


@flow(name="position_reconciliation")
async def position_reconciliation(guard: bool = True) -> dict[str, Any] | State:
    """`guard=False` when called by the trading cycle (which already checked the session)."""
    if guard:
        skip = should_skip(Session.REGULAR)
        if skip is not None:
            return skipped(skip)
    rt = current_runtime()
    log = get_run_logger()
    book, last = await load_book()
    broker = await connect_broker()
    try:
        state = await fetch_with_retries()(broker, watermark(last))
        as_of = rt.clock.now()
    finally:
        await broker.disconnect()
    account = rt.settings.broker.account or _single_account(state.positions, state.executions)
    result = await reconcile_book(book, state, as_of, _run_id(f"{as_of:%Y%m%dT%H%M%S}"), account)
    written = await write_results(result)
    slots = await slot_usage()
    await publish_artifact(result, slots)
    summary = result.summary()
    log.info(
        "reconciled %d positions: %d break(s), %d unresolved, %d fill(s) recorded",
        summary["positions"], summary["breaks"], summary["unresolved_breaks"],
        summary["fills_recorded"],
    )  # fmt: skip
    return {**summary, "written": written, "slots": slots}


def _single_account(*frames: Any) -> str | None:
    """The account the broker reports, when there is exactly one (else no filter)."""
    accounts: set[str] = set()
    for f in frames:
        accounts.update(a for a in f.get_column("account").unique().to_list() if a)
    return accounts.pop() if len(accounts) == 1 else None
