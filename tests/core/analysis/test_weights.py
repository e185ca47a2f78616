"""Strategy-type weights: always within bounds, cut on underperformance, slow to recover."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from core.analysis.synthetic import synthetic_trades
from core.analysis.variance import analyse
from core.analysis.weights import (
    WeightPolicy,
    latest_weights,
    read_strategy_weights,
    step_weights,
    update_weights,
)
from core.config import AnalysisSettings
from core.store import REGISTRY, DeltaStore
from core.store.validation import prepare

SETTINGS = AnalysisSettings(bootstrap_samples=200)
RUN_DATE = date(2026, 3, 31)
AS_OF = datetime(2026, 3, 31, 22, 30, tzinfo=UTC)
TYPES = ("iron_condor", "bull_put_spread", "bear_call_spread")


@st.composite
def policies(draw: st.DrawFn) -> WeightPolicy:
    lo = draw(st.floats(0.01, 5.0))
    hi = draw(st.floats(lo, 10.0))
    return WeightPolicy(lo, hi, draw(st.floats(1e-3, 20.0)), draw(st.floats(1e-3, 20.0)))


weights_in = arrays(
    np.float64,
    8,
    elements=st.one_of(st.floats(-1e9, 1e9), st.just(np.nan), st.just(0.0), st.just(1e300)),
)
flags = arrays(np.bool_, 8)


@settings(max_examples=300, deadline=None)
@given(policy=policies(), prev=weights_in, under=flags, enough=flags)
def test_weights_stay_within_bounds_and_move_at_most_one_step(
    policy: WeightPolicy, prev: np.ndarray, under: np.ndarray, enough: np.ndarray
) -> None:
    new, action = step_weights(prev, under, enough, policy)
    assert np.isfinite(new).all()
    assert (new >= policy.weight_min).all() and (new <= policy.weight_max).all()
    start = np.clip(
        np.nan_to_num(prev, nan=policy.weight_max), policy.weight_min, policy.weight_max
    )
    eps = 1e-9 * max(1.0, policy.weight_max)
    # Direction: cut never raises, recovery never lowers, no evidence never moves.
    assert (new[enough & under] <= start[enough & under] + eps).all()
    assert (new[enough & ~under] >= start[enough & ~under] - eps).all()
    np.testing.assert_array_equal(new[~enough], start[~enough])
    # Rate limit per night.
    assert (start - new <= policy.step_down + eps).all()
    assert (new - start <= policy.step_up + eps).all()
    assert set(action[~enough]) <= {"insufficient"}
    assert set(action[enough & under]) <= {"cut"}


def test_repeated_bad_nights_walk_down_to_the_floor_and_good_nights_back_up() -> None:
    policy = WeightPolicy(0.5, 1.0, 0.1, 0.05)
    w = np.array([1.0])
    seen = []
    for _ in range(8):
        w, _ = step_weights(w, np.array([True]), np.array([True]), policy)
        seen.append(float(w[0]))
    assert seen[:5] == pytest.approx([0.9, 0.8, 0.7, 0.6, 0.5])
    assert seen[-1] == 0.5
    for _ in range(20):
        w, action = step_weights(w, np.array([False]), np.array([True]), policy)
    assert float(w[0]) == 1.0 and action[0] == "hold"


def test_policy_rejects_inverted_bounds() -> None:
    with pytest.raises(ValueError, match=r"weight_min \(0.9\).*weight_max \(0.5\)"):
        WeightPolicy(0.9, 0.5)


@pytest.fixture(scope="module")
def hist() -> tuple[pl.DataFrame, pl.DataFrame]:
    return synthetic_trades(4000, seed=2, source="backtest")


def weights_after(
    live: tuple[pl.DataFrame, pl.DataFrame],
    hist: tuple[pl.DataFrame, pl.DataFrame],
    previous: dict[str, float],
) -> pl.DataFrame:
    report = analyse(live[0], hist[0], live[1], hist[1], settings=SETTINGS, run_date=RUN_DATE)
    out = update_weights(
        report.results,
        previous,
        settings=SETTINGS,
        run_date=RUN_DATE,
        as_of=AS_OF,
        strategy_types=TYPES,
    )
    prepare(REGISTRY["strategy_weights"], out)  # a valid strategy_weights batch
    return out


def by_type(frame: pl.DataFrame) -> dict[str, dict]:
    return {r["strategy_type"]: r for r in frame.iter_rows(named=True)}


def test_underperforming_live_trades_cut_the_weight(hist) -> None:
    live = synthetic_trades(1200, seed=5, pnl_pct_shift=-40.0, win_prob=0.5)
    rows = by_type(weights_after(live, hist, {"iron_condor": 0.55}))
    for t in TYPES:
        assert rows[t]["action"] == "cut"
        assert rows[t]["pnl_pct_diff"] < 0 and rows[t]["win_rate_diff"] < 0
        assert rows[t]["p_value"] < SETTINGS.significance
    assert rows["bull_put_spread"]["weight"] == pytest.approx(0.9)
    assert rows["iron_condor"]["weight"] == pytest.approx(0.5)  # floor, not below
    evidence = json.loads(rows["bull_put_spread"]["evidence"])
    assert evidence["rule"].startswith("live significantly below history on mean pnl_pct")
    assert evidence["pnl_pct"]["drift"] is True


def test_no_underperformance_recovers_toward_the_maximum(hist) -> None:
    live = synthetic_trades(1200, seed=6)
    rows = by_type(weights_after(live, hist, {"iron_condor": 0.6, "bull_put_spread": 0.98}))
    assert rows["iron_condor"]["action"] == "recover"
    assert rows["iron_condor"]["weight"] == pytest.approx(0.65)
    assert rows["bull_put_spread"]["weight"] == pytest.approx(1.0)  # capped at weight_max
    assert rows["bear_call_spread"]["action"] == "hold"
    assert rows["bear_call_spread"]["weight"] == 1.0


def test_outperforming_live_trades_do_not_cut(hist) -> None:
    live = synthetic_trades(1200, seed=7, pnl_pct_shift=+30.0, win_prob=0.9)
    rows = by_type(weights_after(live, hist, {"iron_condor": 0.7}))
    assert rows["iron_condor"]["action"] == "recover"
    assert rows["iron_condor"]["weight"] == pytest.approx(0.75)


def test_insufficient_data_keeps_the_previous_weight(hist) -> None:
    live = synthetic_trades(5, seed=8, pnl_pct_shift=-80.0)
    rows = by_type(weights_after(live, hist, {"iron_condor": 0.7, "retired_type": 0.6}))
    for t in (*TYPES, "retired_type"):
        assert rows[t]["action"] == "insufficient"
        assert rows[t]["p_value"] is None and rows[t]["pnl_pct_diff"] is None
    assert rows["iron_condor"]["weight"] == 0.7
    assert rows["retired_type"]["weight"] == 0.6  # no trades at all: kept
    assert rows["bull_put_spread"]["weight"] == 1.0  # never weighted: default
    assert "insufficient data, n=" in json.loads(rows["iron_condor"]["evidence"])["rule"]


def test_latest_weights_and_the_entry_pipeline_reader(store_root: Path) -> None:
    store = DeltaStore(store_root)
    assert read_strategy_weights(store, TYPES) == dict.fromkeys(TYPES, 1.0)

    def night(day: int, weight: float) -> pl.DataFrame:
        example = REGISTRY["strategy_weights"].example()
        return example.with_columns(
            run_date=pl.lit(date(2026, 3, day)),
            weight=pl.lit(weight),
            as_of=pl.lit(datetime(2026, 3, day, 22, 30, tzinfo=UTC)).cast(example["as_of"].dtype),
        )

    store.merge("strategy_weights", pl.concat([night(19, 0.9), night(20, 0.8)]))
    assert read_strategy_weights(store, TYPES) == {
        "iron_condor": 0.8,
        "bull_put_spread": 1.0,
        "bear_call_spread": 1.0,
    }
    frame = store.read("strategy_weights").collect()
    assert latest_weights(frame, before=date(2026, 3, 20)) == {"iron_condor": 0.9}
    assert latest_weights(frame.head(0)) == {}
