"""A table V6 wrote that is lost, rolled back or missing files is corruption, never "empty":
the manifest beside the tables catches it on open, `repair` restores what Delta still has,
and maintenance refuses to rewrite rows that break the schema."""

from __future__ import annotations

import multiprocessing
import shutil
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable, write_deltalake

from core.store import REGISTRY, DeltaStore, StoreCorrupt
from core.store.integrity import repair, table_health
from core.store.maintenance import maintain
from core.store.manifest import MANIFEST_NAME, Manifest


def strategies(store: DeltaStore, *ids: str) -> None:
    ex = REGISTRY["strategies"].example()
    store.merge("strategies", pl.concat(ex.with_columns(strategy_id=pl.lit(i)) for i in ids))


def latest_commit(root: Path, name: str) -> Path:
    return sorted((root / name / "_delta_log").glob("*.json"))[-1]


def test_a_lost_table_is_corrupt_not_empty(store_root: Path) -> None:
    store = DeltaStore(store_root)
    strategies(store, "a", "b")
    shutil.rmtree(store_root / "strategies" / "_delta_log")
    fresh = DeltaStore(store_root)  # another process: only the manifest remembers
    for call in (
        lambda: fresh.read("strategies").collect(),
        lambda: fresh.exists("strategies"),
        lambda: fresh.ensure("strategies"),
        lambda: strategies(fresh, "c"),
    ):
        with pytest.raises(StoreCorrupt) as err:
            call()
        msg = str(err.value)
        assert "\n" not in msg and err.value.table == "strategies"
        assert "missing" in msg and "last saw version 1" in msg
        assert "v6 store repair strategies" in msg
    assert not DeltaTable.is_deltatable(str(store_root / "strategies"))  # not recreated
    assert [str(p.table) for p in fresh.check_tables()] == ["strategies"]


def test_a_rolled_back_table_is_corrupt(store_root: Path) -> None:
    store = DeltaStore(store_root)
    strategies(store, "a")
    strategies(store, "b")
    latest_commit(store_root, "strategies").unlink()
    with pytest.raises(StoreCorrupt, match="at version 1, but V6 last saw version 2"):
        store.read("strategies")
    assert store.read("legs").collect().is_empty()  # other tables unaffected


def test_tables_from_before_the_manifest_are_adopted(store_root: Path) -> None:
    store = DeltaStore(store_root)
    strategies(store, "a")
    (store_root / MANIFEST_NAME).unlink()
    assert store.read("strategies").collect().height == 1
    assert Manifest(store_root).read() == {"strategies": 1}
    assert store.check_tables() == []


def _append_rows(root: str, worker: int) -> None:
    store = DeltaStore(root)
    for i in range(8):
        strategies(store, f"w{worker}-{i}")
        store.read("strategies").collect()  # concurrent readers never see a "rollback"


def test_concurrent_writers_only_move_versions_forward(store_root: Path) -> None:
    ctx = multiprocessing.get_context("spawn")  # deltalake's runtime panics after fork
    procs = [ctx.Process(target=_append_rows, args=(str(store_root), w)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    version = DeltaTable(str(store_root / "strategies")).version()
    assert Manifest(store_root).read()["strategies"] == version
    assert DeltaStore(store_root).read("strategies").collect().height == 24


def test_manifest_never_goes_backwards(store_root: Path) -> None:
    manifest = Manifest(store_root)
    manifest.advance({"a": 5})
    manifest.advance({"a": 3, "b": 1})
    assert manifest.read() == {"a": 5, "b": 1}
    (store_root / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(StoreCorrupt, match=r"manifest .* is unreadable"):
        DeltaStore(store_root).read("strategies")


def test_repair_restores_the_version_v6_wrote(store_root: Path) -> None:
    """Someone else's commit references a file that is gone: V6's own version is whole."""
    store = DeltaStore(store_root)
    strategies(store, "a")
    before = store.read("strategies").collect()
    uri = str(store_root / "strategies")
    extra = REGISTRY["strategies"].example().with_columns(strategy_id=pl.lit("x"))
    write_deltalake(uri, extra, mode="append")  # not through V6: not in the manifest
    added = set(DeltaTable(uri).file_uris()) - set(DeltaTable(uri, version=1).file_uris())
    Path(added.pop()).unlink()

    health = table_health(store, "strategies")
    assert not health.ok and "missing data file" in str(health.problem)
    assert "restored to version 1" in repair(store, "strategies")
    assert table_health(store, "strategies").ok
    assert store.read("strategies").collect().equals(before)
    assert "nothing to repair" in repair(store, "strategies")


def test_repair_says_it_cannot_bring_back_a_lost_commit(store_root: Path) -> None:
    store = DeltaStore(store_root)
    strategies(store, "a")
    strategies(store, "b")
    latest_commit(store_root, "strategies").unlink()
    with pytest.raises(StoreCorrupt, match=r"cannot repair strategies: .* whose commit is gone"):
        repair(store, "strategies")
    with pytest.raises(StoreCorrupt):
        store.read("strategies")  # still refused: nothing was changed
    assert "loss accepted" in repair(store, "strategies", accept_loss=True)
    assert store.read("strategies").collect().get_column("strategy_id").to_list() == ["a"]


def test_accepting_a_lost_table_lets_it_be_recreated(store_root: Path) -> None:
    store = DeltaStore(store_root)
    strategies(store, "a")
    shutil.rmtree(store_root / "strategies")
    with pytest.raises(StoreCorrupt, match="the table is missing"):
        repair(store, "strategies")
    assert "recreated empty" in repair(store, "strategies", accept_loss=True)
    assert store.read("strategies").collect().is_empty()
    strategies(store, "b")
    assert store.check_tables() == []


def test_maintenance_refuses_rows_that_break_the_schema(store_root: Path) -> None:
    store = DeltaStore(store_root)
    store.merge("orders", REGISTRY["orders"].example())
    bad = (
        REGISTRY["orders"]
        .example()
        .with_columns(order_ref=pl.lit("v6:bad"), quantity=pl.lit(0, dtype=pl.Int64))
    )
    write_deltalake(str(store_root / "orders"), bad, mode="append")  # around V6's checks
    version = DeltaTable(str(store_root / "orders")).version()

    result = maintain(store, ["orders"], retention_hours=168).row(0, named=True)
    assert result["error"] is not None
    assert result["error"].startswith("SchemaViolation") and "quantity" in result["error"]
    assert DeltaTable(str(store_root / "orders")).version() == version  # not rewritten
