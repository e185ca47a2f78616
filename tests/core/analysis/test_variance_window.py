"""The live side of the variance analysis follows the data: the last N days, widened back to
the last N market sessions with a live close, however long ago the wall clock puts them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from core.analysis.variance_store import load_inputs
from core.store import REGISTRY, DeltaStore


def seed(root: Path) -> DeltaStore:
    store = DeltaStore(str(root))
    ex = REGISTRY["trades"].example()
    ts = ex["closed_at"].dtype
    closes = {  # New York dates 2 March (twice) and 3 March 2026
        "T-1": datetime(2026, 3, 2, 15, tzinfo=UTC),
        "T-2": datetime(2026, 3, 2, 20, tzinfo=UTC),
        "T-3": datetime(2026, 3, 3, 20, tzinfo=UTC),
    }
    store.merge(
        "trades",
        pl.concat(
            ex.with_columns(
                trade_id=pl.lit(t), strategy_id=pl.lit(f"S-{t}"), closed_at=pl.lit(at).cast(ts)
            )
            for t, at in closes.items()
        ),
    )
    return store


def ids(store: DeltaStore, as_of: datetime, window: int) -> list[str]:
    got = load_inputs(store, as_of=as_of, window_days=window)
    assert got.window_end == as_of
    return sorted(got.live_trades.get_column("trade_id").to_list())


def test_window_counts_sessions_with_trades_not_wall_clock_days(store_root: Path) -> None:
    store = seed(store_root)
    months_later = datetime(2026, 12, 7, 21, tzinfo=UTC)
    assert ids(store, months_later, 30) == ["T-1", "T-2", "T-3"]
    assert ids(store, months_later, 1) == ["T-3"]  # the last session only
    assert ids(store, months_later, 2) == ["T-1", "T-2", "T-3"]
    # what closed after as_of is never in it
    assert ids(store, datetime(2026, 3, 2, 21, tzinfo=UTC), 30) == ["T-1", "T-2"]


def test_no_live_trade_falls_back_to_calendar_days(store_root: Path) -> None:
    as_of = datetime(2026, 3, 31, 22, tzinfo=UTC)
    got = load_inputs(DeltaStore(str(store_root)), as_of=as_of, window_days=30)
    assert got.live_trades.is_empty()
    assert got.window_start == as_of - timedelta(days=30)
