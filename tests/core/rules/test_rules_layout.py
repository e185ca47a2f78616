"""The engine's answers do not depend on how polars happens to chunk the snapshot."""

from __future__ import annotations

import polars as pl
from rules_helpers import NOW, snapshot

from core.config import RuleSettings
from core.rules import evaluate


def test_differently_chunked_columns_still_give_reasons() -> None:
    """Seen in a backtest: most columns in two chunks, one in a single chunk, two of nine
    strategies deciding. polars 2.1 panicked formatting their reasons over the filtered
    frame (a PanicException that failed the cycle); the engine must decide them."""
    quiet = [{"strategy_id": f"Q{i}"} for i in range(7)]
    firing = [
        {"strategy_id": f"F{i}", "iv_percentile": 16.25, "profit_pct": 21.05} for i in range(2)
    ]
    two_chunks = pl.concat([snapshot(*quiet[:4]), snapshot(*quiet[4:], *firing)], rechunk=False)
    mixed = two_chunks.with_columns(pl.Series("vix", [18.0] * two_chunks.height))
    assert (mixed["vix"].n_chunks(), mixed["iv_percentile"].n_chunks()) == (1, 2)

    out = evaluate(mixed, RuleSettings(), None, NOW)

    fired = out.filter(pl.col("rule").is_not_null()).sort("strategy_id")
    assert fired.get_column("strategy_id").to_list() == ["F0", "F1"]
    assert (
        fired.get_column("reason").to_list()
        == ["IV percentile 16.2 < 30.0 with profit 21.05% > 20.0%"] * 2
    )
    assert out.equals(evaluate(mixed.rechunk(), RuleSettings(), None, NOW))
