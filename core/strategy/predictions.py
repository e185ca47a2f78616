"""What V6 expected of a strategy when it entered it: rows for the `predictions` table.

Written once per strategy (insert-only on `strategy_id`) after the entry fills, at the
price actually received, so the nightly variance analysis compares realised P&L with the
expectation of the trade that was really made (`schemas/analysis.py` conventions:
expected return is % of the entry credit, regime is the regime at entry).

`skew` is the normalised put skew of the entry's expiry (`skew_norm`, see `skew.py`);
null when the skew was unknown (neutral fallback). `entry_price` is the credit per share
received (average fill). Unknown numbers are null, never NaN (the schema refuses NaN).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

import polars as pl

from core.book.ledger import TableStore
from core.domain.timezones import UTC_US
from core.store.registry import REGISTRY
from core.strategy.candidates import UNKNOWN, Candidate, model_at_credit

TABLE = "predictions"


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def prediction_frame(
    entries: Sequence[tuple[Candidate, float]], *, created_at: datetime
) -> pl.DataFrame:
    """One row per (candidate, credit received per share), in the `predictions` schema."""
    if created_at.tzinfo is None:
        raise ValueError(f"created_at={created_at!r} is naive; pass a tz-aware UTC datetime")
    rows = []
    for cand, credit in entries:
        if not math.isfinite(credit):
            raise ValueError(
                f"prediction for {cand.strategy_id}: entry credit {credit!r} is not a number; "
                "pass the average fill credit per share"
            )
        pop, ret = model_at_credit(cand, credit)
        ivr = _finite(cand.iv_rank)
        rows.append(
            {
                "strategy_id": cand.strategy_id,
                "strategy_type": cand.strategy_type,
                "underlying": cand.underlying,
                "regime": cand.regime or UNKNOWN,
                "created_at": created_at,
                "expected_return_pct": ret if math.isfinite(ret) else 0.0,
                "prob_profit": min(max(pop, 0.0), 1.0),
                "score": cand.score,
                "iv_rank": None if ivr is None else min(max(ivr, 0.0), 100.0),
                "skew": _finite(cand.skew_norm),
                "dte": max(cand.dte, 0),
                "width": cand.width,
                "entry_price": credit,
            }
        )
    schema = REGISTRY[TABLE].schema
    return pl.DataFrame(rows, schema=schema).with_columns(pl.col("created_at").cast(UTC_US))


def record_predictions(
    store: TableStore, entries: Sequence[tuple[Candidate, float]], *, created_at: datetime
) -> pl.DataFrame:
    """Insert the predictions (a strategy already predicted keeps its first row)."""
    frame = prediction_frame(entries, created_at=created_at)
    if frame.height:
        store.merge(TABLE, frame, update=False)
    return frame


__all__ = ["TABLE", "prediction_frame", "record_predictions"]
