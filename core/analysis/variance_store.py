"""Store side of the variance analysis: what to read for a night, and how results are kept.

Kept apart from `variance.py` so the analysis stays pure (frames in, frames out) and this
file holds every decision about *which* rows make up each side:
- live = `trades` closed in the last `window_days` days, widened to the last
  `window_days` sessions with a live close up to as_of (`load_inputs`), with their
  `predictions`;
- historical = one backtest run (the one asked for, else the latest by `run_at`), with
  its predictions; the whole run, since a backtest's dates are simulated history.
Writes are idempotent merges keyed by run date, so re-running a night replaces it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import polars as pl

from core.analysis.variance import VarianceReport, latest_run_id, live_window
from core.analysis.weights import TABLE as WEIGHTS_TABLE
from core.analysis.weights import latest_weights
from core.domain.timezones import MARKET_TZ
from core.store.delta import DeltaStore, WriteResult

log = logging.getLogger(f"v6.{__name__}")

RESULTS_TABLE = "variance_results"


@dataclass(frozen=True)
class VarianceInputs:
    live_trades: pl.DataFrame
    live_predictions: pl.DataFrame
    hist_trades: pl.DataFrame
    hist_predictions: pl.DataFrame
    window_start: datetime
    window_end: datetime
    hist_run_id: str | None
    config_hash: str | None


class UnknownRunError(LookupError):
    """The backtest run asked for has no trades in the store."""


def market_date(as_of: datetime, timezone: str = MARKET_TZ.key) -> date:
    """The trading date a nightly run belongs to (market time, not UTC)."""
    return as_of.astimezone(ZoneInfo(timezone)).date()


def load_inputs(
    store: DeltaStore, *, as_of: datetime, window_days: int, hist_run_id: str | None = None
) -> VarianceInputs:
    """Both sides of tonight's comparison, read lazily and filtered in the scan.

    The live window follows the data: the last `window_days` calendar days up to `as_of`,
    widened back to take in the last `window_days` market sessions (New York dates) on
    which live trades closed, so a quiet month or a simulated book on its own dates is
    still compared (never "0 live trades" because the wall clock moved on)."""
    start, end = live_window(as_of, window_days)
    sessions = _sessions_start(store, end, window_days)
    start = start if sessions is None else min(start, sessions)
    closed = pl.col("closed_at")
    live = store.read("trades", where=(closed > start) & (closed <= end)).collect()
    live_pred = (
        store.read("predictions")
        .join(live.lazy().select("strategy_id").unique(), on="strategy_id", how="semi")
        .collect()
    )
    bt = store.read("backtest_trades")
    run_id = hist_run_id or latest_run_id(bt)
    if run_id is None:
        log.warning("no backtest run in the store: the historical side is empty")
        hist = bt.head(0).collect()
    else:
        hist = bt.filter(pl.col("run_id") == run_id).collect()
        if hist.is_empty():
            raise UnknownRunError(
                f"backtest run '{run_id}' has no trades in backtest_trades; pass an existing "
                "run_id (or none for the latest run)"
            )
    same_run = pl.col("run_id") == run_id if run_id is not None else pl.lit(False)
    hist_pred = store.read("backtest_predictions", where=same_run).collect()
    hashes = hist.get_column("config_hash").unique().sort().to_list() if hist.height else []
    if len(hashes) > 1:
        log.warning("backtest run %s carries several config hashes %s", run_id, hashes)
    return VarianceInputs(
        live_trades=live,
        live_predictions=live_pred,
        hist_trades=hist,
        hist_predictions=hist_pred,
        window_start=start,
        window_end=end,
        hist_run_id=run_id,
        config_hash=",".join(hashes) or None,
    )


def _sessions_start(store: DeltaStore, end: datetime, sessions: int) -> datetime | None:
    """Just before the first of the last `sessions` market dates with a live close <= end."""
    day = pl.col("closed_at").dt.convert_time_zone(str(MARKET_TZ)).dt.date()
    dates = (
        store.read("trades", where=pl.col("closed_at") <= end, columns=["closed_at"])
        .select(day.unique().sort().tail(sessions).min().alias("first"))
        .collect()
        .item()
    )
    if not isinstance(dates, date):
        return None
    midnight = datetime.combine(dates, time(0), tzinfo=MARKET_TZ).astimezone(UTC)
    return midnight - timedelta(microseconds=1)  # the window is (start, end]


def save_results(store: DeltaStore, report: VarianceReport) -> WriteResult:
    """One commit: tonight's rows replace a previous run of the same night."""
    return store.merge(RESULTS_TABLE, report.results)


def previous_weights(store: DeltaStore, run_date: date) -> dict[str, float]:
    """The weights in force before `run_date` (so a re-run of a night does not step twice)."""
    return latest_weights(store.read(WEIGHTS_TABLE), before=run_date)


def save_weights(store: DeltaStore, weights: pl.DataFrame) -> WriteResult:
    return store.merge(WEIGHTS_TABLE, weights)
