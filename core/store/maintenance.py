"""Nightly Delta maintenance: compact, vacuum, checkpoint, expire old log files.

Every collection run commits small files (one per partition touched); after a day
the futures tables hold thousands, and each read opens all of them. Compaction
rewrites closed partitions into few large files; tables that declare
`TableSpec.cluster_by` (the market tables: symbol, ts) are Z-ordered instead, in
row groups of `CLUSTER_ROW_GROUP_ROWS`, so a one-symbol read skips the other symbols'
row groups by their stats. Vacuum then deletes files no version inside the retention
window needs, so time travel keeps working for `StorageSettings.vacuum_retention_hours`
(default 168 h = one week) and no longer. A checkpoint last keeps opening the table
cheap however many commits it has.

Only partitions before `closed_before` (today, in the flow) are compacted: the open
partition is still being merged into every minute and compacting it would race the
collector for no lasting gain. A partition without two small files to merge (a day of
bars after one run: a single file) is left alone, so a second run has nothing to do
(Z-order, unlike compaction, would otherwise rewrite it every night).

Before rewriting, the rows of the partitions with files to merge are read and validated
like a write (exact schema, keys, pandera checks): compaction must not bless rows that
break the schema (written around V6), so such a table is refused with the store's
`SchemaViolation`, untouched. Opening goes through `DeltaStore.open_table`, so a lost or
rolled-back table is refused too (`StoreCorrupt`), and the versions maintenance commits
are recorded in the store's manifest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

import polars as pl
from deltalake import DeltaTable, WriterProperties
from deltalake.exceptions import CommitFailedError

from core.store.delta import DeltaStore, TableStats
from core.store.integrity import open_checked, record_version
from core.store.validation import prepare

log = logging.getLogger(f"v6.{__name__}")

# Row-group size of Z-ordered files: small enough that a day of 1-minute bars of a few
# symbols splits into per-symbol row groups (a day has 1,380 bars per future), large
# enough that the per-row-group overhead stays negligible. Measured on the 30-day
# one-symbol query (benchmarks/store.py): ~15-20% faster than plain compaction.
CLUSTER_ROW_GROUP_ROWS = 4096
# Delta's default `delta.targetFileSize` (100 MiB), what optimize aims for when not told.
DEFAULT_TARGET_SIZE = 104_857_600


@dataclass(frozen=True)
class MaintenanceResult:
    """Before/after figures of one table. `files`/`bytes` count the live table version;
    `disk_*` count every data file on disk (what vacuum frees), local tables only."""

    table: str
    version_before: int
    version_after: int
    files_before: int
    files_after: int
    bytes_before: int
    bytes_after: int
    disk_files_before: int | None
    disk_files_after: int | None
    disk_bytes_before: int | None
    disk_bytes_after: int | None
    files_compacted: int
    files_written: int
    files_vacuumed: int
    seconds: float
    error: str | None = None


RESULT_SCHEMA = pl.Schema(
    {
        "table": pl.String(),
        "version_before": pl.Int64(),
        "version_after": pl.Int64(),
        "files_before": pl.Int64(),
        "files_after": pl.Int64(),
        "bytes_before": pl.Int64(),
        "bytes_after": pl.Int64(),
        "disk_files_before": pl.Int64(),
        "disk_files_after": pl.Int64(),
        "disk_bytes_before": pl.Int64(),
        "disk_bytes_after": pl.Int64(),
        "files_compacted": pl.Int64(),
        "files_written": pl.Int64(),
        "files_vacuumed": pl.Int64(),
        "seconds": pl.Float64(),
        "error": pl.String(),
    }
)


def disk_usage(store: DeltaStore, name: str) -> tuple[int, int] | None:
    """(data files, bytes) under a local table's directory, ignoring the log; None if remote."""
    if "://" in store.root:
        return None
    root = Path(store.uri(name))
    if not root.exists():
        return (0, 0)
    files = [p for p in root.rglob("*.parquet") if "_delta_log" not in p.parts]
    return len(files), sum(p.stat().st_size for p in files)


def _open(store: DeltaStore, name: str) -> DeltaTable:
    table = open_checked(store, name)
    if table is None:
        raise FileNotFoundError(f"table {name} at {store.uri(name)} does not exist")
    return table


