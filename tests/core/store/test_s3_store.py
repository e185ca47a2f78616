"""Delta tables on S3-compatible object storage, against a real S3 HTTP server on loopback
(moto's standalone server, `s3_world`): every table created, written and read back; two
processes writing one table at once lose nothing; maintenance runs; bad settings and
wrong credentials are refused with one line."""

from __future__ import annotations

import multiprocessing as mp
import uuid
from datetime import UTC, date, datetime, timedelta

import botocore.exceptions
import polars as pl
import pytest
from deltalake.exceptions import DeltaError
from s3_world import S3World, s3_world_fixture  # noqa: F401  (the fixture)

from core.config import ConfigError, Settings, StorageSettings, load_settings
from core.store import REGISTRY, DeltaStore
from core.store.location import deltalake_options, round_trip, storage_error
from core.store.maintenance import maintain

T0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)


def s3_store(world: S3World, prefix: str | None = None, **options: str) -> DeltaStore:
    settings = Settings(
        storage=StorageSettings(
            root=world.root(prefix or f"book-{uuid.uuid4().hex[:8]}"),
            storage_options=world.options(**options),  # type: ignore[arg-type]
        )
    )
    return DeltaStore.from_settings(settings)


def test_the_server_refuses_a_second_conditional_put(s3_world: S3World) -> None:
    """What makes concurrent commits safe, checked on this server: a PUT with
    If-None-Match: * of an existing key fails (412), as on AWS S3, MinIO and R2."""
    client = s3_world.client()
    key = f"probe/{uuid.uuid4().hex}"
    client.put_object(Bucket=s3_world.bucket, Key=key, Body=b"1", IfNoneMatch="*")  # type: ignore[attr-defined]
    with pytest.raises(botocore.exceptions.ClientError, match="PreconditionFailed"):
        client.put_object(Bucket=s3_world.bucket, Key=key, Body=b"2", IfNoneMatch="*")  # type: ignore[attr-defined]


def write_and_read_back(world: S3World, store: DeltaStore, names: list[str]) -> None:
    for name in names:
        spec = REGISTRY[name]
        assert spec.example is not None
        example = spec.example()
        result = store.merge(name, example) if spec.keys else store.append(name, example)
        assert result.rows_inserted == example.height, name
        back = store.read(name).collect()
        assert back.schema == spec.schema, name
        assert back.height == example.height, name
    # A second process (here: a second store object) sees the same tables.
    again = s3_store(world, prefix=store.root.rsplit("/", 1)[1])
    assert all(again.stats(n).rows == store.stats(n).rows for n in names)


def test_tables_of_each_kind_are_created_written_and_read_back_on_s3(s3_world: S3World) -> None:
    """Partitioned with a time key (merge as insert), keyed (merge), append-only."""
    store = s3_store(s3_world)
    assert store.manifest is None  # no atomic rename on S3: see docs/PRODUCTION.md
    write_and_read_back(s3_world, store, ["futures_bars", "fills", "risk_state"])


@pytest.mark.topology  # ~30 s on moto: runs in the topology step of .ci/run
def test_every_table_is_created_written_and_read_back_on_s3(s3_world: S3World) -> None:
    store = s3_store(s3_world)
    write_and_read_back(s3_world, store, list(REGISTRY))


def _bars(worker: int, n: int) -> pl.DataFrame:
    ts = [T0 + timedelta(minutes=i) for i in range(n)]
    return pl.DataFrame(
        {
            "symbol": ["ES"] * n,
            "contract": [f"W{worker}"] * n,
            "ts": ts,
            "open": [100.0] * n,
            "high": [101.0] * n,
            "low": [99.0] * n,
            "close": [100.5] * n,
            "volume": [10] * n,
        }
    ).with_columns(pl.col("ts").dt.cast_time_unit("us"), pl.col("volume").cast(pl.Int64))


def _writer(root: str, options: dict[str, str], worker: int, commits: int) -> None:
    """One process: `commits` single-row commits, merges and appends interleaved."""
    store = DeltaStore(root, options, commit_backoff_s=0.02, commit_retries=30)
    for i in range(commits):
        row = _bars(worker, commits).slice(i, 1)
        store.merge("futures_bars", row)
        store.append("cycle_health", _health(worker, i))


def _health(worker: int, i: int) -> pl.DataFrame:
    example = REGISTRY["cycle_health"].example
    assert example is not None
    return example().with_columns(pl.lit(f"w{worker}-{i}").alias("run_id"))


