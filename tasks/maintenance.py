"""Tasks of nightly maintenance: one per table, so each table's work shows (and retries)
on its own. Compaction, vacuum and checkpoints are idempotent: a retry is safe."""

from __future__ import annotations

from datetime import date
from typing import Any

import polars as pl
from prefect import get_run_logger, task
from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact
from prefect.cache_policies import NO_CACHE

from core.runtime import current_runtime
from core.store.maintenance import MaintenanceResult, maintain_table

MAINTENANCE_KEY = "store-maintenance"
SUMMARY_KEY = "store-maintenance-summary"


@task(name="maintain-table", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[5, 30])
async def maintain_one_table(
    name: str, retention_hours: int, closed_before: date | None
) -> MaintenanceResult:
    result = maintain_table(
        current_runtime().store,
        name,
        retention_hours=retention_hours,
        closed_before=closed_before,
        # The configured retention is the authority, also below Delta's 168 h default.
        enforce_retention=False,
    )
    get_run_logger().info(
        "%s: files %d -> %d, bytes %d -> %d, vacuumed %d files",
        name,
        result.files_before,
        result.files_after,
        result.bytes_before,
        result.bytes_after,
        result.files_vacuumed,
    )
    return result


@task(name="publish-maintenance-artifacts", cache_policy=NO_CACHE)
async def publish_maintenance_artifacts(results: pl.DataFrame, retention_hours: int) -> None:
    await acreate_table_artifact(
        results.to_dicts(),
        key=MAINTENANCE_KEY,
        description="per-table files and bytes, before/after",
    )
    await acreate_markdown_artifact(
        maintenance_markdown(results, retention_hours),
        key=SUMMARY_KEY,
        description="nightly Delta maintenance",
    )


def maintenance_markdown(results: pl.DataFrame, retention_hours: int) -> str:
    totals: dict[str, Any] = results.select(
        pl.col("files_before", "files_after", "bytes_before", "bytes_after", "files_vacuumed").sum()
    ).row(0, named=True)
    failed = results.filter(pl.col("error").is_not_null())
    lines = [
        "# Delta maintenance",
        "",
        f"- tables: {results.height} ({failed.height} failed)",
        f"- live files: {totals['files_before']} -> {totals['files_after']}",
        f"- live bytes: {totals['bytes_before']:,} -> {totals['bytes_after']:,}",
        f"- files vacuumed: {totals['files_vacuumed']} (time travel kept for {retention_hours} h)",
    ]
    lines += [f"- **{r['table']} failed**: {r['error']}" for r in failed.iter_rows(named=True)]
    return "\n".join(lines)
