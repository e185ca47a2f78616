"""Bounded strategy-type weights: how much candidate scoring should trust each strategy type.

Feedback from the nightly variance analysis into entries, deliberately slow and bounded:
- a type whose live trades significantly underperform history (drift flagged on mean
  P&L % or win rate with live below historical, or on the P&L % distribution (KS) with
  the live median below historical) is cut by `weight_step_down` per night;
- otherwise it recovers toward `weight_max` by at most `weight_step_up` per night;
- with too few trades (live or historical) it keeps its previous weight: no evidence,
  no move;
- the weight always stays within [weight_min, weight_max] (a previous weight outside
  the bounds, e.g. after a config change, is first clipped into them).
Every row records the numbers that moved it, so the owner can audit each change.

The entry pipeline reads the latest weight per type with `read_strategy_weights`
(1.0 when a type has none).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import numpy as np
import polars as pl

from core.config import AnalysisSettings
from core.domain.timezones import UTC_US
from core.store.delta import DeltaStore
from core.store.schemas.analysis import INSUFFICIENT

ALL = "ALL"
DEFAULT_WEIGHT = 1.0
TABLE = "strategy_weights"

WEIGHT_SCHEMA = pl.Schema(
    {
        "run_date": pl.Date(),
        "as_of": UTC_US,
        "strategy_type": pl.String(),
        "weight": pl.Float64(),
        "previous_weight": pl.Float64(),
        "action": pl.String(),
        "n_live": pl.Int64(),
        "n_hist": pl.Int64(),
        "pnl_pct_diff": pl.Float64(),
        "win_rate_diff": pl.Float64(),
        "p_value": pl.Float64(),
        "evidence": pl.String(),
    }
)


@dataclass(frozen=True)
class WeightPolicy:
    weight_min: float = 0.5
    weight_max: float = 1.0
    step_down: float = 0.1
    step_up: float = 0.05

    def __post_init__(self) -> None:
        if not 0 < self.weight_min <= self.weight_max:
            raise ValueError(
                f"analysis.weight_min ({self.weight_min}) must be > 0 and <= analysis.weight_max "
                f"({self.weight_max}); fix the bounds in the config"
            )
        if self.step_down <= 0 or self.step_up <= 0:
            raise ValueError(
                f"analysis.weight_step_down ({self.step_down}) and weight_step_up "
                f"({self.step_up}) must be > 0"
            )

    @classmethod
    def from_settings(cls, settings: AnalysisSettings) -> WeightPolicy:
        return cls(
            settings.weight_min,
            settings.weight_max,
            settings.weight_step_down,
            settings.weight_step_up,
        )


def step_weights(
    previous: np.ndarray,
    underperforming: np.ndarray,
    sufficient: np.ndarray,
    policy: WeightPolicy,
) -> tuple[np.ndarray, np.ndarray]:
    """(new weights, actions) for arrays of types; every new weight lies within the bounds."""
    lo, hi = policy.weight_min, policy.weight_max
    prev = np.clip(np.nan_to_num(np.asarray(previous, dtype=float), nan=hi), lo, hi)
    under = np.asarray(underperforming, dtype=bool)
    enough = np.asarray(sufficient, dtype=bool)
    cut = np.clip(prev - policy.step_down, lo, hi)
    rec = np.clip(prev + policy.step_up, lo, hi)
    new = np.where(enough, np.where(under, cut, rec), prev)
    action = np.where(
        ~enough, "insufficient", np.where(under, "cut", np.where(rec > prev, "recover", "hold"))
    )
    return new, action


def update_weights(
    results: pl.DataFrame,
    previous: Mapping[str, float],
    *,
    settings: AnalysisSettings,
    run_date: date,
    as_of: datetime,
    strategy_types: Iterable[str] = (),
) -> pl.DataFrame:
    """Tonight's `strategy_weights` rows from the variance results and the last weights.

    Evidence comes from the per-type cells (regime "ALL"): the Welch test of mean P&L %,
    the chi-square test of win rate and the KS test of P&L %, as flagged (Holm-adjusted)
    by the analysis; the live-minus-historical sign says which way.
    """
    policy = WeightPolicy.from_settings(settings)
    evidence = _evidence(results)
    types = sorted(
        set(evidence.get_column("strategy_type").to_list()) | set(previous) | set(strategy_types)
    )
    ev = pl.DataFrame({"strategy_type": types}, schema={"strategy_type": pl.String}).join(
        evidence, on="strategy_type", how="left"
    )
    sufficient = ev.get_column("sufficient").fill_null(False).to_numpy()
    pnl_diff = ev.get_column("pnl_pct_diff").to_numpy()
    win_diff = ev.get_column("win_rate_diff").to_numpy()
    pnl_bad = ev.get_column("pnl_drift").fill_null(False).to_numpy() & (
        np.nan_to_num(pnl_diff.astype(float), nan=0.0) < 0
    )
    win_bad = ev.get_column("win_drift").fill_null(False).to_numpy() & (
        np.nan_to_num(win_diff.astype(float), nan=0.0) < 0
    )
    # The whole P&L % distribution shifted (KS) with the live median below history.
    dist_bad = ev.get_column("ks_drift").fill_null(False).to_numpy() & (
        np.nan_to_num(ev.get_column("median_diff").to_numpy().astype(float), nan=0.0) < 0
    )
    prev = np.array([previous.get(t, DEFAULT_WEIGHT) for t in types], dtype=float)
    new, action = step_weights(prev, pnl_bad | win_bad | dist_bad, sufficient, policy)
    prev_clipped = np.clip(prev, policy.weight_min, policy.weight_max)

    records: list[dict[str, Any]] = []
    for i, row in enumerate(ev.iter_rows(named=True)):
        records.append(
            {
                "strategy_type": row["strategy_type"],
                "weight": float(new[i]),
                "previous_weight": float(prev_clipped[i]),
                "action": str(action[i]),
                "n_live": int(row["n_live"] or 0),
                "n_hist": int(row["n_hist"] or 0),
                "pnl_pct_diff": row["pnl_pct_diff"] if sufficient[i] else None,
                "win_rate_diff": row["win_rate_diff"] if sufficient[i] else None,
                "p_value": _min_p(row) if sufficient[i] else None,
                "evidence": json.dumps(
                    _explain(
                        row,
                        str(action[i]),
                        float(prev[i]),
                        float(new[i]),
                        {
                            "mean pnl_pct": bool(pnl_bad[i]),
                            "win rate": bool(win_bad[i]),
                            "pnl_pct distribution (KS, lower median)": bool(dist_bad[i]),
                        },
                        policy,
                    ),
                    sort_keys=True,
                    default=str,
                ),
            }
        )
    frame = pl.DataFrame(
        records, schema={k: v for k, v in WEIGHT_SCHEMA.items() if k not in ("run_date", "as_of")}
    )
    return frame.with_columns(
        run_date=pl.lit(run_date, pl.Date), as_of=pl.lit(as_of).cast(UTC_US)
    ).select(WEIGHT_SCHEMA.names())


def _evidence(results: pl.DataFrame) -> pl.DataFrame:
    """Per strategy type: n, live-minus-hist differences, drift flags, adjusted p-values."""
    c = pl.col
    per_type = results.filter((c("regime") == ALL) & (c("strategy_type") != ALL))
    pnl = per_type.filter((c("metric") == "pnl_pct") & (c("test") == "welch_t")).select(
        "strategy_type",
        "n_live",
        "n_hist",
        sufficient=~c("status").str.starts_with(INSUFFICIENT),
        status=c("status"),
        pnl_pct_live=c("live_value"),
        pnl_pct_hist=c("hist_value"),
        pnl_pct_diff=c("live_value") - c("hist_value"),
        pnl_drift=c("drift"),
        pnl_p=c("p_adjusted"),
    )
    win = per_type.filter((c("metric") == "win_rate") & (c("test") == "chi2")).select(
        "strategy_type",
        win_rate_live=c("live_value"),
        win_rate_hist=c("hist_value"),
        win_rate_diff=c("live_value") - c("hist_value"),
        win_drift=c("drift"),
        win_p=c("p_adjusted"),
    )
    ks = per_type.filter((c("metric") == "pnl_pct") & (c("test") == "ks")).select(
        "strategy_type",
        median_diff=c("live_value") - c("hist_value"),
        ks_drift=c("drift"),
        ks_p=c("p_adjusted"),
    )
    return pnl.join(win, on="strategy_type", how="full", coalesce=True).join(
        ks, on="strategy_type", how="full", coalesce=True
    )


def _min_p(row: Mapping[str, Any]) -> float | None:
    ps = [p for p in (row.get("pnl_p"), row.get("win_p"), row.get("ks_p")) if p is not None]
    return min(ps) if ps else None


def _explain(
    row: Mapping[str, Any],
    action: str,
    prev: float,
    new: float,
    reasons: Mapping[str, bool],
    policy: WeightPolicy,
) -> dict[str, Any]:
    rule = {
        "cut": "live significantly below history on "
        + " and ".join(name for name, bad in reasons.items() if bad),
        "recover": "no significant underperformance: recovering toward weight_max",
        "hold": "no significant underperformance: at weight_max",
        "insufficient": f"{row.get('status') or 'insufficient data, n=0'}: weight kept",
    }[action]
    if action == "cut" and new == prev:
        rule += " (already at weight_min)"
    return {
        "rule": rule,
        "bounds": [policy.weight_min, policy.weight_max],
        "steps": {"down": policy.step_down, "up": policy.step_up},
        "previous_weight_stored": prev,
        "n_live": row.get("n_live"),
        "n_hist": row.get("n_hist"),
        "pnl_pct": {
            "live": row.get("pnl_pct_live"),
            "hist": row.get("pnl_pct_hist"),
            "p_adjusted": row.get("pnl_p"),
            "drift": row.get("pnl_drift"),
        },
        "win_rate": {
            "live": row.get("win_rate_live"),
            "hist": row.get("win_rate_hist"),
            "p_adjusted": row.get("win_p"),
            "drift": row.get("win_drift"),
        },
        "pnl_pct_distribution": {
            "median_diff": row.get("median_diff"),
            "p_adjusted": row.get("ks_p"),
            "drift": row.get("ks_drift"),
        },
    }


# -- reading -------------------------------------------------------------------------------


def latest_weights(
    weights: pl.DataFrame | pl.LazyFrame, *, before: date | None = None
) -> dict[str, float]:
    """The most recent weight per strategy type (optionally only rows before a run date)."""
    lf = weights.lazy()
    if before is not None:
        lf = lf.filter(pl.col("run_date") < before)
    latest = (
        lf.sort(["run_date", "as_of"])
        .group_by("strategy_type")
        .agg(pl.col("weight").last())
        .collect()
    )
    return dict(
        zip(
            latest.get_column("strategy_type").to_list(),
            latest.get_column("weight").to_list(),
            strict=True,
        )
    )


def read_strategy_weights(
    store: DeltaStore, strategy_types: Iterable[str] = (), default: float = DEFAULT_WEIGHT
) -> dict[str, float]:
    """What candidate scoring multiplies by: the latest stored weight per type, else `default`."""
    found = latest_weights(
        store.read(TABLE, columns=["run_date", "as_of", "strategy_type", "weight"])
    )
    return {**{t: default for t in strategy_types}, **found}
