"""The store's guarantees: validate-before-write, idempotent merges, no lost rows."""

from __future__ import annotations

import multiprocessing as mp
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandera.polars as pa
import polars as pl
import pytest

from v6.core.store import (
    REGISTRY,
    UTC_US,
    DeltaStore,
    SchemaViolation,
    TableSpec,
    UnknownTableError,
)
from v6.core.store.schemas.market import UtcTs

T0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)


def bars(n: int, start: datetime = T0, symbol: str = "ES", contract: str = "ESM6") -> pl.DataFrame:
    ts = [start + timedelta(minutes=i) for i in range(n)]
    return pl.DataFrame(
        {
            "symbol": [symbol] * n,
            "contract": [contract] * n,
            "ts": ts,
            "open": [100.0 + i for i in range(n)],
            "high": [101.0 + i for i in range(n)],
            "low": [99.0 + i for i in range(n)],
            "close": [100.5 + i for i in range(n)],
            "volume": pl.Series([10] * n, dtype=pl.Int64),
        }
    ).with_columns(pl.col("ts").cast(UTC_US))


@pytest.fixture
def store(store_root: Path) -> DeltaStore:
    return DeltaStore(store_root)


def test_every_registered_table_round_trips_its_example(store: DeltaStore) -> None:
    for name, spec in REGISTRY.items():
        assert spec.example is not None, f"{name} has no example record"
        example = spec.example()
        store.merge(name, example) if spec.keys else store.append(name, example)
        back = store.read(name).collect()
        assert back.schema == spec.schema
        assert back.height == example.height


def test_merge_twice_is_idempotent_and_commits_nothing_new(store: DeltaStore) -> None:
    batch = bars(30)
    first = store.merge("futures_bars", batch)
    assert first.rows_inserted == 30
    version = store.stats("futures_bars").version
    again = store.merge("futures_bars", batch)
    assert (again.rows_inserted, again.rows_updated, again.version) == (0, 0, None)
    assert store.stats("futures_bars").version == version
    table = store.read("futures_bars").collect()
    assert table.height == 30
    assert table.sort("ts").drop("date").equals(batch.select(table.drop("date").columns))


def test_merge_updates_changed_rows_only(store: DeltaStore) -> None:
    store.merge("futures_bars", bars(10))
    changed = bars(10).with_columns(
        pl.when(pl.col("ts") == T0).then(pl.lit(105.0)).otherwise(pl.col("high")).alias("high")
    )
    result = store.merge("futures_bars", changed)
    assert (result.rows_inserted, result.rows_updated) == (0, 1)
    assert store.read("futures_bars", pl.col("ts") == T0).collect()["high"].item() == 105.0


def test_insert_only_merge_never_touches_existing_rows(store: DeltaStore) -> None:
    store.merge("futures_bars", bars(5))
    changed = bars(6).with_columns(pl.col("high") + 1)
    result = store.merge("futures_bars", changed, update=False)
    assert (result.rows_inserted, result.rows_updated) == (1, 0)
    assert store.read("futures_bars", pl.col("ts") == T0).collect()["high"].item() == 101.0


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (
            lambda df: df.with_columns(pl.col("volume").cast(pl.Float64)),
            "column 'volume' has dtype Float64, the table stores Int64",
        ),
        (lambda df: df.drop("close"), "column 'close' is missing"),
        (lambda df: df.with_columns(extra=pl.lit(1)), "columns ['extra'] are not in the table"),
        (
            lambda df: df.with_columns(pl.col("ts").cast(pl.Datetime("ns", "UTC"))),
            "column 'ts' has dtype Datetime(time_unit='ns', time_zone='UTC')",
        ),
        (
            lambda df: df.with_columns(pl.col("ts").dt.replace_time_zone(None)),
            "column 'ts' has dtype Datetime(time_unit='us', time_zone=None)",
        ),
        (
            lambda df: df.with_columns(pl.lit(-5, dtype=pl.Int64).alias("volume")),
            "check 'greater_than_or_equal_to(0)' failed on column 'volume' for 3 row(s)",
        ),
        (lambda df: df.with_columns(pl.lit(1.0).alias("high")), "OHLC inconsistent"),
        (lambda df: df.with_columns(pl.lit(0.0).alias("low")), "greater_than(0)"),
        (lambda df: pl.concat([df, df.head(1)]), "share a key ['symbol', 'contract', 'ts']"),
        (
            lambda df: df.with_columns(pl.lit(None, dtype=pl.String).alias("contract")),
            "have a null key",
        ),
    ],
)
def test_bad_batches_are_rejected_and_nothing_is_written(
    store: DeltaStore,
    mutate,
    fragment: str,  # type: ignore[no-untyped-def]
) -> None:
    store.merge("futures_bars", bars(2, start=T0 - timedelta(days=1)))
    version = store.stats("futures_bars").version
    with pytest.raises(SchemaViolation) as exc:
        store.merge("futures_bars", mutate(bars(3)))
    assert "table futures_bars" in str(exc.value)
    assert fragment in str(exc.value)
    with pytest.raises(SchemaViolation):
        store.append("futures_bars", mutate(bars(3)))
    assert store.stats("futures_bars").version == version
    assert store.read("futures_bars").collect().height == 2


