"""What a backtest leaves behind: its closed trades and entry predictions, tagged with the
run and the hash of the configuration it ran with (the "historical" side of the nightly
variance analysis)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

import polars as pl

from core.book.ledger import TableStore
from core.book.trades import trades_from_store
from core.config import Settings
from core.domain.timezones import UTC_US

# The sections that decide what trades are made; broker, storage and schedules do not.
STRATEGY_SECTIONS = ("universe", "strategies", "rules", "limits", "analysis")


def config_hash(settings: Settings) -> str:
    """A short, stable fingerprint of the trading configuration."""
    payload = settings.model_dump(mode="json", include=set(STRATEGY_SECTIONS))
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def export_run(
    book: TableStore, target: TableStore, *, run_id: str, run_at: datetime, config: str
) -> tuple[int, int]:
    """Copy the simulated book's closed trades and predictions into the backtest tables.

    Idempotent (insert-only on the run's keys). Returns (trades, predictions) exported."""

    trades = trades_from_store(book)
    tag = {
        "run_id": pl.lit(run_id),
        "run_at": pl.lit(run_at).cast(UTC_US),
        "config_hash": pl.lit(config),
    }
    hist_trades = trades.with_columns(source=pl.lit("backtest"), **tag)
    predictions = book.read("predictions").collect().with_columns(**tag)
    target.merge("backtest_trades", hist_trades, update=False)
    target.merge("backtest_predictions", predictions, update=False)
    return hist_trades.height, predictions.height
