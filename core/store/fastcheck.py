"""One compiled polars query per table that passes exactly when pandera's checks pass.

pandera validates a 1-row batch in ~15 ms (a collect per check, ~40 per table); the same
constraints as one `DataFrame.select` cost ~1 ms. The query is *derived* from the table's
pandera schema, never written by hand, so the schema stays the one source of truth: each
pandera check function (built-in or the model's own `@pa.check`/`@pa.dataframe_check`)
is called on a stand-in frame that records the polars expressions it selects, and those
expressions are combined exactly as pandera's polars backend combines them (several
outputs folded with `&`; a null outcome passes when the check ignores nulls; a
non-nullable column rejects nulls and, for floats, NaN).

The store runs this query on every write and calls pandera only when it fails, so every
error report is still pandera's. A schema using anything this module cannot mirror
(element-wise or grouped checks, uniqueness, regex columns, parsers, defaults, a check
that does more than `select` expressions) compiles to None and is always validated by
pandera: slower, never weaker. `tests/core/store/test_fastcheck.py` holds every
registered table to compiling, and to agreeing with pandera on a corpus of bad frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import reduce
from typing import Any

import pandera.api.polars.container as pa_container
import polars as pl
from pandera.api.checks import Check
from pandera.api.function_dispatch import Dispatcher
from pandera.api.polars.types import PolarsData
from pandera.config import CONFIG

_FLOATS = (pl.Float32, pl.Float64)


class NotCompilable(Exception):
    """The schema uses a feature the compiled check does not mirror (pandera runs instead)."""


class _Recorder:
    """Stands in for `PolarsData.lazyframe`: records what a check selects, allows nothing else."""

    def select(self, *exprs: Any, **named: Any) -> _Selected:
        out = [*exprs, *named.values()]
        flat: list[pl.Expr] = []
        for e in out:
            items = e if isinstance(e, list | tuple) else [e]
            for item in items:
                if not isinstance(item, pl.Expr):
                    raise NotCompilable(f"check selects {type(item).__name__}, not an expression")
                flat.append(item)
        if not flat:
            raise NotCompilable("check selects nothing")
        return _Selected(flat)

    def __getattr__(self, name: str) -> Any:
        raise NotCompilable(f"check uses LazyFrame.{name}; only select(expr, ...) is compiled")


@dataclass(frozen=True)
class _Selected:
    exprs: list[pl.Expr]


@dataclass(frozen=True)
class CompiledCheck:
    """The pass/fail of a whole schema as one list of boolean aggregations."""

    passes: tuple[pl.Expr, ...]

    def __call__(self, batch: pl.DataFrame) -> bool:
        if not self.passes:
            return True
        return bool(batch.select(pl.all_horizontal(self.passes)).item())


def _check_expr(check: Check, key: str) -> pl.Expr:
    """The expression that is True for every row (or the frame) pandera lets pass."""
    if check.element_wise:
        raise NotCompilable(f"check {check.name} is element-wise")
    if check.groupby is not None:
        raise NotCompilable(f"check {check.name} is grouped")
    fn = check._check_fn
    if isinstance(fn, Dispatcher):
        # A built-in: the schema holds a copy of its dispatcher taken before pandera
        # registered the polars implementations; the live one is in pandera's registry.
        fn = Check.CHECK_FUNCTION_REGISTRY[str(check.name)]
    if fn is None:  # pragma: no cover - pandera always sets it
        raise NotCompilable(f"check {check.name} has no function")
    out = fn(PolarsData(_Recorder(), key), **check._check_kwargs)  # type: ignore[arg-type]
    if not isinstance(out, _Selected):
        raise NotCompilable(f"check {check.name} returned {type(out).__name__}")
    combined = reduce(lambda acc, e: acc & e, out.exprs)
    if check.ignore_na:
        return (combined | combined.is_null()).all()
    return combined.fill_null(False).all()


def _checks(checks: Sequence[Check], key: str) -> list[pl.Expr]:
    # A warning-only check never fails validation, so it is not part of pass/fail.
    return [_check_expr(c, key) for c in checks if not c.raise_warning]


def compile_schema(schema: pa_container.DataFrameSchema, dtypes: pl.Schema) -> CompiledCheck:
    """Compile `schema` (a pandera polars DataFrameSchema whose exact column dtypes are
    `dtypes`) into one query; NotCompilable names the feature it cannot mirror."""
    if CONFIG.use_narwhals_backend:
        raise NotCompilable("pandera runs its narwhals backend; only the polars one is mirrored")
    # What `validate` does first: registers the polars implementations of the built-ins.
    schema.register_default_backends(pl.LazyFrame)
    if schema.unique or getattr(schema, "parsers", None) or schema.add_missing_columns:
        raise NotCompilable(f"schema {schema.name}: unique/parsers/add_missing_columns")
    passes = _checks(schema.checks, "*")
    for name, col in schema.columns.items():
        if col.regex or col.unique or getattr(col, "parsers", None) or col.default is not None:
            raise NotCompilable(f"column {name}: regex/unique/parsers/default")
        if not col.nullable:
            ok = pl.col(name).is_not_null()
            if dtypes[name] in _FLOATS:
                ok = ok & pl.col(name).is_not_nan()
            passes.append(ok.all())
        passes.extend(_checks(col.checks, name))
    return CompiledCheck(tuple(passes))


def try_compile(schema: pa_container.DataFrameSchema, dtypes: pl.Schema) -> CompiledCheck | None:
    try:
        return compile_schema(schema, dtypes)
    except NotCompilable:
        return None