def test_value_errors_show_sample_failing_rows(store: DeltaStore) -> None:
    bad = bars(3).with_columns(
        pl.when(pl.col("ts") == T0 + timedelta(minutes=1))
        .then(-1)
        .otherwise(pl.col("volume"))
        .alias("volume")
    )
    with pytest.raises(SchemaViolation) as exc:
        store.append("futures_bars", bad)
    assert "1 row(s)" in str(exc.value)
    assert "14:31:00" in str(exc.value)  # the failing row itself is shown


def test_disabled_pandera_is_refused(store: DeltaStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from pandera.config import config_context

    with config_context(validation_enabled=False), pytest.raises(SchemaViolation) as exc:
        store.append("futures_bars", bars(1))
    assert "validation is disabled" in str(exc.value)
    assert not store.exists("futures_bars") or store.read("futures_bars").collect().is_empty()


def test_append_with_txn_is_applied_once(store: DeltaStore) -> None:
    first = store.append(
        "underlying_bars",
        bars(4).drop("contract").with_columns(symbol=pl.lit("SPY")),
        txn=("collector-1", 7),
    )
    assert first.rows_inserted == 4
    replay = store.append(
        "underlying_bars",
        bars(4).drop("contract").with_columns(symbol=pl.lit("SPY")),
        txn=("collector-1", 7),
    )
    assert replay.skipped
    assert store.read("underlying_bars").collect().height == 4


def test_read_prunes_by_partition_and_filters(store: DeltaStore) -> None:
    store.merge("futures_bars", bars(3))
    store.merge("futures_bars", bars(3, start=T0 + timedelta(days=1)))
    day2 = store.read("futures_bars", pl.col("date") == date(2026, 3, 3)).collect()
    assert day2.height == 3
    assert day2["date"].unique().to_list() == [date(2026, 3, 3)]
    cols = store.read("futures_bars", columns=["ts", "close"]).collect()
    assert cols.columns == ["ts", "close"]


def test_reading_a_table_never_written_gives_empty_frame_with_schema(store: DeltaStore) -> None:
    frame = store.read("futures_quotes").collect()
    assert frame.is_empty()
    assert frame.schema == REGISTRY["futures_quotes"].schema


def test_history_and_stats(store: DeltaStore) -> None:
    assert store.history("futures_bars") == []
    store.merge("futures_bars", bars(3))
    store.merge("futures_bars", bars(3, start=T0 + timedelta(hours=1)))
    ops = [h["operation"] for h in store.history("futures_bars")]
    assert ops[0] == "MERGE" and "WRITE" in ops
    stats = store.stats("futures_bars")
    assert (stats.rows, stats.version) == (6, 2)
    assert stats.files >= 1 and stats.size_bytes > 0


def test_unknown_table_names_the_known_ones(store: DeltaStore) -> None:
    with pytest.raises(
        UnknownTableError, match=r"unknown table 'nope'; known tables: .*futures_bars"
    ):
        store.read("nope")


def test_merge_on_table_without_keys_is_refused(store_root: Path) -> None:
    class Log(pa.DataFrameModel):
        ts: UtcTs  # type: ignore[valid-type]
        msg: str

        class Config:
            strict = True

    spec = TableSpec(name="log", model=Log, description="free log")
    store = DeltaStore(store_root, registry={"log": spec})
    with pytest.raises(ValueError, match="declares no keys; use append"):
        store.merge(
            "log", pl.DataFrame({"ts": [T0], "msg": ["x"]}).with_columns(pl.col("ts").cast(UTC_US))
        )


# -- concurrency: real processes (spawn: the Delta runtime must not be forked) ---------------
def _append_worker(root: str, worker: int, n: int) -> None:
    store = DeltaStore(root, commit_backoff_s=0.01, commit_retries=20)
    for i in range(n):
        start = T0 + timedelta(days=worker, minutes=i)
        store.append("futures_bars", bars(1, start=start, contract=f"W{worker}"))


def _merge_worker(root: str, worker: int, n: int) -> None:
    store = DeltaStore(root, commit_backoff_s=0.01, commit_retries=30)
    for i in range(n):
        # overlapping keys on purpose: every worker writes the same bars
        store.merge("futures_bars", bars(2, start=T0 + timedelta(minutes=2 * i)))


@pytest.mark.parametrize("worker_fn", [_append_worker, _merge_worker])
def test_concurrent_writers_lose_nothing(store_root: Path, worker_fn) -> None:  # type: ignore[no-untyped-def]
    DeltaStore(store_root).ensure("futures_bars")
    ctx = mp.get_context("spawn")
    n = 8
    procs = [ctx.Process(target=worker_fn, args=(str(store_root), w, n)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    table = DeltaStore(store_root).read("futures_bars").collect()
    if worker_fn is _append_worker:
        assert table.height == 3 * n  # every single-row commit landed
    else:
        assert table.height == 2 * n  # overlapping merges: each key exactly once
    assert table.select(pl.struct("symbol", "contract", "ts").is_unique().all()).item()
