"""Delta Lake access for every V6 table: validated appends, idempotent merges, lazy reads.

All writes go through here so the guarantees hold everywhere: a batch is validated
before anything is written; a commit that conflicts with a concurrent writer is
re-run against a fresh snapshot (safe because appends either commit whole or not at
all, and merges are idempotent on their keys); nothing is silently dropped.

Cost model (measured, see benchmarks/store.py): a Delta commit has a fixed cost of
~10-40 ms (open the log, write a file, commit, every `checkpoint_interval` commits a
checkpoint) that grows with the live files of the table, while a merge adds a
DataFusion plan over every file it cannot prune. So each write opens the table once
and reuses that snapshot for planning, committing and the resulting version; merges
are bounded by the batch's time range (`TableSpec.range_keys`) so file statistics
prune all but the newest files; and a merge whose rows are all either new or
unchanged -- the normal collection run, a new intent or fill -- is done as a read of
the rows that can match plus a plain append of the new ones, committed only on top of
the snapshot it read.

Every version V6 commits is recorded in a manifest beside the tables (`manifest.py`) and
every open compares the table with it: a table V6 wrote that is now missing or older
raises `StoreCorrupt` instead of reading as empty or stale. That costs one read of a
~1 KiB file per open (~30 us beside the ~4 ms open) and one locked, fsynced rewrite of it
per commit. Local roots only: an `s3://` root has no manifest (no atomic rename there).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import polars as pl
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError, TableNotFoundError

from core.config import Settings
from core.store.errors import CommitConflictError, StoreCorrupt
from core.store.integrity import expected_version, open_checked, record_version
from core.store.location import deltalake_options
from core.store.manifest import Manifest, check
from core.store.naming import TableNaming, narrowed
from core.store.read_cache import ReadCache
from core.store.registry import REGISTRY
from core.store.spec import TableSpec
from core.store.validation import prepare

log = logging.getLogger(f"v6.{__name__}")
T = TypeVar("T")


@dataclass(frozen=True)
class WriteResult:
    table: str
    version: int | None  # None when nothing was committed (empty batch or replayed txn)
    rows_inserted: int
    rows_updated: int = 0
    skipped: bool = False  # an idempotent append whose txn was already committed
    # How the rows went in: "append", "merge", "insert" (merge done as read-diff-append,
    # see `DeltaStore.merge`), or "none" when nothing needed writing.
    method: str = "none"


@dataclass(frozen=True)
class TableStats:
    name: str
    version: int
    rows: int
    files: int
    size_bytes: int


class DeltaStore(TableNaming):
    """The Delta tables under one root (a local directory or an `s3://` URI)."""

    def __init__(
        self,
        root: str | Path,
        storage_options: Mapping[str, str] | None = None,
        *,
        registry: Mapping[str, TableSpec] = REGISTRY,
        commit_retries: int = 8,
        commit_backoff_s: float = 0.05,
        checkpoint_interval: int = 20,
    ) -> None:
        if not 1 <= checkpoint_interval <= 1000:
            raise ValueError(
                f"checkpoint_interval={checkpoint_interval}: must be within 1..1000 (commits "
                "between Delta checkpoints; V6 uses 20, Delta's default is 100)"
            )
        self.root = str(root).rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.registry = registry
        self.commit_retries = commit_retries
        self.commit_backoff_s = commit_backoff_s
        self.checkpoint_interval = checkpoint_interval
        self._remote = "://" in self.root
        self._read_cache: ReadCache | None = None
        self.manifest: Manifest | None = None
        if not self._remote:
            Path(self.root).mkdir(parents=True, exist_ok=True)
            self.manifest = Manifest(self.root)

    @classmethod
    def from_settings(cls, settings: Settings) -> DeltaStore:
        st = settings.storage
        return cls(
            st.root,
            deltalake_options(st.root, st.plain_storage_options()),
            commit_retries=st.commit_retries,
            commit_backoff_s=st.commit_backoff_s,
            checkpoint_interval=st.checkpoint_interval,
        )

    # -- access (spec/uri: TableNaming) ---------------------------------------------
    def _options(self) -> dict[str, str] | None:
        return self.storage_options or None

    def _open(self, name: str) -> DeltaTable | None:
        """A fresh snapshot at the latest version, or None if the table does not exist;
        StoreCorrupt if it is missing or older than V6 last committed (`open_checked`).

        One open per operation, never cached across writes: a kept handle goes stale (its
        commits conflict) and, measured on deltalake 1.6, writing through a long-lived
        handle got slower with every commit (~200 ms per append after 2,000 commits)."""
        return open_checked(self, name)

    def check_tables(self) -> list[StoreCorrupt]:
        """Every table the manifest knows that is now missing or older than recorded.

        One open per recorded table (~4 ms each with checkpoints): a pre-flight for runs
        that must not start on lost state (the trading cycle checks before the broker)."""
        recorded = {} if self.manifest is None else self.manifest.read()
        problems: list[StoreCorrupt] = []
        for name in sorted(n for n in recorded if n in self.registry):
            try:
                self._open(name)
            except StoreCorrupt as exc:
                problems.append(exc)
        return problems

    def _open_or_create(self, name: str) -> DeltaTable:
        table = self._open(name)
        if table is None:
            self._create(name)
            table = self._open(name)
        if table is None:  # pragma: no cover - deltalake just created it
            raise TableNotFoundError(f"table {name} at {self.uri(name)} vanished after creation")
        return table

    def _create(self, name: str) -> None:
        """Create the table empty with its schema, checkpointing every `checkpoint_interval`
        commits so opening it stays cheap however many commits it collects."""
        spec = self.spec(name)
        try:
            write_deltalake(
                self.uri(name),
                spec.empty(),
                mode="ignore",
                partition_by=list(spec.partition_by) or None,
                storage_options=self._options(),
                description=spec.description,
                configuration={"delta.checkpointInterval": str(self.checkpoint_interval)},
            )
        except CommitFailedError:
            if not self.exists(name):  # lost a creation race: the winner's table is as good
                raise
        record_version(self, name, 0)

    # -- lifecycle -----------------------------------------------------------------------
    def exists(self, name: str) -> bool:
        """Whether the table exists; StoreCorrupt if V6 wrote it and it is gone (so that no
        caller recreates it empty or reads "not created" as "nothing there")."""
        found = DeltaTable.is_deltatable(self.uri(name), storage_options=self._options())
        if not found:
            check(name, self.uri(name), expected_version(self, name), None)
        return found

    def ensure(self, name: str) -> None:
        """Create the table empty with its schema if it does not exist (safe to race)."""
        self.spec(name)
        if not self.exists(name):
            self._create(name)

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
        if data.is_empty():
            self.ensure(name)
            return WriteResult(name, None, 0)
        props = None
        if txn is not None:
            app_id, seq = txn
            # Committed only on top of the snapshot whose txn version was checked, so two
            # racing replays cannot both pass the check (the loser re-checks and skips).
            props = CommitProperties(
                app_transactions=[Transaction(app_id=app_id, version=seq)], max_commit_retries=0
            )

        def attempt() -> WriteResult:
            table = self._open_or_create(name)
            if txn is not None:
                done = table.transaction_version(txn[0])
                if done is not None and done >= txn[1]:
                    log.info("append to %s skipped: txn %s already committed", name, txn)
                    return WriteResult(name, None, 0, skipped=True)
            base = table.version()
            self._append(table, spec, data, props)
            self._cache_appended(name, base, table.version(), data)
            return WriteResult(name, table.version(), data.height, method="append")

        return self._committed(self._with_retries(name, attempt))

    def merge(self, name: str, batch: pl.DataFrame, *, update: bool = True) -> WriteResult:
        """Idempotent upsert on the table's keys: the same batch twice leaves the same table.

        `update=False` inserts only rows whose key is new (existing rows are never touched),
        which is how facts like fills are recorded exactly once.

        The stored rows that can share a key with the batch are read first (bounded by
        the batch's partitions and time range, `TableSpec.range_keys`, or else by its key
        values). When none of them differs from its batch row (or `update` is False) the
        new rows are appended -- no merge plan (~20 ms of DataFusion on a small table) --
        and that commit is only accepted directly on top of the snapshot that was read
        (`max_commit_retries=0`): if anyone committed in between, the whole attempt
        (read, diff, append) reruns on the new snapshot, so a concurrent or replayed
        writer can never add a key twice. Otherwise (a row really changed) it is a Delta
        MERGE, bounded to the batch's partitions and time range.
        """
        spec = self.spec(name)
        if not spec.keys:
            raise ValueError(f"table {name} declares no keys; use append() instead of merge()")
        data = prepare(spec, batch)
        if data.is_empty():
            self.ensure(name)
            return WriteResult(name, None, 0)
        predicate = self._merge_predicate(spec, data)
        values = [c for c in spec.schema.names() if c not in spec.keys]
        changed = " OR ".join(f"(t.{c} IS DISTINCT FROM s.{c})" for c in values) or "false"

        def attempt() -> WriteResult:
            table = self._open_or_create(name)
            base = table.version()
            new, differing = self._diff(table, spec, data)
            if differing == 0 or not update:
                if new.is_empty():
                    return WriteResult(name, None, 0, method="none")
                self._append(table, spec, new, CommitProperties(max_commit_retries=0))
                self._cache_appended(name, base, table.version(), new)
                return WriteResult(name, table.version(), new.height, method="insert")
            if self._read_cache is not None:
                self._read_cache.forget(name)
            merger = table.merge(data, predicate=predicate, source_alias="s", target_alias="t")
            if update:
                # Update only rows that really changed: a replayed batch commits nothing.
                merger = merger.when_matched_update_all(predicate=changed)
            metrics = merger.when_not_matched_insert_all().execute()
            inserted = int(metrics.get("num_target_rows_inserted", 0))
            updated = int(metrics.get("num_target_rows_updated", 0))
            # The handle follows its own commit: no re-open to learn the version.
            version = table.version() if inserted or updated else None
            return WriteResult(name, version, inserted, updated, method="merge")

        return self._committed(self._with_retries(name, attempt))

    def _cache_appended(self, name: str, base: int, version: int, rows: pl.DataFrame) -> None:
        if self._read_cache is not None and name in self._read_cache.tables:
            self._read_cache.appended(name, base, version, rows)

    def _committed(self, result: WriteResult) -> WriteResult:
        record_version(self, result.table, result.version)
        return result

    @staticmethod
    def _append(
        table: DeltaTable, spec: TableSpec, data: pl.DataFrame, props: CommitProperties | None
    ) -> None:
        write_deltalake(
            table,
            data,
            mode="append",
            partition_by=list(spec.partition_by) or None,
            commit_properties=props,
        )

    @staticmethod
    def _range_filter(spec: TableSpec, data: pl.DataFrame) -> pl.Expr:
        """Rows of the table that can share a key with `data`: its partitions and time
        range; on a table without a time key, its key values (a superset when the key has
        several columns; the join on the whole key is exact)."""
        where = pl.lit(True)
        for col in (*spec.partition_by, *spec.range_keys):
            if col in spec.partition_by:
                where &= pl.col(col).is_in(data.get_column(col).unique().implode())
            else:
                where &= pl.col(col).is_between(
                    data.get_column(col).min(), data.get_column(col).max()
                )
        if not spec.range_keys:
            for col in spec.keys:
                if col not in spec.partition_by:
                    where &= pl.col(col).is_in(data.get_column(col).unique().implode())
        return where

    def _diff(
        self, table: DeltaTable, spec: TableSpec, data: pl.DataFrame
    ) -> tuple[pl.DataFrame, int]:
        """(rows of `data` whose key is not stored, count of stored rows that differ from
        their batch row), read from `table`'s snapshot; file stats prune the read to the
        batch's time range. Values compare null-safely, like the merge's IS DISTINCT FROM."""
        keys = list(spec.keys)
        cached = (
            None if self._read_cache is None else self._read_cache.at(spec.name, table.version())
        )
        source = pl.scan_delta(table) if cached is None else cached.lazy()
        stored = source.filter(self._range_filter(spec, data)).select(spec.schema.names()).collect()
        if stored.is_empty():
            return data, 0
        new = data.join(stored.select(keys), on=keys, how="anti")
        values = [c for c in spec.schema.names() if c not in spec.keys]
        if not values:
            return new, 0
        twins = data.join(stored, on=keys, how="inner", suffix="__stored")
        differing = twins.select(
            pl.any_horizontal([pl.col(c).ne_missing(pl.col(f"{c}__stored")) for c in values]).sum()
        ).item()
        return new, int(differing)

    @staticmethod
    def _merge_predicate(spec: TableSpec, data: pl.DataFrame) -> str:
        """Key equality, plus the batch's partition values and time range, so that only files
        that can hold a matching row are planned and scanned (partition pruning + file stats).

        Time bounds are widened to whole milliseconds: Delta truncates timestamp stats to
        milliseconds, and a bound must never exclude a file that holds a match."""
        parts = [f"t.{k} = s.{k}" for k in spec.keys]
        for col in spec.partition_by:
            values = data.get_column(col).unique().sort().to_list()
            if values and all(isinstance(v, date) for v in values):
                listed = ", ".join(f"'{v.isoformat()}'" for v in values)
                parts.append(f"t.{col} IN ({listed})")
        for col in spec.range_keys:
            lo, hi = data.get_column(col).min(), data.get_column(col).max()
            if isinstance(lo, datetime) and isinstance(hi, datetime):
                lo = lo.replace(microsecond=lo.microsecond // 1000 * 1000)
                hi = hi.replace(microsecond=hi.microsecond // 1000 * 1000) + timedelta(
                    milliseconds=1
                )
                parts.append(f"t.{col} >= '{lo.isoformat()}' AND t.{col} < '{hi.isoformat()}'")
            elif isinstance(lo, date) and isinstance(hi, date):
                parts.append(f"t.{col} >= '{lo.isoformat()}' AND t.{col} <= '{hi.isoformat()}'")
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
        """A lazy scan of the latest version, pinned at call time; filters on partition
        columns and on columns with file stats (times) skip files before any is opened.
        Inside `cached_reads` a listed table is served from memory while it is unchanged."""
        spec = self.spec(name)
        cache = self._read_cache
        if cache is not None and name in cache.tables:
            return narrowed(self._cached(cache, name).lazy(), where, columns)
        table = self._open(name)
        lf = spec.empty().lazy() if table is None else pl.scan_delta(table)
        return narrowed(lf, where, columns)

    @contextmanager
    def cached_reads(self, tables: Iterable[str]) -> Iterator[ReadCache | None]:
        """Within the block, read each of `tables` (small ones: they are held whole) once
        per version (see `read_cache.py`). Local roots only; nested blocks share the
        outer cache. Yields the cache (None when not caching), for its hit counts."""
        if self._remote or self._read_cache is not None:
            yield self._read_cache
            return
        self._read_cache = ReadCache.of(tables)
        try:
            yield self._read_cache
        finally:
            self._read_cache = None

    def _cached(self, cache: ReadCache, name: str) -> pl.DataFrame:
        uri = self.uri(name)
        frame = cache.get(name, uri, expected_version(self, name))
        if frame is not None:
            return frame
        table = self._open(name)
        if table is None:
            return self.spec(name).empty()
        frame = pl.scan_delta(table).collect()
        cache.put(name, table.version(), frame)
        return frame

    def history(self, name: str, limit: int | None = None) -> list[dict[str, Any]]:
        table = self._open(name)
        return [] if table is None else table.history(limit)

    def stats(self, name: str) -> TableStats:
        table = self._open(name)
        if table is None:
            return TableStats(name, -1, 0, 0, 0)
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
