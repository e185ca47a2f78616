"""Delta Lake access for every V6 table: validated appends, idempotent merges, lazy reads.

All writes go through here so the guarantees hold everywhere: a batch is validated
before anything is written; a commit that conflicts with a concurrent writer is
re-run against a fresh snapshot (safe because appends either commit whole or not at
all, and merges are idempotent on their keys); nothing is silently dropped.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import polars as pl
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError, TableNotFoundError

from v6.core.config import Settings
from v6.core.store.errors import CommitConflictError, UnknownTableError
from v6.core.store.registry import REGISTRY
from v6.core.store.spec import TableSpec
from v6.core.store.validation import prepare

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class WriteResult:
    table: str
    version: int | None  # None when nothing was committed (empty batch or replayed txn)
    rows_inserted: int
    rows_updated: int = 0
    skipped: bool = False  # an idempotent append whose txn was already committed


@dataclass(frozen=True)
class TableStats:
    name: str
    version: int
    rows: int
    files: int
    size_bytes: int


class DeltaStore:
    """The Delta tables under one root (a local directory or an `s3://` URI)."""

    def __init__(
        self,
        root: str | Path,
        storage_options: Mapping[str, str] | None = None,
        *,
        registry: Mapping[str, TableSpec] = REGISTRY,
        commit_retries: int = 8,
        commit_backoff_s: float = 0.05,
    ) -> None:
        self.root = str(root).rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.registry = registry
        self.commit_retries = commit_retries
        self.commit_backoff_s = commit_backoff_s
        self._remote = "://" in self.root
        if not self._remote:
            Path(self.root).mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_settings(cls, settings: Settings) -> DeltaStore:
        st = settings.storage
        return cls(
            st.root,
            st.plain_storage_options(),
            commit_retries=st.commit_retries,
            commit_backoff_s=st.commit_backoff_s,
        )

    # -- naming ------------------------------------------------------------------------
    def spec(self, name: str) -> TableSpec:
        try:
            return self.registry[name]
        except KeyError:
            known = ", ".join(sorted(self.registry))
            raise UnknownTableError(f"unknown table '{name}'; known tables: {known}") from None

    def uri(self, name: str) -> str:
        self.spec(name)
        return f"{self.root}/{name}"

    def _options(self) -> dict[str, str] | None:
        return self.storage_options or None

    def _table(self, name: str) -> DeltaTable:
        """A fresh snapshot; never reuse one across writes (stale snapshots conflict)."""
        return DeltaTable(self.uri(name), storage_options=self._options())

    # -- lifecycle -----------------------------------------------------------------------
    def exists(self, name: str) -> bool:
        return DeltaTable.is_deltatable(self.uri(name), storage_options=self._options())

    def ensure(self, name: str) -> None:
        """Create the table empty with its schema if it does not exist (safe to race)."""
        spec = self.spec(name)
        if self.exists(name):
            return
        write_deltalake(
            self.uri(name),
            spec.empty(),
            mode="ignore",
            partition_by=list(spec.partition_by) or None,
            storage_options=self._options(),
            description=spec.description,
        )

    def ensure_all(self) -> list[str]:
        for name in self.registry:
            self.ensure(name)
        return list(self.registry)

    # -- writes --------------------------------------------------------------------------
    def append(
        self, name: str, batch: pl.DataFrame, *, txn: tuple[str, int] | None = None
    ) -> WriteResult:
        """Validate and append. With `txn=(app_id, seq)` a replay of the same seq is a no-op,
        which makes a blind append safe to retry after a crash."""
        spec = self.spec(name)
        data = prepare(spec, batch)
        self.ensure(name)
        if data.is_empty():
            return WriteResult(name, None, 0)
        props = None
        if txn is not None:
            app_id, seq = txn
            props = CommitProperties(app_transactions=[Transaction(app_id=app_id, version=seq)])

        def attempt() -> WriteResult:
            if txn is not None:
                done = self._table(name).transaction_version(txn[0])
                if done is not None and done >= txn[1]:
                    log.info("append to %s skipped: txn %s already committed", name, txn)
                    return WriteResult(name, None, 0, skipped=True)
            write_deltalake(
                self.uri(name),
                data,
                mode="append",
                partition_by=list(spec.partition_by) or None,
                storage_options=self._options(),
                commit_properties=props,
            )
            return WriteResult(name, self._table(name).version(), data.height)

        return self._with_retries(name, attempt)

    def merge(self, name: str, batch: pl.DataFrame, *, update: bool = True) -> WriteResult:
        """Idempotent upsert on the table's keys: the same batch twice leaves the same table.

        `update=False` inserts only rows whose key is new (existing rows are never touched),
        which is how facts like fills are recorded exactly once.
        """
        spec = self.spec(name)
        if not spec.keys:
            raise ValueError(f"table {name} declares no keys; use append() instead of merge()")
        data = prepare(spec, batch)
        self.ensure(name)
        if data.is_empty():
            return WriteResult(name, None, 0)
        predicate = self._merge_predicate(spec, data)
        values = [c for c in spec.schema.names() if c not in spec.keys]
        changed = " OR ".join(f"(t.{c} IS DISTINCT FROM s.{c})" for c in values) or "false"

        def attempt() -> WriteResult:
            merger = self._table(name).merge(
                data, predicate=predicate, source_alias="s", target_alias="t"
            )
            if update:
                # Update only rows that really changed: a replayed batch commits nothing.
                merger = merger.when_matched_update_all(predicate=changed)
            metrics = merger.when_not_matched_insert_all().execute()
            inserted = int(metrics.get("num_target_rows_inserted", 0))
            updated = int(metrics.get("num_target_rows_updated", 0))
            version = self._table(name).version() if inserted or updated else None
            return WriteResult(name, version, inserted, updated)

        return self._with_retries(name, attempt)

    @staticmethod
    def _merge_predicate(spec: TableSpec, data: pl.DataFrame) -> str:
        """Key equality, plus the batch's partition values so untouched partitions are pruned."""
        parts = [f"t.{k} = s.{k}" for k in spec.keys]
        for col in spec.partition_by:
            values = data.get_column(col).unique().sort().to_list()
            if values and all(isinstance(v, date) for v in values):
                listed = ", ".join(f"'{v.isoformat()}'" for v in values)
                parts.append(f"t.{col} IN ({listed})")
        return " AND ".join(parts)

    def _with_retries(self, name: str, attempt: Callable[[], T]) -> T:
        delay = self.commit_backoff_s
        for n in range(self.commit_retries + 1):
            try:
                return attempt()
            except CommitFailedError as exc:
                if n == self.commit_retries:
                    raise CommitConflictError(
                        f"table {name}: commit still conflicting after {n + 1} attempts; the batch "
                        f"was not written. Last error: {exc}"
                    ) from exc
                sleep_for = delay * (1 + random.random())
                log.warning(
                    "table %s: commit conflict (attempt %d), retrying in %.3fs",
                    name,
                    n + 1,
                    sleep_for,
                )
                time.sleep(sleep_for)
                delay *= 2
        raise AssertionError("unreachable")

    # -- reads ---------------------------------------------------------------------------
    def read(
        self,
        name: str,
        where: pl.Expr | None = None,
        columns: list[str] | None = None,
    ) -> pl.LazyFrame:
        """A lazy scan; filters on partition columns prune files before any is opened."""
        spec = self.spec(name)
        if not self.exists(name):
            lf = spec.empty().lazy()
        else:
            lf = pl.scan_delta(self.uri(name), storage_options=self._options())
        if where is not None:
            lf = lf.filter(where)
        if columns is not None:
            lf = lf.select(columns)
        return lf

    def history(self, name: str, limit: int | None = None) -> list[dict[str, Any]]:
        try:
            return self._table(name).history(limit)
        except TableNotFoundError:
            return []

    def stats(self, name: str) -> TableStats:
        if not self.exists(name):
            return TableStats(name, -1, 0, 0, 0)
        table = self._table(name)
        actions = pl.DataFrame(table.get_add_actions(flatten=True))
        if actions.is_empty():
            return TableStats(name, table.version(), 0, 0, 0)
        return TableStats(
            name=name,
            version=table.version(),
            rows=int(actions.get_column("num_records").sum()),
            files=actions.height,
            size_bytes=int(actions.get_column("size_bytes").sum()),
        )
