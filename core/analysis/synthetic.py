"""Synthetic closed trades and predictions, valid for the `trades`/`backtest_*` tables.

For tests, the variance benchmark and demos: a known distribution (optionally shifted)
lets a test say exactly which metric must drift. Vectorised; a million rows take well
under a second.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from core.domain.strategies import StrategyType
from core.domain.timezones import UTC_US

STRATEGY_TYPES = tuple(
    t.value
    for t in (StrategyType.IRON_CONDOR, StrategyType.BULL_PUT_SPREAD, StrategyType.BEAR_CALL_SPREAD)
)
REGIMES = ("low_vol", "normal", "high_vol", "trending", "range_bound", "crash")
UNDERLYINGS = ("SPY", "QQQ", "IWM")
WIN_EXITS = ("profit_target", "partial_take_profit", "iv_crush", "time_exit")
LOSS_EXITS = ("stop_loss", "delta_breach", "catastrophe", "gamma_risk")


def synthetic_trades(
    n: int,
    *,
    seed: int = 0,
    source: str = "live",
    end: datetime | None = None,
    days: int = 30,
    strategy_types: Sequence[str] = STRATEGY_TYPES,
    regimes: Sequence[str] = REGIMES,
    win_prob: float = 0.70,
    pnl_pct_shift: float = 0.0,
    holding_scale: float = 1.0,
    run_id: str = "BT-SYNTH",
    run_at: datetime | None = None,
    config_hash: str = "synthetic",
    id_prefix: str = "",
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(trades, predictions) for `n` closed trades spread over `days` days before `end`.

    `source="live"` yields rows for `trades`/`predictions`; `"backtest"` adds run_id,
    run_at and config_hash for `backtest_trades`/`backtest_predictions`. `pnl_pct_shift`
    moves every P&L % (and the P&L) by that many points; `win_prob` sets the share of
    winners; `holding_scale` stretches holding times.
    """
    if source not in ("live", "backtest"):
        raise ValueError(f"source must be 'live' or 'backtest', got {source!r}")
    rng = np.random.default_rng(seed)
    end = end or datetime(2026, 3, 31, 21, 0, tzinfo=UTC)
    winner = rng.random(n) < win_prob
    pnl_pct = (
        np.where(
            winner, rng.normal(60.0, 15.0, n).clip(5, 100), -rng.gamma(2.0, 60.0, n).clip(5, 400)
        )
        + pnl_pct_shift
    )
    credit = np.round(rng.uniform(0.8, 2.5, n), 2)
    quantity = rng.integers(1, 4, n)
    pnl = np.round(pnl_pct / 100.0 * credit * 100.0 * quantity - 1.3 * quantity, 2)
    exit_debit = np.round(credit * (1.0 - pnl_pct / 100.0), 2)
    exits = np.where(
        winner,
        np.asarray(WIN_EXITS)[rng.integers(0, len(WIN_EXITS), n)],
        np.asarray(LOSS_EXITS)[rng.integers(0, len(LOSS_EXITS), n)],
    )
    holding = rng.gamma(2.0, 6.0, n) * holding_scale
    closed_us = (end.timestamp() - rng.random(n) * days * 86400.0) * 1e6
    opened_us = closed_us - holding * 86400e6
    slippage = rng.normal(0.02, 0.02, n)
    slip_known = rng.random(n) > 0.05
    stype = np.asarray(strategy_types)[rng.integers(0, len(strategy_types), n)]
    regime = np.asarray(regimes)[rng.integers(0, len(regimes), n)]
    under = np.asarray(UNDERLYINGS)[rng.integers(0, len(UNDERLYINGS), n)]
    ids = pl.int_range(0, n, eager=True).cast(pl.String)
    prefix = id_prefix or ("L" if source == "live" else "B")

    trades = pl.DataFrame(
        {
            "trade_id": (f"{prefix}T-" + ids).alias("trade_id"),
            "strategy_id": (f"{prefix}S-" + ids).alias("strategy_id"),
            "strategy_type": stype,
            "underlying": under,
            "regime": regime,
            "opened_at": pl.Series(opened_us.astype(np.int64)).cast(UTC_US),
            "closed_at": pl.Series(closed_us.astype(np.int64)).cast(UTC_US),
            "holding_days": holding,
            "quantity": quantity.astype(np.int64),
            "entry_credit": credit,
            "exit_debit": exit_debit,
            "pnl": pnl,
            "pnl_pct": pnl_pct,
            "exit_reason": exits,
            "slippage_vs_mid": pl.Series(slippage).set(pl.Series(~slip_known), None),
            "source": [source] * n,
        }
    )
    expected = rng.normal(20.0, 10.0, n)
    prob = np.clip(win_prob + rng.normal(0.0, 0.05, n), 0.01, 0.99)
    predictions = pl.DataFrame(
        {
            "strategy_id": trades.get_column("strategy_id"),
            "strategy_type": stype,
            "underlying": under,
            "regime": regime,
            "created_at": trades.get_column("opened_at"),
            "expected_return_pct": expected,
            "prob_profit": prob,
            "score": rng.random(n),
            "iv_rank": rng.uniform(0, 100, n),
            "skew": rng.normal(0.03, 0.01, n),
            "dte": rng.integers(35, 61, n).astype(np.int64),
            "width": np.full(n, 5.0),
            "entry_price": credit,
        }
    )
    if source == "backtest":
        at = run_at or end + timedelta(hours=1)
        run = {
            "run_id": pl.lit(run_id),
            "run_at": pl.lit(at).cast(UTC_US),
            "config_hash": pl.lit(config_hash),
        }
        trades = trades.with_columns(**run)
        predictions = predictions.with_columns(**run)
    return trades, predictions