def test_two_processes_writing_at_once_lose_nothing(s3_world: S3World) -> None:
    store = s3_store(s3_world)
    store.ensure_all()
    commits = 6
    ctx = mp.get_context("spawn")  # the Delta runtime must not be forked
    procs = [
        ctx.Process(target=_writer, args=(store.root, store.storage_options, w, commits))
        for w in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    bars = store.read("futures_bars").collect()
    assert bars.height == 2 * commits
    assert sorted(bars.get_column("contract").unique().to_list()) == ["W0", "W1"]
    health = store.read("cycle_health").collect()
    assert sorted(health.get_column("run_id").to_list()) == sorted(
        f"w{w}-{i}" for w in range(2) for i in range(commits)
    )
    # Every commit is its own version: 2 writers x commits on top of the empty table.
    assert store.stats("futures_bars").version == 2 * commits


def test_maintenance_compacts_vacuums_and_checkpoints_on_s3(s3_world: S3World) -> None:
    store = s3_store(s3_world)
    for day in range(3):
        start = T0 - timedelta(days=3 - day)
        for hour in range(2):
            batch = _bars(0, 5).with_columns(pl.col("ts") + (start + timedelta(hours=hour) - T0))
            store.merge("futures_bars", batch)
    before = store.stats("futures_bars")
    assert before.files >= 6
    report = maintain(store, ["futures_bars"], retention_hours=0, enforce_retention=False,
                      closed_before=date(2026, 3, 2))  # fmt: skip
    row = report.row(0, named=True)
    assert row["error"] is None, row["error"]
    assert row["files_after"] < row["files_before"]
    assert row["files_vacuumed"] >= row["files_compacted"] > 0
    after = store.read("futures_bars").collect()
    assert after.height == 30 and after.select(pl.struct("contract", "ts").n_unique()).item() == 30
    # The checkpoint is on the bucket.
    listed = s3_world.client().list_objects_v2(  # type: ignore[attr-defined]
        Bucket=s3_world.bucket, Prefix=f"{store.root.split('/', 3)[3]}/futures_bars/_delta_log/"
    )
    assert any(o["Key"].endswith(".checkpoint.parquet") for o in listed.get("Contents", []))


def test_round_trip_proves_the_bucket_writable(s3_world: S3World) -> None:
    root = s3_world.root("doctor")
    assert round_trip(root, s3_world.options()) != round_trip(root, s3_world.options())


def test_wrong_credentials_are_one_line_naming_the_fix(s3_world: S3World) -> None:
    root = s3_world.root("doctor")
    with pytest.raises((OSError, DeltaError)) as caught:
        round_trip(root, s3_world.options(aws_secret_access_key="wrong"))
    line = storage_error(root, caught.value)
    assert "\n" not in line
    assert line.startswith(f"storage {root}: the storage credentials were refused;")
    assert "aws_secret_access_key" in line
    with pytest.raises((OSError, DeltaError)) as caught:
        round_trip("s3://no-such-bucket/x", s3_world.options())
    assert "the bucket does not exist" in storage_error("s3://no-such-bucket/x", caught.value)


def test_unreachable_endpoint_is_one_line() -> None:
    from s3_world import free_port

    options = {"aws_endpoint_url": f"http://127.0.0.1:{free_port()}", "aws_allow_http": "true",
               "aws_access_key_id": "k", "aws_secret_access_key": "s", "aws_region": "us-east-1",
               "aws_max_retries": "0", "aws_retry_timeout": "1s"}  # fmt: skip
    with pytest.raises((OSError, DeltaError)) as caught:
        round_trip("s3://v6-book/x", options)
    assert "the storage endpoint cannot be reached" in storage_error("s3://v6-book/x", caught.value)


def test_conditional_put_is_set_for_s3_and_unsafe_options_are_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    assert deltalake_options("s3://b/p", {})["aws_conditional_put"] == "etag"
    assert deltalake_options("/srv/data", {}) == {}
    bad = [
        ('root = "gs://b/p"', "scheme gs:// is not supported"),
        ('root = "s3://b/p"\nstorage_options = { aws_s3_allow_unsafe_rename = "true" }',
         "aws_s3_allow_unsafe_rename = true lets two writers"),
        ('root = "s3://b/p"\nstorage_options = { aws_conditional_put = "none" }',
         'set it to "etag"'),
        ('root = "s3://b/p"\nstorage_options = { aws_s3_locking_provider = "dynamodb" }',
         "the DynamoDB lock is gone"),
    ]  # fmt: skip
    for body, expected in bad:
        path = tmp_path / "v6.toml"  # type: ignore[operator]
        path.write_text(f"[storage]\n{body}\n")
        with pytest.raises(ConfigError, match="storage") as caught:
            load_settings(path)
        assert expected in str(caught.value)


def test_config_check_masks_credentials_but_shows_where(s3_world: S3World) -> None:
    settings = Settings(
        storage=StorageSettings(root=s3_world.root("p"), storage_options=s3_world.options())  # type: ignore[arg-type]
    )
    shown = settings.masked()["storage"]["storage_options"]
    assert shown["aws_endpoint_url"] == s3_world.endpoint
    assert shown["aws_secret_access_key"] == shown["aws_access_key_id"] == "**********"
    assert s3_world.secret not in repr(settings) and s3_world.secret not in str(settings.masked())
