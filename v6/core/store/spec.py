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

UTC_US = pl.Datetime("us", "UTC")


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

    def __post_init__(self) -> None:
        cols = set(self.schema)
        missing = [c for c in (*self.keys, *self.partition_by, *self.derived) if c not in cols]
        if missing:
            raise ValueError(
                f"table {self.name}: keys/partitions/derived {missing} are not columns"
            )

    @property
    def schema(self) -> pl.Schema:
        """The exact polars schema every batch must have (pandera's dtypes, in model order)."""
        columns = self.model.to_schema().columns
        return pl.Schema({name: col.dtype.type for name, col in columns.items()})

    def empty(self) -> pl.DataFrame:
        return pl.DataFrame(schema=self.schema)
