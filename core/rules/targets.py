"""Dynamic take-profit targets: how much of the credit to wait for, by market regime.

In a crash, premium can come back violently, so V6 banks profit early (40%); in a calm,
low-vol market it lets theta work longer (90%). When the regime is unknown (missing or stale
history, see `regime.py`) the target is `profit_target_fallback_pct` (50% by default): a
conservative middle that banks profit before it can be given back, rather than assuming calm.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from core.config import RuleSettings
from core.rules.vocab import KNOWN_REGIMES


def check_targets(settings: RuleSettings) -> None:
    """Reject a target keyed by a regime the detector never emits (a typo would be ignored)."""
    unknown = sorted(set(settings.profit_target_pct) - KNOWN_REGIMES)
    if unknown:
        raise ValueError(
            f"rules.profit_target_pct has unknown regime(s) {unknown}; "
            f"use only {sorted(KNOWN_REGIMES)}"
        )


def profit_target(regime: str | None, settings: RuleSettings) -> float:
    """The take-profit target (% of credit) for one regime; the fallback when unknown/None."""
    if regime is None:
        return settings.profit_target_fallback_pct
    return settings.profit_target_pct.get(regime, settings.profit_target_fallback_pct)


def profit_target_expr(settings: RuleSettings, regime: pl.Expr | None = None) -> pl.Expr:
    """Vectorised `profit_target`: a regime column mapped to Float64 targets, never null."""
    col = pl.col("regime") if regime is None else regime
    fallback = pl.lit(settings.profit_target_fallback_pct, dtype=pl.Float64)
    chain: Any = pl  # a when/then chain: ~6x faster than replace_strict on a string column
    for name, target in settings.profit_target_pct.items():
        chain = chain.when(col == name).then(pl.lit(target, dtype=pl.Float64))
    return fallback if chain is pl else chain.otherwise(fallback)
