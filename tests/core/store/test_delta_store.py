"""The store's guarantees: validate-before-write, idempotent merges, no lost rows."""

from __future__ import annotations

import multiprocessing as mp
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandera.polars as pa
import polars as pl
import pytest
from deltalake import DeltaTable

from core.domain.timezones import UTC_US
from core.store import REGISTRY, DeltaStore, SchemaViolation, TableSpec, UnknownTableError
from core.store.schemas.market import UtcTs

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
    history = store.history("futures_bars")
    assert [h["version"] for h in history] == [2, 1, 0]  # newest first: create + 2 commits
    assert {h["operation"] for h in history} <= {"MERGE", "WRITE"}
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


# -- write paths: time-bounded merges, the insert path, one snapshot per write ------------------
def test_version_reported_is_the_committed_one(store: DeltaStore) -> None:
    inserted = store.merge("futures_bars", bars(3))
    assert inserted.method == "insert"
    assert inserted.version == store.stats("futures_bars").version == 1
    changed = store.merge("futures_bars", bars(3).with_columns(pl.col("volume") + 1))
    assert (changed.method, changed.rows_updated) == ("merge", 3)
    assert changed.version == store.stats("futures_bars").version == 2
    appended = store.append("futures_bars", bars(1, start=T0 + timedelta(days=1)))
    assert (appended.method, appended.version) == ("append", 3)
    assert store.stats("futures_bars").version == 3


def test_all_new_rows_take_the_insert_path_and_a_replay_commits_nothing(
    store: DeltaStore,
) -> None:
    first = store.merge("futures_bars", bars(10))
    assert (first.method, first.rows_inserted) == ("insert", 10)
    replay = store.merge("futures_bars", bars(10))
    assert (replay.method, replay.version, replay.rows_inserted) == ("none", None, 0)
    # The collector re-fetches the last stored bar: unchanged overlap + new rows -> insert.
    overlap = store.merge("futures_bars", bars(12).tail(4))
    assert (overlap.method, overlap.rows_inserted, overlap.rows_updated) == ("insert", 2, 0)
    table = store.read("futures_bars").sort("ts").collect()
    assert table.height == 12
    assert table.drop("date").equals(bars(12).select(table.drop("date").columns))
    assert store.stats("futures_bars").version == 2  # create + two commits, replay none


def test_a_changed_overlap_row_is_merged_not_duplicated(store: DeltaStore) -> None:
    store.merge("futures_bars", bars(5))
    corrected = (
        bars(7)
        .tail(3)
        .with_columns(
            pl.when(pl.col("ts") == T0 + timedelta(minutes=4))
            .then(pl.col("volume") + 100)
            .otherwise(pl.col("volume"))
            .alias("volume")
        )
    )
    res = store.merge("futures_bars", corrected)
    assert (res.method, res.rows_inserted, res.rows_updated) == ("merge", 2, 1)
    table = store.read("futures_bars").sort("ts").collect()
    assert table.height == 7
    assert table.filter(pl.col("ts") == T0 + timedelta(minutes=4))["volume"].item() == 110
    # Insert-only never updates, so the same correction is just the (absent) new rows.
    again = store.merge("futures_bars", corrected.with_columns(pl.col("volume") + 1), update=False)
    assert (again.method, again.rows_inserted, again.version) == ("none", 0, None)


def test_bounded_merge_across_midnight_is_exact(store: DeltaStore) -> None:
    """A batch spanning two date partitions: the time bound covers both days."""
    late = datetime(2026, 3, 2, 23, 57, tzinfo=UTC)
    store.merge("futures_bars", bars(6, start=late))  # 23:57 .. 00:02, two partitions
    assert sorted(store.read("futures_bars").collect()["date"].unique()) == [
        date(2026, 3, 2),
        date(2026, 3, 3),
    ]
    edited = bars(8, start=late).with_columns(pl.col("high") + 0.5)  # every row changed
    res = store.merge("futures_bars", edited)
    assert (res.method, res.rows_inserted, res.rows_updated) == ("merge", 2, 6)
    assert store.merge("futures_bars", edited).version is None  # replay: nothing
    table = store.read("futures_bars").sort("ts").collect()
    assert table.drop("date").equals(edited.select(table.drop("date").columns))


def test_time_bound_never_misses_sub_millisecond_rows(store: DeltaStore) -> None:
    """Delta truncates timestamp stats to milliseconds; the bound is widened to whole ms so
    a stored row at the very edge of the batch's range is still found and updated."""
    t = T0 + timedelta(microseconds=700)
    quote = pl.DataFrame(
        {
            "symbol": ["ES", "ES"],
            "contract": ["ESM6", "ESM6"],
            "ts": [t, t + timedelta(microseconds=200)],
            "bid": [5000.0, 5000.25],
            "ask": [5000.25, 5000.5],
            "last": [5000.25, 5000.25],
        }
    ).with_columns(pl.col("ts").cast(UTC_US))
    store.merge("futures_quotes", quote)
    predicate = DeltaStore._merge_predicate(
        store.spec("futures_quotes"), quote.with_columns(date=pl.lit(T0.date()))
    )
    assert "t.ts >= '2026-03-02T14:30:00+00:00' AND t.ts < '2026-03-02T14:30:00.001000+00:00'" in (
        predicate
    )
    res = store.merge("futures_quotes", quote.with_columns(pl.col("bid") - 0.25))
    assert (res.method, res.rows_inserted, res.rows_updated) == ("merge", 0, 2)
    assert store.read("futures_quotes").collect().height == 2


