"""`DeltaStore.cached_reads`: a table is read once per version inside the block, never
stale (own writes, another writer's commits) and never hiding a lost or rolled-back table."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest

from core.store import REGISTRY, DeltaStore, StoreCorrupt


def add(store: DeltaStore, *ids: str) -> None:
    ex = REGISTRY["strategies"].example()
    store.merge("strategies", pl.concat(ex.with_columns(strategy_id=pl.lit(i)) for i in ids))


def ids(store: DeltaStore, where: pl.Expr | None = None) -> list[str]:
    frame = store.read("strategies", where=where, columns=["strategy_id"]).collect()
    return sorted(frame["strategy_id"].to_list())


def test_unchanged_tables_are_read_once_and_filtered_in_memory(store_root: Path) -> None:
    store = DeltaStore(store_root)
    add(store, "a", "b")
    with store.cached_reads(["strategies"]) as cache:
        assert cache is not None
        assert ids(store) == ["a", "b"]
        assert ids(store, pl.col("strategy_id") == "b") == ["b"]
        assert store.read("legs").collect().is_empty()  # not listed: read as ever
        assert (cache.misses, cache.hits) == (1, 1)
    assert store._read_cache is None


def test_own_and_other_writers_commits_are_seen(store_root: Path) -> None:
    store, other = DeltaStore(store_root), DeltaStore(store_root)
    add(store, "a")
    with store.cached_reads(["strategies"]) as cache:
        assert cache is not None
        assert ids(store) == ["a"]
        add(store, "b")
        assert ids(store) == ["a", "b"]
        add(other, "c")  # another process's commit: the next version's log file exists
        assert ids(store) == ["a", "b", "c"]
        assert (cache.misses, cache.hits) == (2, 1)  # own insert: no re-read


def test_a_lost_or_rolled_back_table_still_raises(store_root: Path) -> None:
    store = DeltaStore(store_root)
    add(store, "a")
    add(store, "b")
    with store.cached_reads(["strategies"]):
        assert ids(store) == ["a", "b"]
        log = store_root / "strategies" / "_delta_log"
        sorted(log.glob("*.json"))[-1].unlink()  # rolled back to version 1
        with pytest.raises(StoreCorrupt, match="V6 last saw version 2"):
            ids(store)
        shutil.rmtree(log)
        with pytest.raises(StoreCorrupt, match="missing"):
            ids(store)


def test_a_block_inside_a_block_shares_the_outer_cache(store_root: Path) -> None:
    store = DeltaStore(store_root)
    add(store, "a")
    with store.cached_reads(["strategies"]) as outer:
        with store.cached_reads(["legs"]) as inner:
            assert inner is outer
        assert store._read_cache is outer


def test_own_inserts_extend_the_cached_frame_and_updates_drop_it(store_root: Path) -> None:
    store = DeltaStore(store_root)
    add(store, "a")
    with store.cached_reads(["strategies"]) as cache:
        assert cache is not None
        assert ids(store) == ["a"]
        add(store, "b")  # insert path on top of the cached version: no re-read
        add(store, "b")  # a replay: nothing committed, still current
        assert ids(store) == ["a", "b"]
        assert (cache.misses, cache.hits) == (1, 1)
        changed = store.read("strategies").filter(pl.col("strategy_id") == "a").collect()
        store.merge("strategies", changed.with_columns(note=pl.lit("changed")))  # a MERGE
        assert "strategies" not in cache.frames
        fresh = store.read("strategies").sort("strategy_id").collect()
        assert fresh["note"].to_list()[0] == "changed" and fresh.height == 2
        assert cache.misses == 2
    assert fresh.equals(store.read("strategies").sort("strategy_id").collect())
