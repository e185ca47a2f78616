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
