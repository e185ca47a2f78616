"""Nightly: compact the small files the day's runs left, vacuum beyond the time-travel
window, checkpoint; report files and bytes before and after for every table.

Only partitions before today's (UTC) are compacted: today's is still receiving a
commit a minute from futures collection. One failing table does not stop the others;
the run then ends Failed, naming it.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.states import Failed, State

from core.runtime import current_runtime
from core.store.maintenance import MaintenanceResult, failed_result, results_frame
from flows.naming import market_run_name
from tasks.alerts import alert_on_failure, daily_summary, send_alert
from tasks.maintenance import maintain_one_table, publish_maintenance_artifacts


@flow(
    name="maintenance",
    flow_run_name=market_run_name("maintenance"),
    on_failure=[alert_on_failure],
    on_crashed=[alert_on_failure],
)
async def maintenance(
    tables: list[str] | None = None, retention_hours: int | None = None
) -> dict[str, Any] | State:
    """`tables` defaults to every existing table; `retention_hours` to
    storage.vacuum_retention_hours."""
    rt = current_runtime()
    log = get_run_logger()
    store = rt.store
    retention = (
        rt.settings.storage.vacuum_retention_hours if retention_hours is None else retention_hours
    )
    unknown = [n for n in (tables or []) if n not in store.registry]
    if unknown:
        raise ValueError(f"unknown tables {unknown}; known: {sorted(store.registry)}")
    today = rt.clock.now().date()  # UTC: the partition still being written
    names = [n for n in (tables or sorted(store.registry)) if store.exists(n)]

    results: list[MaintenanceResult] = []
    for name in names:
        try:
            results.append(await maintain_one_table(name, retention, today))
        except Exception as exc:  # recorded; the other tables still get maintained
            log.error("maintenance of %s failed: %s", name, exc)
            results.append(failed_result(store, name, exc))
    frame = results_frame(results)
    await publish_maintenance_artifacts(frame, retention)
    summary = {
        "tables": frame.height,
        "files_before": int(frame["files_before"].sum()),
        "files_after": int(frame["files_after"].sum()),
        "bytes_before": int(frame["bytes_before"].sum()),
        "bytes_after": int(frame["bytes_after"].sum()),
        "files_vacuumed": int(frame["files_vacuumed"].sum()),
        "retention_hours": retention,
        "failed": frame.filter(frame["error"].is_not_null())["table"].to_list(),
    }
    log.info("maintenance: %s", summary)
    if rt.settings.alerts.blocks:
        await send_alert(*daily_summary(rt), rt.settings)  # nightly, after the close
    if summary["failed"]:
        return Failed(
            name="MaintenanceFailed",
            message=f"maintenance failed for {summary['failed']}; the other tables were done",
        )
    return summary
