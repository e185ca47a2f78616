"""Builders for rules tests: a quiet strategy (no rule fires) varied one input at a time."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import polars as pl

from core.config import RuleSettings
from core.domain.timezones import UTC_US
from core.rules import SNAPSHOT_SCHEMA, evaluate

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)  # 10:00 New York
PIN_TIME = datetime(2026, 3, 2, 20, 0, tzinfo=UTC)  # 15:00 New York: pin risk's default start

# An iron condor where every rule is clear: 10% profit, 40 DTE, flat greeks, calm market.
QUIET: dict[str, Any] = {
    "strategy_id": "S1",
    "strategy_type": "iron_condor",
    "underlying": "SPY",
    "regime": "normal",
    "profit_pct": 10.0,
    "dte": 40,
    "net_delta": 0.0,
    "net_gamma": 0.01,
    "iv": 0.25,
    "entry_iv": 0.25,
    "iv_percentile": 50.0,
    "vix": 18.0,
    "entry_vix": 18.0,
    "underlying_move_1h_pct": 0.0,
    "stock_shares": 0,
    # nothing exposed to pin risk or early assignment
    "pin_distance_pct": math.inf,
    "dividend_cushion": math.inf,
    "dividend_days": math.inf,
    "put_extrinsic": math.inf,
}


def snapshot(*rows: dict[str, Any]) -> pl.DataFrame:
    return pl.DataFrame([{**QUIET, **r} for r in rows], schema=SNAPSHOT_SCHEMA)


def state(
    strategy_id: str = "S1",
    *,
    peak: float | None = None,
    entry_iv: float | None = None,
    entry_vix: float | None = None,
    reduced: bool = False,
) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "strategy_id": [strategy_id],
            "peak_profit_pct": [peak],
            "entry_iv": [entry_iv],
            "entry_vix": [entry_vix],
            "reduced": [reduced],
            "first_seen_at": [NOW],
            "updated_at": [NOW],
        },
        schema={
            "strategy_id": pl.String,
            "peak_profit_pct": pl.Float64,
            "entry_iv": pl.Float64,
            "entry_vix": pl.Float64,
            "reduced": pl.Boolean,
            "first_seen_at": UTC_US,
            "updated_at": UTC_US,
        },
    )


def decide(
    settings: RuleSettings | None = None,
    prior: pl.DataFrame | None = None,
    *,
    now: datetime = NOW,
    **overrides: Any,
) -> dict[str, Any]:
    """Evaluate one strategy (QUIET with `overrides`) at `now` and return its decision row."""
    out = evaluate(snapshot(overrides), settings or RuleSettings(), prior, now)
    assert out.height == 1
    return out.row(0, named=True)
