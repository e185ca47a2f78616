"""Nightly maintenance: compaction of closed partitions, vacuum within retention, stats."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
from deltalake import DeltaTable

from core.domain.timezones import UTC_US
from core.store import REGISTRY, DeltaStore
from core.store.maintenance import disk_usage, maintain, maintain_table

DAYS = [date(2026, 3, 2), date(2026, 3, 3), date(2026, 3, 4)]


def small_batches(store: DeltaStore, per_day: int = 4) -> int:
    """`per_day` one-row commits per day: the file pattern minute-by-minute collection leaves."""
    n = 0
    for d in DAYS:
        for i in range(per_day):
            ts = datetime(d.year, d.month, d.day, 15, i, tzinfo=UTC)
            batch = pl.DataFrame(
                {
                    "symbol": ["ES"],
                    "contract": ["ESH6"],
                    "ts": [ts],
                    "open": [6800.0 + i],
                    "high": [6801.0 + i],
                    "low": [6799.0 + i],
                    "close": [6800.5 + i],
                    "volume": [10],
                }
            ).with_columns(pl.col("ts").cast(UTC_US))
            store.merge("futures_bars", batch)
            n += 1
    return n


def test_compacts_closed_partitions_and_keeps_the_open_one(store_root: Path) -> None:
    store = DeltaStore(store_root)
    rows = small_batches(store)
    before = store.read("futures_bars").sort("ts").collect()
    res = maintain_table(store, "futures_bars", retention_hours=168, closed_before=DAYS[-1])
    assert (res.files_before, res.files_after) == (12, 4 + 2)  # two days -> 1 file each
    assert (res.files_compacted, res.files_written) == (8, 2)
    assert res.error is None
    after = store.read("futures_bars").sort("ts").collect()
    assert after.equals(before) and after.height == rows
    # 168 h retention: the removed files stay on disk for time travel.
    assert res.disk_files_after == res.disk_files_before + 2
    old = pl.read_delta(store.uri("futures_bars"), version=3)  # time travel still works
    assert old.height == 3
    assert DeltaTable(store.uri("futures_bars")).version() == res.version_after


def test_vacuum_with_zero_retention_frees_disk(store_root: Path) -> None:
    store = DeltaStore(store_root)
    small_batches(store)
    res = maintain_table(store, "futures_bars", retention_hours=0, enforce_retention=False)
    assert res.files_after == 3  # every day compacted
    assert res.files_vacuumed == 12
    assert res.disk_files_after == 3
    assert res.disk_bytes_after is not None and res.disk_bytes_before is not None
    assert res.disk_bytes_after < res.disk_bytes_before
    assert disk_usage(store, "futures_bars") == (3, res.disk_bytes_after)
    log = Path(store.uri("futures_bars")) / "_delta_log"
    assert any(p.name.endswith(".checkpoint.parquet") for p in log.iterdir())


def test_second_run_has_nothing_to_compact(store_root: Path) -> None:
    store = DeltaStore(store_root)
    small_batches(store, per_day=2)
    maintain_table(store, "futures_bars", retention_hours=0, enforce_retention=False)
    again = maintain_table(store, "futures_bars", retention_hours=0, enforce_retention=False)
    assert (again.files_compacted, again.files_written, again.files_vacuumed) == (0, 0, 0)
    assert again.files_before == again.files_after == 3


def test_maintain_reports_every_existing_table(store_root: Path) -> None:
    store = DeltaStore(store_root)
    small_batches(store, per_day=2)
    store.ensure("futures_quotes")
    frame = maintain(store, retention_hours=168, closed_before=DAYS[-1] + timedelta(days=1))
    assert set(frame["table"]) == {"futures_bars", "futures_quotes"}
    bars = frame.filter(pl.col("table") == "futures_bars").row(0, named=True)
    assert (bars["files_before"], bars["files_after"]) == (6, 3)
    assert frame["error"].null_count() == frame.height
    for col in ("files_before", "files_after", "bytes_before", "bytes_after"):
        assert col in frame.columns


def test_one_failing_table_does_not_stop_the_others(store_root: Path) -> None:
    store = DeltaStore(store_root)
    small_batches(store, per_day=2)
    store.ensure("futures_quotes")
    # A retention below the table's own minimum with enforcement on is refused by deltalake.
    frame = maintain(
        store,
        ["futures_bars", "futures_quotes", "underlying_bars"],
        retention_hours=1,
        enforce_retention=True,
    )
    assert frame.height == 2  # underlying_bars does not exist: skipped
    assert frame["error"].drop_nulls().str.contains("retention").all()


def test_clustered_table_reorders_only_partitions_with_new_files(store_root: Path) -> None:
    """futures_bars declares cluster_by (symbol, ts): closed partitions are Z-ordered into one
    file with each symbol's rows together; a partition already down to one file is left
    alone, and one that later received a late bar is clustered again."""
    store = DeltaStore(store_root)
    for d in DAYS:  # two symbols interleaved over four commits per day
        for i in range(2):
            for sym in ("NQ", "ES"):
                ts = datetime(d.year, d.month, d.day, 15, i, tzinfo=UTC)
                row = pl.DataFrame(
                    {
                        "symbol": [sym],
                        "contract": [f"{sym}H6"],
                        "ts": [ts],
                        "open": [10.0],
                        "high": [11.0],
                        "low": [9.0],
                        "close": [10.5],
                        "volume": [1],
                    }
                ).with_columns(pl.col("ts").cast(UTC_US))
                store.merge("futures_bars", row)
    before = store.read("futures_bars").sort("symbol", "ts").collect()
    res = maintain_table(store, "futures_bars", retention_hours=168, closed_before=DAYS[-1])
    assert (res.files_compacted, res.files_written, res.files_after) == (8, 2, 2 + 4)
    after = store.read("futures_bars").sort("symbol", "ts").collect()
    assert after.equals(before)
    day0 = [u for u in DeltaTable(store.uri("futures_bars")).file_uris() if "2026-03-02" in u]
    assert len(day0) == 1
    assert pl.read_parquet(day0[0]).get_column("symbol").rle().len() == 2  # one run per symbol

    late = before.filter(pl.col("date") == DAYS[0]).head(1).drop("date")
    store.merge("futures_bars", late.with_columns(pl.col("ts") + timedelta(minutes=30)))
    again = maintain_table(store, "futures_bars", retention_hours=168, closed_before=DAYS[-1])
    assert (again.files_compacted, again.files_written) == (2, 1)  # only the late day


def test_unclustered_table_is_compacted(store_root: Path) -> None:
    store = DeltaStore(store_root)
    spec = store.spec("futures_quarantine")
    assert spec.cluster_by == ()
    assert spec.example is not None
    for i in range(3):
        row = spec.example().with_columns(pl.col("ts") + timedelta(minutes=i))
        store.merge("futures_quarantine", row)
    res = maintain_table(store, "futures_quarantine", retention_hours=168)
    assert (res.files_before, res.files_after, res.files_compacted) == (3, 1, 3)


def test_maintenance_gives_old_tables_the_configured_checkpoint_interval(
    store_root: Path,
) -> None:
    old = DeltaStore(store_root, checkpoint_interval=100)
    old.merge("strategies", REGISTRY["strategies"].example())
    key = "delta.checkpointInterval"
    uri = old.uri("strategies")
    assert DeltaTable(uri).metadata().configuration[key] == "100"
    now = DeltaStore(store_root, checkpoint_interval=20)
    maintain_table(now, "strategies", retention_hours=168)
    assert DeltaTable(uri).metadata().configuration[key] == "20"
    assert now.read("strategies").collect().height == 1  # the manifest followed the commit
    version = DeltaTable(uri).version()
    maintain_table(now, "strategies", retention_hours=168)
    assert DeltaTable(uri).version() == version  # already set: no second commit
