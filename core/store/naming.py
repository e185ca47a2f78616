"""Table names to specs and URIs: what every store (Delta on disk, in memory) shares."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from core.store.errors import UnknownTableError
from core.store.spec import TableSpec


class TableNaming:
    """`spec(name)` and `uri(name)` for a store with a `root` and a `registry` of specs.

    One place for the unknown-table error, so every store names the known tables alike."""

    root: str
    registry: Mapping[str, TableSpec]

    def spec(self, name: str) -> TableSpec:
        try:
            return self.registry[name]
        except KeyError:
            known = ", ".join(sorted(self.registry))
            raise UnknownTableError(f"unknown table '{name}'; known tables: {known}") from None

    def uri(self, name: str) -> str:
        self.spec(name)
        return f"{self.root}/{name}"


def narrowed(lf: pl.LazyFrame, where: pl.Expr | None, columns: list[str] | None) -> pl.LazyFrame:
    """`read`'s optional row filter and column selection, the same for every store."""
    if where is not None:
        lf = lf.filter(where)
    return lf if columns is None else lf.select(columns)
