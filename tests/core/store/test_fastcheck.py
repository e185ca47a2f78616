"""The compiled check (core/store/fastcheck.py) passes exactly the frames pandera passes.

The corpus is generated, not hand-picked: every registered table's example, then for each
column a frame with one row altered (null, NaN, infinities, zero, negatives, huge numbers,
empty and unknown strings, far-off dates, a flipped bool), placed between valid rows so
row-wise and whole-frame checks both see it. By default every column gets a rotating
subset of the alterations; the slow variant runs all of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pandera.errors
import pandera.polars as pa
import polars as pl
import pytest

from core.store import validation
from core.store.errors import SchemaViolation
from core.store.fastcheck import NotCompilable, compile_schema, try_compile
from core.store.registry import REGISTRY
from core.store.spec import TableSpec
from core.store.validation import check_values, compiled, prepare

NUMBERS: tuple[Any, ...] = (None, 0, -1, 1, -(10**9), 10**9)
FLOATS: tuple[Any, ...] = (None, math.nan, math.inf, -math.inf, 0.0, -1.0, 1e-9, 1e12, -1e12)
STRINGS: tuple[Any, ...] = (None, "", "x", "{not json", "{}", "BUY", "C", "OPEN")
DATES: tuple[Any, ...] = (None, date(1970, 1, 1), date(2100, 1, 1))
TIMES: tuple[Any, ...] = (
    None,
    datetime(1970, 1, 1, tzinfo=UTC),
    datetime(2100, 1, 1, tzinfo=UTC),
)


def _alterations(dtype: pl.DataType) -> tuple[Any, ...]:
    if dtype.is_float():
        return FLOATS
    if dtype.is_integer():
        return NUMBERS
    if dtype == pl.String:
        return STRINGS
    if dtype == pl.Date:
        return DATES
    if isinstance(dtype, pl.Datetime):
        return TIMES
    if dtype == pl.Boolean:
        return (None, True, False)
    raise AssertionError(f"no alterations for dtype {dtype}: add some to this test")


def _example(spec: TableSpec) -> pl.DataFrame:
    assert spec.example is not None, f"table {spec.name} has no example row"
    return prepare(spec, spec.example())


def corpus(spec: TableSpec, every: bool) -> Iterator[tuple[str, pl.DataFrame]]:
    """(label, frame) pairs: the example, then one altered row per (column, value)."""
    base = _example(spec)
    yield "example", base
    yield "empty", spec.empty()
    row = base.head(1)
    for i, (name, dtype) in enumerate(spec.schema.items()):
        values = _alterations(dtype)
        chosen = values if every else (values[i % len(values)], values[(i + 1) % len(values)])
        for value in chosen:
            altered = row.with_columns(pl.lit(value, dtype=dtype).alias(name))
            yield f"{name}={value!r}", pl.concat([base, altered, base])


def _pandera_passes(spec: TableSpec, frame: pl.DataFrame) -> bool:
    try:
        spec.model.validate(frame, lazy=True)
    except (pandera.errors.SchemaErrors, pandera.errors.SchemaError):
        return False
    return True


def _agree(spec: TableSpec, every: bool) -> tuple[int, int]:
    fast = compiled(spec.model)
    assert fast is not None
    frames = failing = 0
    for label, frame in corpus(spec, every):
        want = _pandera_passes(spec, frame)
        assert fast(frame) == want, f"{spec.name} {label}: pandera passes={want}"
        frames += 1
        failing += not want
    return frames, failing


def test_every_registered_table_compiles() -> None:
    for name, spec in REGISTRY.items():
        assert compiled(spec.model) is not None, f"table {name} does not compile"


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_compiled_check_agrees_with_pandera(name: str) -> None:
    frames, failing = _agree(REGISTRY[name], every=False)
    assert failing > 0, f"{name}: the corpus must hold frames pandera rejects"
    assert frames - failing > 0


@pytest.mark.slow
def test_compiled_check_agrees_with_pandera_on_the_full_corpus() -> None:
    totals = [_agree(spec, every=True) for spec in REGISTRY.values()]
    assert sum(f for f, _ in totals) > 1500


def test_a_failing_batch_is_reported_by_pandera() -> None:
    spec = REGISTRY["fills"]
    bad = _example(spec).with_columns(pl.lit(-5, dtype=pl.Int64).alias("con_id"))
    with pytest.raises(SchemaViolation) as caught:
        check_values(spec, bad)
    assert "greater_than(0)" in str(caught.value) and "con_id" in str(caught.value)


def test_a_disagreement_refuses_the_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail closed: a compiled check stricter than pandera is a bug, never a silent pass."""
    spec = REGISTRY["fills"]
    compiled.cache_clear()
    try:
        never = compile_schema(spec.model.to_schema(), spec.schema)
        never = type(never)((pl.lit(False),))
        monkeypatch.setattr(validation, "try_compile", lambda *_: never)
        with pytest.raises(SchemaViolation, match="must agree"):
            check_values(spec, _example(spec))
    finally:
        compiled.cache_clear()


def test_element_wise_checks_fall_back_to_pandera() -> None:
    class Model(pa.DataFrameModel):
        x: pl.Int64 = pa.Field(ge=0)

        @pa.check("x", element_wise=True)
        @classmethod
        def small(cls, v: int) -> bool:
            return v < 10

    schema = Model.to_schema()
    assert try_compile(schema, pl.Schema({"x": pl.Int64})) is None
    with pytest.raises(NotCompilable, match="element-wise"):
        compile_schema(schema, pl.Schema({"x": pl.Int64}))