def test_insert_path_reruns_when_another_writer_commits_in_between(
    store: DeltaStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The insert path's append is accepted only on top of the snapshot it diffed against:
    a writer that lands the same rows in between forces a re-read, never a duplicate."""
    rival = DeltaStore(store.root)
    real_diff = DeltaStore._diff
    reads: list[int] = []

    def racing(self: DeltaStore, table, spec, data):  # type: ignore[no-untyped-def]
        out = real_diff(self, table, spec, data)
        if self is store:
            reads.append(table.version())
            if len(reads) == 1:
                rival.merge("futures_bars", data)  # lands after our read, before our commit
        return out

    monkeypatch.setattr(DeltaStore, "_diff", racing)
    store.ensure("futures_bars")
    res = store.merge("futures_bars", bars(5))
    assert reads == [0, 1]  # re-read on the snapshot that holds the rival's commit
    assert (res.rows_inserted, res.version, res.method) == (0, None, "none")
    table = store.read("futures_bars").collect()
    assert table.height == 5
    assert table.select(pl.struct("symbol", "contract", "ts").is_unique().all()).item()


def test_racing_txn_replay_is_skipped_not_duplicated(
    store: DeltaStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    rival = DeltaStore(store.root)
    real_append = DeltaStore._append
    calls: list[int] = []

    def racing(table, spec, data, props):  # type: ignore[no-untyped-def]
        calls.append(table.version())
        if len(calls) == 1:  # the rival replays the same txn after our txn check
            rival_batch = bars(4).drop("contract").with_columns(symbol=pl.lit("SPY"))
            rival.append("underlying_bars", rival_batch, txn=("collector-1", 7))
        return real_append(table, spec, data, props)

    monkeypatch.setattr(DeltaStore, "_append", staticmethod(racing))
    store.ensure("underlying_bars")
    batch = bars(4).drop("contract").with_columns(symbol=pl.lit("SPY"))
    res = store.append("underlying_bars", batch, txn=("collector-1", 7))
    assert res.skipped
    assert store.read("underlying_bars").collect().height == 4


def test_tables_checkpoint_at_the_configured_interval(store_root: Path) -> None:
    store = DeltaStore(store_root, checkpoint_interval=3)
    for i in range(6):  # versions 0 (create) .. 6
        store.merge("futures_bars", bars(1, start=T0 + timedelta(minutes=i)))
    log_dir = Path(store.uri("futures_bars")) / "_delta_log"
    checkpoints = sorted(p.name for p in log_dir.glob("*.checkpoint.parquet"))
    assert checkpoints == [f"{v:020d}.checkpoint.parquet" for v in (2, 5)]  # every 3 commits
    config = DeltaTable(store.uri("futures_bars")).metadata().configuration
    assert config["delta.checkpointInterval"] == "3"
    with pytest.raises(ValueError, match="checkpoint_interval=0"):
        DeltaStore(store_root, checkpoint_interval=0)


def test_range_keys_and_cluster_by_are_declared_and_checked() -> None:
    assert REGISTRY["futures_bars"].range_keys == ("ts",)
    assert REGISTRY["futures_bars"].cluster_by == ("symbol", "ts")
    spec = REGISTRY["futures_bars"]
    with pytest.raises(ValueError, match=r"cluster_by \['nope'\] are not columns"):
        TableSpec(name="x", model=spec.model, description="", cluster_by=("nope",))
    with pytest.raises(ValueError, match=r"cluster_by \['date'\] are partition columns"):
        TableSpec(
            name="x", model=spec.model, description="", partition_by=("date",), cluster_by=("date",)
        )


def test_decisions_recorded_before_the_shared_vocabulary_stay_valid(store: DeltaStore) -> None:
    """Rows an earlier version wrote with the rules' old name for a single leg still
    validate (maintenance rewrites them); a type nobody ever wrote does not."""
    example = REGISTRY["decisions"].example
    assert example is not None
    legacy = example().with_columns(pl.lit("single_leg").alias("strategy_type"))
    store.append("decisions", legacy)
    assert store.read("decisions").collect()["strategy_type"].to_list() == ["single_leg"] * len(
        legacy
    )
    with pytest.raises(SchemaViolation):
        store.append("decisions", legacy.with_columns(pl.lit("straddle").alias("strategy_type")))


def test_a_book_table_without_a_time_key_takes_the_insert_path(store: DeltaStore) -> None:
    """Keyed on a string (order_ref): new keys and unchanged replays append after a key
    lookup; only a row whose values changed goes through a MERGE, and a key never doubles."""
    spec = store.spec("orders")
    assert not spec.range_keys
    first = spec.example().with_columns(pl.lit("v6:s:0:combo").alias("order_ref"))
    res = store.merge("orders", first)
    assert (res.method, res.rows_inserted) == ("insert", 1)
    second = first.with_columns(pl.lit("v6:s:1:combo").alias("order_ref"))
    res = store.merge("orders", pl.concat([first, second]))
    assert (res.method, res.rows_inserted, res.rows_updated) == ("insert", 1, 0)
    assert store.merge("orders", second).method == "none"
    filled = second.with_columns(pl.lit("CANCELLED").alias("status"))
    res = store.merge("orders", filled)
    assert (res.method, res.rows_inserted, res.rows_updated) == ("merge", 0, 1)
    table = store.read("orders").sort("order_ref").collect()
    assert table["order_ref"].to_list() == ["v6:s:0:combo", "v6:s:1:combo"]
    assert table["status"].to_list() == [first["status"].item(), "CANCELLED"]
    assert (
        store.merge(
            "orders", filled.with_columns(pl.lit("x").alias("message")), update=False
        ).method
        == "none"
    )
