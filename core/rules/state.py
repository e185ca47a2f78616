"""Durable per-strategy rule memory (Delta table `rule_state`, key strategy_id).

A trailing stop that forgets its peak when the process restarts is no stop at all, and an
IV-crush or VIX-rise rule is meaningless without the entry values. So these live in Delta:

- `peak_profit_pct`: max(stored, current profit), updated every evaluation;
- `entry_iv`, `entry_vix`: write-once: the first value recorded wins, later ones are ignored
  (entry is a fact; a snapshot builder that re-derives it later must not move it);
- `reduced`: the partial take-profit was decided (so the next cycle does not halve again);
  an executor whose REDUCE order failed clears it with `RulesEngine.clear_reduced`.

Everything here is pure frame-in/frame-out; `engine.RulesEngine` does the reading/writing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import polars as pl

from core.domain.timezones import UTC_US
from core.store import REGISTRY, DeltaStore

TABLE = "rule_state"
STATE_SCHEMA = REGISTRY[TABLE].schema
_VALUES = ("peak_profit_pct", "entry_iv", "entry_vix", "reduced")


def empty_state() -> pl.DataFrame:
    return REGISTRY[TABLE].empty()


def normalize_state(state: pl.DataFrame | None) -> pl.DataFrame:
    """`state` as the exact table schema (None = no memory yet); rejects duplicates."""
    if state is None:
        return empty_state()
    missing = [c for c in STATE_SCHEMA.names() if c not in state.columns]
    if missing:
        raise ValueError(f"rule state: columns {missing} are missing; pass load_state() output")
    state = state.select(STATE_SCHEMA.names()).cast(STATE_SCHEMA)
    if state["strategy_id"].n_unique() != state.height:
        dup = state.filter(pl.col("strategy_id").is_duplicated())["strategy_id"].unique()
        raise ValueError(
            f"rule state: strategy_id values {dup.head(5).to_list()} appear more than once"
        )
    return state


def load_state(store: DeltaStore, strategy_ids: Sequence[str] | None = None) -> pl.DataFrame:
    """The stored rule state, optionally only for some strategies."""
    where = None if strategy_ids is None else pl.col("strategy_id").is_in(list(strategy_ids))
    return normalize_state(store.read(TABLE, where=where).collect())


def next_state(decisions: pl.DataFrame, prior: pl.DataFrame, now: datetime) -> pl.DataFrame:
    """The `rule_state` rows to upsert after an evaluation: new and changed strategies only.

    `decisions` carries the post-decision values (peak, effective entry IV/VIX, reduced);
    `updated_at` moves only when a value changed, so a quiet cycle commits nothing.
    """
    ts = pl.lit(now).cast(UTC_US)
    cur = decisions.select("strategy_id", *_VALUES)
    old = prior.select(
        "strategy_id",
        *[pl.col(v).alias(f"_old_{v}") for v in _VALUES],
        "first_seen_at",
        "updated_at",
    )
    joined = cur.join(old, on="strategy_id", how="left")
    changed = (
        pl.any_horizontal([pl.col(v).ne_missing(pl.col(f"_old_{v}")) for v in _VALUES])
        | pl.col("first_seen_at").is_null()
    )
    return (
        joined.filter(changed)
        .with_columns(
            pl.col("first_seen_at").fill_null(ts),
            ts.alias("updated_at"),
        )
        .select(STATE_SCHEMA.names())
    )


def entries_update(entries: pl.DataFrame, prior: pl.DataFrame, now: datetime) -> pl.DataFrame:
    """Rows recording entry IV/VIX write-once: a stored non-null value is never replaced.

    `entries` has strategy_id and any of entry_iv, entry_vix (non-positive or NaN = unknown).
    Strategies not yet in the state are created with no peak and `reduced` false.
    """
    if "strategy_id" not in entries.columns:
        raise ValueError("entries: column 'strategy_id' is missing")
    cols = []
    for name in ("entry_iv", "entry_vix"):
        if name in entries.columns:
            v = pl.col(name).cast(pl.Float64)
            cols.append(pl.when(v.is_finite() & (v > 0)).then(v).alias(f"_new_{name}"))
        else:
            cols.append(pl.lit(None, dtype=pl.Float64).alias(f"_new_{name}"))
    new = entries.select(pl.col("strategy_id").cast(pl.String), *cols).unique(
        "strategy_id", keep="last", maintain_order=True
    )
    ts = pl.lit(now).cast(UTC_US)
    merged = new.join(prior, on="strategy_id", how="left")
    changed = (
        pl.col("updated_at").is_null()
        | (pl.col("entry_iv").is_null() & pl.col("_new_entry_iv").is_not_null())
        | (pl.col("entry_vix").is_null() & pl.col("_new_entry_vix").is_not_null())
    )
    return (
        merged.filter(changed)
        .with_columns(
            pl.coalesce("entry_iv", "_new_entry_iv").alias("entry_iv"),
            pl.coalesce("entry_vix", "_new_entry_vix").alias("entry_vix"),
            pl.col("reduced").fill_null(False),
            pl.col("first_seen_at").fill_null(ts),
            ts.alias("updated_at"),
        )
        .select(STATE_SCHEMA.names())
    )
