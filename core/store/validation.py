"""Validate a batch against its table before any byte is written.

Two layers, because deltalake silently casts mismatched types (a Date becomes an
integer, "25" becomes 25, nanoseconds are truncated): first the batch's schema must
equal the table's exactly, then the values are checked against the pandera model.

The values go first through one polars query compiled from that model
(`core.store.fastcheck`, ~1 ms instead of pandera's ~10-50 ms); pandera itself runs
only when that query fails, so every error report is pandera's.
"""

from __future__ import annotations

import functools

import pandera.errors
import pandera.polars as pa
import polars as pl
from pandera.config import get_config_context

from core.store.errors import SchemaViolation
from core.store.fastcheck import CompiledCheck, try_compile
from core.store.spec import TableSpec

SAMPLE_ROWS = 5


def prepare(spec: TableSpec, batch: pl.DataFrame, *, values: bool = True) -> pl.DataFrame:
    """Derive missing computed columns, order columns like the table, and validate.

    `values=False` skips only the pandera value checks, for a caller that runs
    `check_values` itself over many batches at once (MemoryStore's deferred mode)."""
    missing_derived = {c: e for c, e in spec.derived.items() if c not in batch.columns}
    if missing_derived:
        batch = batch.with_columns(**missing_derived)
    _check_schema(spec, batch)
    batch = batch.select(spec.schema.names())
    _check_keys(spec, batch)
    if values:
        check_values(spec, batch)
    return batch


def _check_schema(spec: TableSpec, batch: pl.DataFrame) -> None:
    want = spec.schema
    have = batch.schema
    problems: list[str] = []
    for name in want.names():
        if name not in have:
            problems.append(f"column '{name}' is missing (expected {want[name]})")
        elif have[name] != want[name]:
            problems.append(
                f"column '{name}' has dtype {have[name]}, the table stores {want[name]}; "
                f"cast it (e.g. pl.col('{name}').cast({want[name]!r})) before writing"
            )
    extra = [c for c in have.names() if c not in want]
    if extra:
        problems.append(
            f"columns {extra} are not in the table; drop them or add them to the schema"
        )
    if problems:
        raise SchemaViolation(spec.name, problems)


def _check_keys(spec: TableSpec, batch: pl.DataFrame) -> None:
    if not spec.keys or batch.is_empty():
        return
    keys = list(spec.keys)
    nulls = batch.filter(pl.any_horizontal(pl.col(keys).is_null()))
    problems = []
    if not nulls.is_empty():
        problems.append(f"{nulls.height} row(s) have a null key {keys}; sample:\n{_sample(nulls)}")
    dup = batch.filter(pl.struct(keys).is_duplicated())
    if not dup.is_empty():
        problems.append(
            f"{dup.height} row(s) share a key {keys} within the batch; de-duplicate first. "
            f"sample:\n{_sample(dup)}"
        )
    if problems:
        raise SchemaViolation(spec.name, problems)


@functools.cache
def compiled(model: type[pa.DataFrameModel]) -> CompiledCheck | None:
    """The model's compiled check, built once per process; None = pandera always runs."""
    schema = model.to_schema()
    dtypes = pl.Schema({name: col.dtype.type for name, col in schema.columns.items()})
    return try_compile(schema, dtypes)


def check_values(spec: TableSpec, batch: pl.DataFrame) -> None:
    """The pandera checks of `spec` over `batch` (exact schema already checked).

    The compiled query decides a pass; a fail is re-run through pandera for its report.
    If pandera then passes what the query failed, the two disagree (a bug in the
    compilation): the write is refused rather than trusting either silently."""
    if not get_config_context().validation_enabled:
        raise SchemaViolation(
            spec.name,
            [
                "pandera validation is disabled (PANDERA_VALIDATION_ENABLED); V6 refuses to write "
                "unvalidated data: unset that variable"
            ],
        )
    fast = compiled(spec.model)
    if fast is not None and fast(batch):
        return
    try:
        spec.model.validate(batch, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        raise SchemaViolation(spec.name, _describe_failures(batch, exc.failure_cases)) from None
    except pandera.errors.SchemaError as exc:
        raise SchemaViolation(spec.name, [str(exc)]) from None
    if fast is not None:
        raise SchemaViolation(
            spec.name,
            [
                "the compiled check (core/store/fastcheck.py) rejected a batch pandera accepts; "
                "they must agree: report this with the batch, nothing was written"
            ],
        )


def _describe_failures(batch: pl.DataFrame, failures: pl.DataFrame) -> list[str]:
    problems: list[str] = []
    groups = failures.group_by(["column", "check"], maintain_order=True).agg(pl.col("index"))
    for column, check, index in groups.iter_rows():
        rows = [i for i in index if i is not None]
        if rows:
            sample = batch[sorted(set(rows))[:SAMPLE_ROWS]]
            problems.append(
                f"check '{check}' failed on column '{column}' for {len(rows)} row(s); "
                f"sample:\n{_sample(sample)}"
            )
        else:
            problems.append(f"check '{check}' failed on column '{column}'")
    return problems


def _sample(frame: pl.DataFrame) -> str:
    with pl.Config(tbl_rows=SAMPLE_ROWS, tbl_cols=12, fmt_str_lengths=40):
        return str(frame.head(SAMPLE_ROWS))