def _days_to_rewrite(
    actions: pl.DataFrame, closed_before: date | None, small_below: int
) -> list[date]:
    """Days (before `closed_before`) holding two or more files under `small_below` bytes:
    the partitions a rewrite merges (compaction skips a partition with one such file)."""
    small = pl.col("size_bytes") < small_below
    per_day = actions.filter(small).group_by("partition.date").len()
    if closed_before is not None:
        per_day = per_day.filter(pl.col("partition.date") < closed_before)
    days: list[date] = per_day.filter(pl.col("len") > 1).get_column("partition.date").to_list()
    return sorted(days)


def _validate_rows(store: DeltaStore, name: str, days: list[date] | None) -> None:
    """Raise SchemaViolation if the rows about to be rewritten (the `days` partitions, or
    the whole table) break the table's schema, keys or checks."""
    where = None if days is None else pl.col("date").is_in(days)
    prepare(store.spec(name), store.read(name, where=where).collect())


def _compact(
    store: DeltaStore, name: str, closed_before: date | None, target_size: int | None
) -> tuple[int, int]:
    """Rewrite the small files of closed partitions; (files removed, files written).

    Plain compaction for tables without `cluster_by`. Clustered tables are Z-ordered, one
    call over just the partitions holding two or more small files (Z-order rewrites
    whatever it is given, so the selection is what keeps a second run a no-op)."""
    spec = store.spec(name)
    table = _open(store, name)
    by_date = spec.partition_by == ("date",)
    actions = pl.DataFrame(table.get_add_actions(flatten=True))
    target = target_size or DEFAULT_TARGET_SIZE
    # Z-order, like compaction, only merges small files: a partition Z-ordered into files
    # near the target size is left alone, however large it is.
    small_below = target // 2 if spec.cluster_by else target
    days = _days_to_rewrite(actions, closed_before, small_below) if by_date else None
    if days == [] or actions.height < 2:
        return 0, 0
    _validate_rows(store, name, days)
    if not spec.cluster_by:
        filters = None
        if closed_before is not None and by_date:
            filters = [("date", "<", closed_before.isoformat())]
        metrics = table.optimize.compact(partition_filters=filters, target_size=target_size)
        return int(metrics["numFilesRemoved"]), int(metrics["numFilesAdded"])
    props = WriterProperties(max_row_group_size=CLUSTER_ROW_GROUP_ROWS)
    if not by_date:
        if spec.partition_by:  # no generic partition selection: plain compaction
            metrics = table.optimize.compact(target_size=target_size)
        else:
            metrics = table.optimize.z_order(
                list(spec.cluster_by), target_size=target_size, writer_properties=props
            )
        return int(metrics["numFilesRemoved"]), int(metrics["numFilesAdded"])
    assert days is not None  # by_date
    metrics = table.optimize.z_order(
        list(spec.cluster_by),
        partition_filters=[("date", "in", [d.isoformat() for d in days])],
        target_size=target_size,
        writer_properties=props,
    )
    return int(metrics["numFilesRemoved"]), int(metrics["numFilesAdded"])


