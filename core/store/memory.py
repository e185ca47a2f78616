"""The store's contract without the disk: V6's tables held as polars frames in memory.

A backtest's scratch book lives here. Every simulated cycle writes ~10 small batches and
reads the book back many times; against Delta each of those is a table open, a commit or a
DataFusion merge plan (the bulk of a simulated cycle's wall time). Nothing of that is
needed for a book that is thrown away after the run, but its guarantees are: a backtest
must never accept a batch live would refuse, nor merge differently. So this store:

- validates every batch with the same `prepare` as `DeltaStore` (exact schema, keys,
  pandera values): a batch live would reject is rejected here, with the same error;
- or, with `defer_value_checks=True`, checks schema and keys at the write as above but
  runs the pandera value checks in bulk, over every batch written since the last call,
  in `validate_pending()`. pandera costs ~10 ms a batch whatever its size (one polars
  collect per check), a third of a simulated cycle; a backtest validates once a session
  and before exporting, so a batch live would refuse still fails the run, with the same
  problems, before any of its results leave the store. This relies on V6's checks being
  row-wise (each judges a row, never the batch as a whole), as every registered one is;
- keeps `DeltaStore`'s write semantics: `merge` is an idempotent upsert on the table's keys
  that updates only rows that really changed (null-safe) and commits nothing for a replay,
  `update=False` inserts new keys only, `append` with `txn=(app_id, seq)` is a no-op on a
  replay; an empty batch creates the table and writes nothing;
- answers reads with a lazy frame pinned at call time (frames are immutable; a write
  replaces the table's frame, never mutates it).

Row order: updated rows stay where they were, new rows go to the end (Delta guarantees no
order; nothing in V6 may depend on one).

Not thread-safe, no cross-process visibility: one process, one run.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import polars as pl

from core.store.delta import TableStats, WriteResult
from core.store.errors import SchemaViolation, StoreCorrupt
from core.store.naming import TableNaming, narrowed
from core.store.registry import REGISTRY
from core.store.spec import TableSpec
from core.store.validation import check_values, prepare

_ROW = "__v6_row"  # a row's position, to apply updates in place
_NEW = "__new"  # suffix of a batch value next to the stored one
_ids = itertools.count(1)
MAX_CHUNKS = 32  # per column; more and a write compacts the table into one


@dataclass
class _Table:
    frame: pl.DataFrame
    version: int = 0  # like Delta: creation is version 0, every commit adds one
    txns: dict[str, int] = field(default_factory=dict)  # app_id -> last committed seq
    log: list[dict[str, Any]] = field(default_factory=list)  # oldest first


class MemoryStore(TableNaming):
    """An in-memory store with `DeltaStore`'s API and semantics (see the module doc).

    `root` only names the store (`uri` = `root/name`): it is a `memory://` URI, so code that
    looks for files under a local store root (the breaker, the slot pool) knows there are
    none."""

    def __init__(
        self,
        root: str | None = None,
        *,
        registry: Mapping[str, TableSpec] = REGISTRY,
        defer_value_checks: bool = False,
    ) -> None:
        self.root = (root or f"memory://v6-{next(_ids)}").rstrip("/")
        if "://" not in self.root:
            raise ValueError(
                f"MemoryStore root {self.root!r} looks like a path; use a memory:// URI "
                "(nothing is written to disk) or DeltaStore for a directory"
            )
        self.registry = registry
        self.defer_value_checks = defer_value_checks
        self._tables: dict[str, _Table] = {}
        self._pending: dict[str, list[pl.DataFrame]] = {}

    @property
    def tables(self) -> dict[str, pl.DataFrame]:
        """The current frame of every existing table (a snapshot, for tests and exports)."""
        return {name: t.frame for name, t in self._tables.items()}

    # -- lifecycle (spec/uri: TableNaming) ------------------------------------------
    def exists(self, name: str) -> bool:
        return name in self._tables

    def ensure(self, name: str) -> None:
        spec = self.spec(name)
        if name not in self._tables:
            self._tables[name] = _Table(spec.empty(), log=[_entry(0, "CREATE TABLE")])

    def ensure_all(self) -> list[str]:
        for name in self.registry:
            self.ensure(name)
        return list(self.registry)

    def check_tables(self) -> list[StoreCorrupt]:
        """Nothing to check: memory cannot lose a table behind the store's back."""
        return []

    def _table(self, name: str) -> _Table:
        self.ensure(name)
        return self._tables[name]

    def _commit(self, table: _Table, frame: pl.DataFrame, operation: str) -> int:
        # Each append adds a chunk; a year's backtest would leave thousands per table, and
        # every read of the book would pay for them. Compact, like Delta's nightly optimize.
        if max(frame.n_chunks("all"), default=0) > MAX_CHUNKS:
            frame = frame.rechunk()
        table.frame = frame
        table.version += 1
        table.log.append(_entry(table.version, operation))
        return table.version

    # -- validation ----------------------------------------------------------------------
    def _prepare(self, spec: TableSpec, batch: pl.DataFrame) -> pl.DataFrame:
        if not self.defer_value_checks:
            return prepare(spec, batch)
        data = prepare(spec, batch, values=False)
        if not data.is_empty():
            self._pending.setdefault(spec.name, []).append(data)
        return data

    @property
    def pending_rows(self) -> int:
        """Rows written whose value checks have not run yet (deferred mode)."""
        return sum(b.height for batches in self._pending.values() for b in batches)

    def validate_pending(self) -> int:
        """Run the deferred pandera checks over every batch written since the last call, as
        written (each version of an updated row included). Returns the rows checked.

        Raises SchemaViolation, naming the table, the check and sample rows, if any batch
        fails: the store then holds data live would have refused and must be discarded
        (its pending batches stay pending, so every later call raises too)."""
        checked = 0
        for name in list(self._pending):
            batches = self._pending[name]
            frame = pl.concat(batches)
            try:
                check_values(self.spec(name), frame)
            except SchemaViolation as exc:
                note = (
                    f"found by the deferred value checks over {len(batches)} batch(es), "
                    f"{frame.height} row(s), written since the last validate_pending()"
                )
                raise SchemaViolation(exc.table, [*exc.problems, note]) from None
            del self._pending[name]
            checked += frame.height
        return checked

    # -- writes --------------------------------------------------------------------------
    def append(
        self, name: str, batch: pl.DataFrame, *, txn: tuple[str, int] | None = None
    ) -> WriteResult:
        """Validate and append; with `txn=(app_id, seq)` a replay of the same seq is a no-op."""
        data = self._prepare(self.spec(name), batch)
        table = self._table(name)
        if data.is_empty():
            return WriteResult(name, None, 0)
        if txn is not None:
            done = table.txns.get(txn[0])
            if done is not None and done >= txn[1]:
                return WriteResult(name, None, 0, skipped=True)
            table.txns[txn[0]] = txn[1]
        version = self._commit(table, pl.concat([table.frame, data]), "WRITE")
        return WriteResult(name, version, data.height, method="append")

    def merge(self, name: str, batch: pl.DataFrame, *, update: bool = True) -> WriteResult:
        """Idempotent upsert on the table's keys (`update=False`: insert new keys only).

        Only rows that differ from their batch row (null-safely, like Delta's IS DISTINCT
        FROM) are updated, in place; a replayed batch commits nothing."""
        spec = self.spec(name)
        if not spec.keys:
            raise ValueError(f"table {name} declares no keys; use append() instead of merge()")
        data = self._prepare(spec, batch)
        table = self._table(name)
        if data.is_empty():
            return WriteResult(name, None, 0)
        keys = list(spec.keys)
        stored = table.frame
        new = data.join(stored.select(keys), on=keys, how="anti", maintain_order="left")
        values = [c for c in stored.columns if c not in spec.keys]
        changed = self._changed(stored, data, keys, values) if update and values else None
        updated = 0 if changed is None else changed.height
        if new.is_empty() and updated == 0:
            return WriteResult(name, None, 0, method="none")
        frame = stored
        if changed is not None and updated:
            frame = _update_rows(frame, changed, values)
        if not new.is_empty():
            frame = pl.concat([frame, new])
        version = self._commit(table, frame, "MERGE")
        method = "merge" if updated else "insert"
        return WriteResult(name, version, new.height, updated, method=method)

    @staticmethod
    def _changed(
        stored: pl.DataFrame, data: pl.DataFrame, keys: list[str], values: list[str]
    ) -> pl.DataFrame:
        """(stored row position, batch values) of every stored row that differs from its
        batch row; a key stored twice (a blind append) has each of its rows updated."""
        twins = (
            stored.select(*keys, *values)
            .with_row_index(_ROW)
            .join(data, on=keys, how="inner", suffix=_NEW)
        )
        differs = pl.any_horizontal([pl.col(f"{c}{_NEW}").ne_missing(pl.col(c)) for c in values])
        return twins.filter(differs).select(_ROW, *(pl.col(f"{c}{_NEW}").alias(c) for c in values))

    # -- reads ---------------------------------------------------------------------------
    def read(
        self,
        name: str,
        where: pl.Expr | None = None,
        columns: list[str] | None = None,
    ) -> pl.LazyFrame:
        """A lazy frame over the table as it is now (later writes do not change it)."""
        spec = self.spec(name)
        table = self._tables.get(name)
        return narrowed((spec.empty() if table is None else table.frame).lazy(), where, columns)

    @contextmanager
    def cached_reads(self, tables: Iterable[str]) -> Iterator[None]:
        """`DeltaStore.cached_reads`' counterpart: reads here are already from memory."""
        yield None

    def history(self, name: str, limit: int | None = None) -> list[dict[str, Any]]:
        """Commits, newest first (like `DeltaTable.history`)."""
        table = self._tables.get(name)
        if table is None:
            return []
        out = table.log[::-1]
        return out if limit is None else out[:limit]

    def stats(self, name: str) -> TableStats:
        table = self._tables.get(name)
        if table is None:
            return TableStats(name, -1, 0, 0, 0)
        rows = table.frame.height
        size = int(table.frame.estimated_size()) if rows else 0
        return TableStats(name, table.version, rows, 1 if rows else 0, size)


def _update_rows(frame: pl.DataFrame, changed: pl.DataFrame, values: list[str]) -> pl.DataFrame:
    """`frame` with the value columns of the rows at `changed[_ROW]` replaced, in place."""
    hit = f"{_ROW}_hit"
    patches = changed.with_columns(pl.lit(True).alias(hit))
    return (
        frame.with_row_index(_ROW)
        .join(patches, on=_ROW, how="left", suffix=_NEW, maintain_order="left")
        .with_columns(
            pl.when(pl.col(hit).is_not_null())
            .then(pl.col(f"{c}{_NEW}"))
            .otherwise(pl.col(c))
            .alias(c)
            for c in values
        )
        .select(frame.columns)
    )


def _entry(version: int, operation: str) -> dict[str, Any]:
    return {"version": version, "operation": operation, "timestamp": datetime.now(UTC)}


__all__ = ["MemoryStore"]
