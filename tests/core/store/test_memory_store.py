"""MemoryStore keeps DeltaStore's contract: the same operations on both give the same results,
the same tables and the same refusals (it is what a backtest's scratch book runs on)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from core.domain.timezones import UTC_US
from core.store import REGISTRY, DeltaStore, SchemaViolation, UnknownTableError, WriteResult
from core.store.memory import MAX_CHUNKS, MemoryStore

T0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
Store = DeltaStore | MemoryStore
Op = Callable[[Store], Any]


def bars(n: int, start: datetime = T0, shift: float = 0.0) -> pl.DataFrame:
    ts = [start + timedelta(minutes=i) for i in range(n)]
    return pl.DataFrame(
        {
            "symbol": ["ES"] * n,
            "contract": ["ESM6"] * n,
            "ts": ts,
            "open": [100.0 + i + shift for i in range(n)],
            "high": [101.0 + i + shift for i in range(n)],
            "low": [99.0 + i + shift for i in range(n)],
            "close": [100.5 + i + shift for i in range(n)],
            "volume": pl.Series([10] * n, dtype=pl.Int64),
        }
    ).with_columns(pl.col("ts").cast(UTC_US))


def orders(refs: list[str], **values: list[Any]) -> pl.DataFrame:
    """Rows of `orders` (a table without a time key: merged by a Delta MERGE plan)."""
    base = REGISTRY["orders"].example()
    frame = pl.concat([base] * len(refs)).with_columns(order_ref=pl.Series(refs))
    return frame.with_columns(
        pl.Series(col, vals, dtype=frame.schema[col]) for col, vals in values.items()
    )


def fill(exec_id: str, price: float) -> pl.DataFrame:
    return REGISTRY["fills"].example().with_columns(exec_id=pl.lit(exec_id), price=pl.lit(price))


def outcome(result: object) -> object:
    """What a write result must agree on (the `method` names each store's own path)."""
    if isinstance(result, WriteResult):
        return (result.table, result.version, result.rows_inserted, result.rows_updated,
                result.skipped)  # fmt: skip
    return result


def run(store: Store, op: Op) -> object:
    try:
        return ("ok", outcome(op(store)))
    except SchemaViolation as exc:
        return ("SchemaViolation", exc.table, exc.problems)
    except (ValueError, KeyError) as exc:
        return (type(exc).__name__, str(exc))


def table(store: Store, name: str) -> pl.DataFrame:
    frame = store.read(name).collect()
    keys = list(store.spec(name).keys)
    return frame.sort(keys or frame.columns, maintain_order=True)


SCENARIOS: dict[str, tuple[list[str], list[Op]]] = {
    "range-key merges: insert, replay, update, insert-only, mixed": (
        ["futures_bars"],
        [
            lambda s: s.merge("futures_bars", bars(10)),
            lambda s: s.merge("futures_bars", bars(10)),  # replay: commits nothing
            lambda s: s.merge("futures_bars", bars(3, shift=0.25)),  # 3 changed
            lambda s: s.merge("futures_bars", bars(12, shift=0.5), update=False),  # 2 new only
            lambda s: s.merge("futures_bars", bars(14, shift=0.5)),  # 12 changed, 2 new
            lambda s: s.merge("futures_bars", bars(5, T0 + timedelta(days=1))),  # new partition
        ],
    ),
    "keyed merges without a time key, null-safe change detection": (
        ["orders"],
        [
            lambda s: s.merge("orders", orders(["a", "b", "c"], avg_fill_price=[None, 1.0, 2.0])),
            lambda s: s.merge("orders", orders(["a", "b", "c"], avg_fill_price=[None, 1.0, 2.0])),
            lambda s: s.merge("orders", orders(["a", "b"], avg_fill_price=[1.5, None])),
            lambda s: s.merge("orders", orders(["b", "d"], message=["x", "y"]), update=False),
            lambda s: s.merge("orders", orders(["c", "e"], status=["CANCELLED", "PENDING"])),
        ],
    ),
    "appends: txn replays are no-ops, a blind append may repeat a key, merge updates both": (
        ["fills"],
        [
            lambda s: s.append("fills", fill("e1", 1.0), txn=("app", 1)),
            lambda s: s.append("fills", fill("e1", 1.0), txn=("app", 1)),
            lambda s: s.append("fills", fill("e1", 1.0), txn=("app", 0)),
            lambda s: s.append("fills", fill("e1", 1.0), txn=("app", 2)),
            lambda s: s.append("fills", fill("e2", 3.0)),
            lambda s: s.merge("fills", fill("e1", 1.1)),
            lambda s: s.merge("fills", fill("e1", 1.1)),
        ],
    ),
    "empty batches create the table and write nothing": (
        ["orders", "fills", "cycle_health"],
        [
            lambda s: s.merge("orders", REGISTRY["orders"].empty()),
            lambda s: s.append("fills", REGISTRY["fills"].empty(), txn=("app", 1)),
            lambda s: s.append("fills", fill("e1", 1.0), txn=("app", 1)),  # seq 1 was not used
            lambda s: s.exists("cycle_health"),
            lambda s: s.exists("orders"),
        ],
    ),
    "refusals write nothing and say the same thing": (
        ["orders", "fills", "futures_bars"],
        [
            lambda s: s.merge("orders", orders(["a"])),
            lambda s: s.merge("orders", orders(["a"]).with_columns(pl.col("quantity") * 0)),
            lambda s: s.merge(
                "orders", orders(["a"]).with_columns(pl.col("filled").cast(pl.Int32))
            ),
            lambda s: s.merge("orders", orders(["z", "z"])),
            lambda s: s.merge("orders", orders(["a"]).with_columns(extra=pl.lit(1))),
            lambda s: s.append("fills", fill("", 1.0)),
            lambda s: s.merge("futures_bars", bars(2).with_columns(low=pl.lit(500.0))),
            lambda s: s.append("nope", orders(["a"])),
        ],
    ),
    "unknown tables are named": (
        ["orders"],
        [lambda s: s.merge("no_such_table", orders(["a"])), lambda s: s.read("no_such_table")],
    ),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_same_operations_same_results_on_both_stores(scenario: str, store_root: Path) -> None:
    names, ops = SCENARIOS[scenario]
    delta, memory = DeltaStore(store_root), MemoryStore()
    for i, op in enumerate(ops):
        assert run(memory, op) == run(delta, op), f"{scenario}: operation {i} differs"
        for name in names:
            assert memory.exists(name) == delta.exists(name), f"{name} after operation {i}"
            assert table(memory, name).equals(table(delta, name)), f"{name} after operation {i}"
            assert memory.stats(name).rows == delta.stats(name).rows
            assert memory.stats(name).version == delta.stats(name).version


def test_every_registered_table_round_trips_its_example_like_delta(store_root: Path) -> None:
    delta, memory = DeltaStore(store_root), MemoryStore()
    for name, spec in REGISTRY.items():
        assert spec.example is not None
        for store in (delta, memory):
            store.merge(name, spec.example()) if spec.keys else store.append(name, spec.example())
        assert table(memory, name).equals(table(delta, name)), name


def test_a_keyless_table_appends_like_delta_and_refuses_merges(store_root: Path) -> None:
    spec = replace(REGISTRY["orders"], name="order_log", keys=())
    registry = {"order_log": spec}
    delta, memory = DeltaStore(store_root, registry=registry), MemoryStore(registry=registry)
    ops: list[Op] = [
        lambda s: s.append("order_log", orders(["a", "a"])),
        lambda s: s.append("order_log", orders(["a"])),
        lambda s: s.merge("order_log", orders(["b"])),
    ]
    for op in ops:
        assert run(memory, op) == run(delta, op)
    assert table(memory, "order_log").equals(table(delta, "order_log"))
    assert table(memory, "order_log").height == 3


def test_reads_are_pinned_when_called_and_filter_like_delta() -> None:
    store = MemoryStore()
    store.merge("futures_bars", bars(5))
    before = store.read("futures_bars", where=pl.col("ts") >= T0 + timedelta(minutes=3))
    store.merge("futures_bars", bars(8, shift=1.0))
    assert before.collect()["open"].to_list() == [103.0, 104.0]
    assert store.read("futures_bars", columns=["open"]).collect()["open"].to_list() == [
        101.0 + i for i in range(8)
    ]
    assert store.read("orders").collect().schema == REGISTRY["orders"].schema  # absent: empty


def test_updates_stay_in_place_and_inserts_go_last() -> None:
    store = MemoryStore()
    store.merge("orders", orders(["c", "a", "b"]))
    store.merge("orders", orders(["a", "d"], status=["CANCELLED", "PENDING"]))
    frame = store.read("orders").collect()
    assert frame["order_ref"].to_list() == ["c", "a", "b", "d"]
    assert frame["status"].to_list() == ["FILLED", "CANCELLED", "FILLED", "PENDING"]


def test_names_tables_like_delta_but_never_a_path() -> None:
    store = MemoryStore("memory://bt-1")
    assert store.uri("orders") == "memory://bt-1/orders"
    with pytest.raises(UnknownTableError, match="unknown table 'nope'"):
        store.uri("nope")
    with pytest.raises(ValueError, match="memory:// URI"):
        MemoryStore("/tmp/somewhere")
    assert MemoryStore().root != MemoryStore().root  # each store is its own world
    store.ensure_all()
    assert all(store.exists(name) for name in REGISTRY)
    assert [h["version"] for h in store.history("orders")] == [0]


def test_offers_every_public_method_of_delta_store_with_the_same_signature() -> None:
    """The backtest hands a MemoryStore to code typed on DeltaStore: nothing it may call
    can be missing or take other arguments."""
    public = [
        n
        for n, f in inspect.getmembers(DeltaStore, inspect.isfunction)
        if not n.startswith("_") and n != "from_settings"
    ]
    for name in public:
        mine = getattr(MemoryStore, name, None)
        assert mine is not None, f"MemoryStore lacks {name}"
        want = inspect.signature(getattr(DeltaStore, name)).parameters
        have = inspect.signature(mine).parameters
        assert list(have) == list(want), name
        assert [p.kind for p in have.values()] == [p.kind for p in want.values()], name


def test_deferred_value_checks_find_what_live_refuses_before_it_counts() -> None:
    """Deferred mode: schema and keys are still checked at the write; pandera's value
    checks run over every batch since the last call, each version of a row included."""
    store = MemoryStore(defer_value_checks=True)
    with pytest.raises(SchemaViolation, match="dtype Int32"):  # schema: at the write
        store.merge("orders", orders(["a"]).with_columns(pl.col("filled").cast(pl.Int32)))
    store.merge("orders", orders(["a", "b"]))
    store.merge("orders", orders(["a"], quantity=[0]))  # live refuses: quantity > 0
    store.merge("orders", orders(["a"], quantity=[2]))  # ... even once overwritten
    assert store.pending_rows == 4
    with pytest.raises(SchemaViolation) as refused:
        store.validate_pending()
    assert refused.value.table == "orders"
    assert "quantity" in str(refused.value) and "deferred value checks over 3 batch" in str(
        refused.value
    )
    with pytest.raises(SchemaViolation):  # still pending: the store stays condemned
        store.validate_pending()


def test_deferred_value_checks_pass_valid_batches_and_start_afresh() -> None:
    store = MemoryStore(defer_value_checks=True)
    store.merge("orders", orders(["a", "b"]))
    store.append("fills", fill("e1", 1.0), txn=("app", 1))
    store.append("fills", fill("e1", 1.0), txn=("app", 1))  # skipped, still checked
    assert store.validate_pending() == 4
    assert (store.pending_rows, store.validate_pending()) == (0, 0)
    assert store.read("fills").collect().height == 1


def test_eager_by_default_like_delta() -> None:
    store = MemoryStore()
    with pytest.raises(SchemaViolation, match="quantity"):
        store.merge("orders", orders(["a"], quantity=[0]))
    assert not store.read("orders").collect().height and store.pending_rows == 0


def test_many_appends_stay_compact_and_read_the_same() -> None:
    """Appends are compacted once a column holds more than MAX_CHUNKS chunks."""
    store = MemoryStore()
    row = store.spec("cycle_health").example()
    assert row is not None
    rows = [row.with_columns(run_id=pl.lit(f"r{i}")) for i in range(3 * MAX_CHUNKS)]
    for r in rows:
        store.append("cycle_health", r)
    frame = store.tables["cycle_health"]
    assert max(frame.n_chunks("all")) <= MAX_CHUNKS
    assert frame.get_column("run_id").to_list() == [f"r{i}" for i in range(3 * MAX_CHUNKS)]
