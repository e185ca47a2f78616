"""The vectorised engine decides exactly like the per-strategy reference loop (same audit
record: decision, missing inputs, suppressed rules, derived values).

Random snapshots with every input drawn at, just around, or away from its thresholds, with
nulls, NaN and infinities mixed in, and a remembered state for some strategies.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, time

import numpy as np
import polars as pl
import pytest
from rules_helpers import NOW
from rules_reference import compare, evaluate_loop

from core.config import RuleSettings
from core.domain.strategies import StrategyType
from core.domain.timezones import UTC_US
from core.rules import RULE_NAMES, evaluate, normalize_snapshot

TYPES = [t.value for t in StrategyType]
REGIMES = ["crash", "high_vol", "normal", "low_vol", "trending", "range_bound", "unknown", None]


def _values(rng: np.random.Generator, n: int, edges: list[float], lo: float, hi: float) -> list:
    near = np.array([e + d for e in edges for d in (-0.01, 0.0, 0.01)])
    out = np.where(rng.random(n) < 0.5, rng.uniform(lo, hi, n), rng.choice(near, n))
    roll = rng.random(n)
    vals: list = out.tolist()
    for i in np.flatnonzero(roll < 0.04):
        vals[i] = [None, float("nan"), float("inf")][i % 3]
    return vals


def random_book(n: int, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    days = rng.integers(0, 50, n)
    dte = [None if r < 0.03 else int(d) for r, d in zip(rng.random(n), days, strict=True)]
    entry_iv = rng.uniform(0.1, 0.4, n)
    iv_change = np.array(_values(rng, n, [-30.0, 50.0], -60.0, 90.0), dtype=float)
    snap = pl.DataFrame(
        {
            "strategy_id": [f"S{i}" for i in range(n)],
            "strategy_type": rng.choice(TYPES, n).tolist(),
            "regime": [REGIMES[i] for i in rng.integers(0, len(REGIMES), n)],
            "profit_pct": _values(rng, n, [-200, -50, 20, 40, 50, 80, 85, 90], -250, 100),
            "dte": dte,
            "net_delta": _values(rng, n, [-0.4, -0.3, 0.3, 0.4], -0.6, 0.6),
            "net_gamma": _values(rng, n, [-0.1, 0.1], -0.2, 0.2),
            "iv": (entry_iv * (1 + iv_change / 100)).tolist(),
            "entry_iv": np.where(rng.random(n) < 0.6, entry_iv, np.nan).tolist(),
            "iv_percentile": _values(rng, n, [30.0], 0, 100),
            "vix": _values(rng, n, [35.0], 10, 45),
            "entry_vix": _values(rng, n, [25.0, 30.0], 10, 35),
            "underlying_move_1h_pct": _values(rng, n, [-3.0], -6, 3),
            # mostly none; some delivered stock (assignment/exercise), a few unknown
            "stock_shares": [
                None if r < 0.02 else 0 if r > 0.06 else int(rng.choice([-100, 100, 200]))
                for r in rng.random(n)
            ],
            # exposures: mostly none (+inf), else around the thresholds (NaN/inf mixed in)
            **{
                name: [v if r < 0.3 else math.inf for r, v in zip(rng.random(n), vals, strict=True)]
                for name, vals in (
                    ("pin_distance_pct", _values(rng, n, [1.0], 0, 3)),
                    ("dividend_cushion", _values(rng, n, [0.0], -0.5, 0.5)),
                    ("dividend_days", _values(rng, n, [5.0], 1, 10)),
                    ("put_extrinsic", _values(rng, n, [0.05], 0, 0.5)),
                )
            },
        },
        schema_overrides={"dte": pl.Int64, "regime": pl.String, "stock_shares": pl.Int64},
        strict=False,
    )
    # A third of the book is calm except for DTE and gamma, so the late rules (roll, gamma,
    # time exit) get to decide too, not only the first rule that random inputs trip.
    calm = pl.Series(rng.random(n) < 0.3)
    quiet = {"profit_pct": 10.0, "net_delta": 0.0, "iv_percentile": 50.0,
             "vix": 18.0, "entry_vix": 18.0, "underlying_move_1h_pct": 0.0}  # fmt: skip
    snap = snap.with_columns(
        *[pl.when(calm).then(pl.lit(v)).otherwise(pl.col(k)).alias(k) for k, v in quiet.items()],
        pl.when(calm).then(pl.col("entry_iv").fill_nan(0.2)).otherwise(pl.col("iv")).alias("iv"),
        pl.when(calm).then(pl.col("entry_iv").fill_nan(0.2)).otherwise(pl.col("entry_iv")),
    )
    has = rng.random(n) < 0.5
    memory = pl.DataFrame(
        {
            "strategy_id": snap["strategy_id"],
            "peak_profit_pct": _values(rng, n, [40.0, 50.0], -20, 95),
            "entry_iv": np.where(rng.random(n) < 0.7, entry_iv, np.nan).tolist(),
            "entry_vix": np.where(rng.random(n) < 0.7, 18.0, np.nan).tolist(),
            "reduced": (rng.random(n) < 0.3).tolist(),
            "first_seen_at": [NOW] * n,
            "updated_at": [NOW] * n,
        },
        strict=False,
    ).with_columns(
        pl.col("first_seen_at", "updated_at").cast(UTC_US),
        pl.col("peak_profit_pct", "entry_iv", "entry_vix").fill_nan(None),
    )
    memory = memory.with_columns(
        pl.when(pl.col("peak_profit_pct").is_finite()).then(pl.col("peak_profit_pct"))
    ).filter(pl.Series(has))
    # A tenth of the book is in its last days with a calm market (profit and greeks as
    # drawn), so missing data meets the time exit rather than an early rule.
    last = pl.Series(rng.random(n) < 0.1) & snap["dte"].is_not_null()
    market = {k: v for k, v in quiet.items() if k not in ("profit_pct", "net_delta")}
    snap = snap.with_columns(
        *[pl.when(last).then(pl.lit(v)).otherwise(pl.col(k)).alias(k) for k, v in market.items()],
        pl.when(last).then(pl.col("entry_iv").fill_nan(0.2)).otherwise(pl.col("iv")).alias("iv"),
        pl.when(last).then(pl.col("entry_iv").fill_nan(0.2)).otherwise(pl.col("entry_iv")),
        pl.when(last).then(pl.Series(rng.integers(0, 4, n))).otherwise(pl.col("dte")).alias("dte"),
    )
    return snap, memory


# 15:00 New York (pin risk from 15:00 by default: the threshold itself), and 14:30
PIN_TIME = datetime(2026, 3, 2, 20, 0, tzinfo=UTC)
EARLIER = datetime(2026, 3, 2, 19, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    "settings",
    [
        RuleSettings(),
        RuleSettings(disabled=["dte_roll", "trailing_stop", "catastrophe", "pin_risk"]),
        RuleSettings(
            profit_target_pct={"crash": 30.0, "low_vol": 95.0},
            profit_target_fallback_pct=60.0,
            time_exit_dte=3,
            gamma_max_dte=30,
            pin_risk_from=time(14, 30),
            pin_risk_distance_pct=0.5,
            dividend_window_days=2,
            put_extrinsic_floor=0.2,
            put_assignment_dte=10,
        ),
    ],
    ids=["defaults", "some-disabled", "other-thresholds"],
)
def test_engine_matches_the_reference_loop(settings: RuleSettings) -> None:
    snap, memory = random_book(4000, seed=11)
    now = EARLIER if settings.pin_risk_from < time(15, 0) else PIN_TIME
    got = evaluate(snap, settings, memory, now)
    rows = normalize_snapshot(snap).to_dicts()
    memo = {r["strategy_id"]: r for r in memory.to_dicts()}
    want = evaluate_loop(rows, settings, memo, now=now)
    diff = compare(got, want)
    assert got.height == len(want) == 4000
    assert diff.is_empty(), f"{diff.height} strategies differ, e.g.\n{diff.head(5)}"
    # The sample really exercises every outcome (and every enabled rule).
    rolls = set() if "dte_roll" in settings.disabled else {"ROLL"}
    assert set(got["action"]) == {"HOLD", "CLOSE", "REDUCE", "NO_DATA", *rolls}
    assert set(got["rule"].drop_nulls()) == set(RULE_NAMES) - set(settings.disabled)
    # ... including both ways an undecided rule still closes (see the engine's docstring)
    closed_anyway = got.filter(pl.col("reason").str.contains("closed although missing"))
    assert set(closed_anyway["action"]) == {"CLOSE"}
    assert closed_anyway["missing_inputs"].null_count() == 0
    assert closed_anyway["reason"].str.contains("every outcome").sum() > 0
    assert closed_anyway["reason"].str.contains("the time exit applies").sum() > 0


def test_pin_risk_waits_for_its_time_in_the_reference_too() -> None:
    """Before `pin_risk_from` neither the engine nor the loop closes for pin risk."""
    snap, memory = random_book(1000, seed=5)
    early = datetime(2026, 3, 2, 19, 59, 59, tzinfo=UTC)  # 14:59:59 New York
    got = evaluate(snap, RuleSettings(), memory, early)
    memo = {r["strategy_id"]: r for r in memory.to_dicts()}
    want = evaluate_loop(normalize_snapshot(snap).to_dicts(), RuleSettings(), memo, now=early)
    assert compare(got, want).is_empty()
    assert "pin_risk" not in set(got.filter(pl.col("action") == "CLOSE")["rule"])
