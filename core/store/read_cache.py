"""Whole small tables kept in memory for one scope (a trading cycle), re-read only when
a newer commit exists.

A cycle reads the book tables again and again (the intent sequence, today's usage and
the whole book before every order); each read opens the table (~4 ms: the log replay
since the last checkpoint) and scans its files. Between two writes the answer cannot
change, so the first read of a table collects it whole, and later reads filter that
frame, as long as the table is still at the cached version.

The version check is exact on a local root and costs two `stat`s and a read of the
manifest: version v is current when `_delta_log/{v}.json` exists, `{v+1}.json` does not
(a Delta commit of v+1 creates exactly that file, put-if-absent), and the manifest
records nothing newer. A table that was lost or rolled back fails the first test, so
the next read goes through `open_checked` and raises `StoreCorrupt` as before. Remote
roots (`s3://`) are never cached: no cheap stat there.

The store's own writes keep the cache warm: a key-checked insert diffs against the cached
frame of the very snapshot it opened, and an append committed directly on top of the
cached version extends the frame by its rows; anything else (a MERGE, a commit that
landed after someone else's) drops the entry, to be re-read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl


def _commit_file(table_uri: str, version: int) -> Path:
    return Path(table_uri) / "_delta_log" / f"{version:020d}.json"


def is_current(table_uri: str, version: int) -> bool:
    """Whether `version` is still the latest commit of the local table at `table_uri`."""
    return (
        _commit_file(table_uri, version).exists()
        and not _commit_file(table_uri, version + 1).exists()
    )


@dataclass
class ReadCache:
    """The cached frames of `tables` by name: (version, whole table)."""

    tables: frozenset[str]
    frames: dict[str, tuple[int, pl.DataFrame]] = field(default_factory=dict)
    hits: int = 0
    misses: int = 0

    @classmethod
    def of(cls, tables: Iterable[str]) -> ReadCache:
        return cls(frozenset(tables))

    def get(self, name: str, table_uri: str, recorded: int | None) -> pl.DataFrame | None:
        """The cached table if still current (`recorded`: the manifest's version)."""
        entry = self.frames.get(name)
        if entry is None:
            return None
        version, frame = entry
        if (recorded is not None and recorded > version) or not is_current(table_uri, version):
            del self.frames[name]
            return None
        self.hits += 1
        return frame

    def put(self, name: str, version: int, frame: pl.DataFrame) -> None:
        self.misses += 1
        self.frames[name] = (version, frame)

    def at(self, name: str, version: int) -> pl.DataFrame | None:
        """The cached table if it is exactly `version` (a snapshot the caller opened)."""
        entry = self.frames.get(name)
        return entry[1] if entry is not None and entry[0] == version else None

    def appended(self, name: str, base: int, version: int, rows: pl.DataFrame) -> None:
        """This store appended `rows` to `name` at `base`, committing `version`: when that
        commit sits directly on the cached `base`, the table now is the cached frame plus
        `rows` (no re-read); otherwise the entry is dropped."""
        entry = self.frames.pop(name, None)
        if entry is None or entry[0] != base or version != base + 1:
            return
        frame = entry[1]
        if rows.columns != frame.columns or rows.schema != frame.schema:
            return
        self.frames[name] = (version, pl.concat([frame, rows], how="vertical"))

    def forget(self, name: str) -> None:
        self.frames.pop(name, None)