def maintain_table(
    store: DeltaStore,
    name: str,
    *,
    retention_hours: int,
    closed_before: date | None = None,
    enforce_retention: bool = True,
    target_size: int | None = None,
) -> MaintenanceResult:
    """Compact (closed partitions only when `closed_before` is given), vacuum beyond the
    retention, checkpoint and expire log entries, measuring before and after.

    `enforce_retention=False` lets the configured retention go below the table's own
    (Delta's default 168 h): the config is the authority; the flow passes it explicitly.
    """
    t0 = time.perf_counter()
    before = store.stats(name)
    disk_before = disk_usage(store, name)
    if before.version < 0:
        return _result(
            name,
            before.version,
            before,
            before,
            disk_before,
            disk_before,
            0,
            0,
            0,
            time.perf_counter() - t0,
        )
    compacted = written = 0
    for attempt in range(store.commit_retries + 1):
        try:
            compacted, written = _compact(store, name, closed_before, target_size)
            break
        except CommitFailedError:
            if attempt == store.commit_retries:
                raise
            log.warning("%s: compaction conflicted with a writer; retrying", name)
            time.sleep(store.commit_backoff_s * 2**attempt)
    table = _open(store, name)
    disk_pre_vacuum = disk_usage(store, name)
    listed = table.vacuum(
        retention_hours=retention_hours,
        enforce_retention_duration=enforce_retention,
        dry_run=False,
    )
    table = _open(store, name)
    _adopt_checkpoint_interval(store, table)
    table.create_checkpoint()
    table.cleanup_metadata()
    record_version(store, name, table.version())
    after = store.stats(name)
    disk_after = disk_usage(store, name)
    # vacuum lists every expired tombstone, also ones already deleted by an earlier run;
    # on local disk count what really went away.
    vacuumed = (
        disk_pre_vacuum[0] - disk_after[0]
        if disk_pre_vacuum is not None and disk_after is not None
        else len(listed)
    )
    result = _result(
        name,
        before.version,
        before,
        after,
        disk_before,
        disk_after,
        compacted,
        written,
        vacuumed,
        time.perf_counter() - t0,
    )
    log.info(
        "%s: files %d -> %d, bytes %d -> %d, on disk %s -> %s (compacted %d into %d, vacuumed "
        "%d, retention %d h) in %.2fs",
        name,
        result.files_before,
        result.files_after,
        result.bytes_before,
        result.bytes_after,
        disk_before,
        disk_after,
        compacted,
        written,
        vacuumed,
        retention_hours,
        result.seconds,
    )
    return result


def _result(
    name: str,
    version_before: int,
    before: TableStats,
    after: TableStats,
    disk_before: tuple[int, int] | None,
    disk_after: tuple[int, int] | None,
    compacted: int,
    written: int,
    vacuumed: int,
    seconds: float,
    error: str | None = None,
) -> MaintenanceResult:
    return MaintenanceResult(
        table=name,
        version_before=version_before,
        version_after=after.version,
        files_before=before.files,
        files_after=after.files,
        bytes_before=before.size_bytes,
        bytes_after=after.size_bytes,
        disk_files_before=disk_before[0] if disk_before else None,
        disk_files_after=disk_after[0] if disk_after else None,
        disk_bytes_before=disk_before[1] if disk_before else None,
        disk_bytes_after=disk_after[1] if disk_after else None,
        files_compacted=compacted,
        files_written=written,
        files_vacuumed=vacuumed,
        seconds=round(seconds, 4),
        error=error,
    )


def maintain(
    store: DeltaStore,
    tables: Sequence[str] | None = None,
    *,
    retention_hours: int,
    closed_before: date | None = None,
    enforce_retention: bool = True,
) -> pl.DataFrame:
    """Maintain every existing table (or `tables`); one row per table, errors recorded
    per table so one broken table does not stop the others."""
    names = list(tables) if tables is not None else sorted(store.registry)
    rows: list[MaintenanceResult] = []
    for name in names:
        if not store.exists(name):
            continue
        try:
            rows.append(
                maintain_table(
                    store,
                    name,
                    retention_hours=retention_hours,
                    closed_before=closed_before,
                    enforce_retention=enforce_retention,
                )
            )
        except Exception as exc:  # recorded and reported; the flow decides the final state
            log.exception("maintenance of %s failed", name)
            rows.append(failed_result(store, name, exc))
    return results_frame(rows)


def failed_result(store: DeltaStore, name: str, exc: Exception) -> MaintenanceResult:
    """The row for a table whose maintenance raised: unchanged numbers and the error, so one
    broken table is reported beside the others instead of stopping them."""
    stats = store.stats(name)
    return _result(
        name, stats.version, stats, stats, None, None, 0, 0, 0, 0.0,
        error=f"{type(exc).__name__}: {exc}",
    )  # fmt: skip


def results_frame(rows: Sequence[MaintenanceResult]) -> pl.DataFrame:
    return pl.DataFrame([asdict(r) for r in rows], schema=RESULT_SCHEMA)


def _adopt_checkpoint_interval(store: DeltaStore, table: DeltaTable) -> None:
    """Give a table created under another `checkpoint_interval` the configured one (one
    metadata commit), so a changed setting reaches existing tables, not only new ones."""
    key = "delta.checkpointInterval"
    want = str(store.checkpoint_interval)
    if table.metadata().configuration.get(key) != want:
        table.alter.set_table_properties({key: want}, raise_if_not_exists=False)
