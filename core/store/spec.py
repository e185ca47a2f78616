"""What a table is: name, pandera model, keys, partitioning, and an example row.

The example row is documentation (what a record looks like) and a live check: the
test suite and `v6 demo` write it into every table, so a schema that cannot accept
its own example fails loudly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pandera.polars as pa
import polars as pl


@dataclass(frozen=True)
class TableSpec:
    name: str
    model: type[pa.DataFrameModel]
    description: str
    keys: tuple[str, ...] = ()
    partition_by: tuple[str, ...] = ()
    # Columns the store fills in when a batch lacks them (e.g. a partition date from a timestamp).
    derived: Mapping[str, pl.Expr] = field(default_factory=dict)
    example: Callable[[], pl.DataFrame] | None = None
    # Columns nightly compaction clusters rows by (Z-order), e.g. (symbol, ts): row-group
    # stats then let a one-symbol read skip the other symbols' rows. Empty = plain compaction.
    cluster_by: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        cols = set(self.schema)
        declared = (*self.keys, *self.partition_by, *self.derived, *self.cluster_by)
        missing = [c for c in declared if c not in cols]
        if missing:
            raise ValueError(
                f"table {self.name}: keys/partitions/derived/cluster_by {missing} are not columns"
            )
        clustered_partitions = [c for c in self.cluster_by if c in self.partition_by]
        if clustered_partitions:
            raise ValueError(
                f"table {self.name}: cluster_by {clustered_partitions} are partition columns; "
                "cluster by columns inside a partition (e.g. symbol, ts)"
            )

    @property
    def schema(self) -> pl.Schema:
        """The exact polars schema every batch must have (pandera's dtypes, in model order)."""
        columns = self.model.to_schema().columns
        return pl.Schema({name: col.dtype.type for name, col in columns.items()})

    @property
    def range_keys(self) -> tuple[str, ...]:
        """Key columns holding dates or times (partition columns aside).

        A row can only match a batch row inside the batch's [min, max] of such a column, so
        the store bounds merges and pre-write reads with it: Delta's per-file min/max stats
        then skip every file outside the batch's time range (a day's partition holds one
        file per collection run; without the bound every merge rescans all of them)."""
        schema = self.schema
        return tuple(
            k
            for k in self.keys
            if k not in self.partition_by and isinstance(schema[k], pl.Datetime | pl.Date)
        )

    def empty(self) -> pl.DataFrame:
        return pl.DataFrame(schema=self.schema)
