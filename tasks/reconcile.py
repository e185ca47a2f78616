"""Tasks of position reconciliation: thin wrappers over `core.reconcile` and the Book.

One task runs the whole reconciliation (`core.book.against_broker`, the composition
the trading cycle's reconcile step runs too) and retries with back-off: the broker reads
are read-only (a repeat asks again, reconnecting if the line dropped) and the writes are
idempotent merges (fills insert-only). Nothing caches: inputs hold a live broker connection.
"""

from __future__ import annotations

from typing import Any

import polars as pl
from prefect import get_run_logger, task
from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact
from prefect.cache_policies import NO_CACHE

from core.book.against_broker import Reconciliation, reconcile_against_broker
from core.book.ledger import Book
from core.broker.base import Broker
from core.marketdata.slots import SlotReport, default_slot_pool
from core.reconcile import ReconcileResult
from core.runtime import current_runtime

BREAKS_KEY = "reconciliation-breaks"
SUMMARY_KEY = "reconciliation-summary"


@task(name="reconcile-positions", cache_policy=NO_CACHE)
async def reconcile_positions(broker: Broker, run_id: str) -> Reconciliation:
    """Broker reads, reconcile, book writes: `core.book.against_broker`, as the trading
    cycle does. Reconnects first when a retry finds the line dropped."""
    if not broker.is_connected:
        await broker.connect()
    rt = current_runtime()
    rec = await reconcile_against_broker(Book(rt.store, rt.clock), broker, rt.settings, run_id)
    get_run_logger().info(
        "broker: %d positions, %d executions since %s, %d open orders",
        rec.broker.positions.height, rec.broker.executions.height, rec.since,
        rec.broker.open_orders.height,
    )  # fmt: skip
    return rec


def reconcile_with_retries() -> Any:
    """`reconcile_positions` with the retry policy from `settings.reconciliation` (safe to
    retry whole: the reads are read-only, the writes idempotent merges)."""
    cfg = current_runtime().settings.reconciliation
    delays = [cfg.fetch_backoff_s * 2**i for i in range(cfg.fetch_retries)]
    return reconcile_positions.with_options(
        retries=cfg.fetch_retries, retry_delay_seconds=delays or 0, retry_jitter_factor=0.2
    )


@task(name="slot-usage", cache_policy=NO_CACHE)
async def slot_usage(report: SlotReport | None = None) -> dict[str, Any]:
    """Market-data lines on the account now (and this cycle's registry report, if any)."""
    rt = current_runtime()
    budget = rt.settings.broker.market_data_lines
    pool = default_slot_pool(budget, rt.settings.storage.root)
    usage = pool.usage()
    out: dict[str, Any] = {
        "budget": budget,
        "account_in_use": sum(usage.values()),
        "owners": usage,
    }
    if report is not None:
        out["cycle"] = report.as_dict()
    return out


@task(name="publish-reconciliation-artifact", cache_policy=NO_CACHE)
async def publish_artifact(result: ReconcileResult, slots: dict[str, Any]) -> None:
    """A table of every break and how it was resolved, and a summary with the slot usage."""
    rows = (
        result.breaks.select(
            "kind", "resolution", "resolved", "severity", "contract", "strategy_id", "leg_id",
            "quantity_delta", "book_quantity", "broker_quantity", "exec_id", "detail",
        )
        .with_columns(pl.all().cast(pl.String).fill_null(""))
        .sort("resolved", "severity", "kind")
        .to_dicts()
    )  # fmt: skip
    summary = result.summary()
    await acreate_table_artifact(
        key=BREAKS_KEY,
        table=rows or [{"kind": "none", "resolution": "book equals broker"}],
        description=(
            f"Reconciliation {result.run_id}: {summary['breaks']} break(s), "
            f"{summary['unresolved_breaks']} unresolved, {summary['urgent_breaks']} urgent"
        ),
    )
    by_kind = "\n".join(f"| {k} | {n} |" for k, n in summary["breaks_by_kind"].items())
    cycle = slots.get("cycle", {})
    split = (
        f"{cycle.get('streamed', 0)} streamed / {cycle.get('snapshot', 0)} snapshot"
        if cycle
        else "no market data requested by this run"
    )
    markdown = f"""# Position reconciliation {result.run_id}

As of {result.as_of.isoformat()}: **book {"equals" if summary["in_agreement"] else "DIFFERS FROM"}
the broker** over {summary["positions"]} position(s).

| | |
|---|---|
| breaks | {summary["breaks"]} |
| unresolved (circuit-breaker input) | {summary["unresolved_breaks"]} |
| urgent (assignments, unknown refs) | {summary["urgent_breaks"]} |
| fills recorded | {summary["fills_recorded"]} |
| duplicate execution reports ignored | {summary["duplicate_reports"]} |

## Breaks by kind

| kind | count |
|---|---|
{by_kind or "| none | 0 |"}

## Market-data lines

{slots["account_in_use"]} of {slots["budget"]} lines in use on the account ({split}).
"""
    await acreate_markdown_artifact(key=SUMMARY_KEY, markdown=markdown)
    log = get_run_logger()
    if summary["unresolved_breaks"]:
        log.warning("%d unresolved reconciliation break(s)", summary["unresolved_breaks"])
    if summary["urgent_breaks"]:
        log.warning("%d urgent break(s): see the %s artifact", summary["urgent_breaks"],
                    BREAKS_KEY)  # fmt: skip
