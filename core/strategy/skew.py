"""Skew per expiry, measured from a chain snapshot, and the lean it implies.

For each (underlying, expiry) the out-of-the-money quotes (puts below the forward, calls
at or above it) are fitted with an SSVI smile (`core.pricing.fit_smile`) and measured
with `core.pricing.skew_metrics`:

- `put_call_ratio`: IV at K = F exp(-s) over IV at K = F exp(+s), s = ATM IV x sqrt(T)
  (one standard deviation of the expiry's move: the strikes scale with vol and time);
- `rr25`: IV(25-delta call) - IV(25-delta put) (< 0 = puts richer);
- `skew_norm` = -rr25 / ATM IV: the risk reversal as a fraction of ATM vol. Delta strikes
  already sit at ~0.67 sd of the move (they scale with IV x sqrt(T)), and dividing by ATM
  IV removes the vol level, so one number compares a 30- and a 60-day expiry, a calm and a
  stressed market, SPY and IWM. Positive = puts rich.

Lean: `lean = clip((skew_norm - skew_neutral) / skew_full_lean, -1, 1)`; +1 leans fully
toward puts, -1 toward calls (see `strikes.py` for how it moves the short deltas).

Missing data never blocks an entry: an expiry without enough usable IVs (or whose fit
fails) gets `skew_source = "neutral"`, lean 0, null skew numbers, and `skew_reason`
saying why.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import polars as pl

from core.config import StrategySettings
from core.pricing import fit_smile, skew_metrics

log = logging.getLogger(f"v6.{__name__}")

MIN_SIDE_POINTS = 2  # OTM quotes needed on each side of the forward
MIN_POINTS = 5  # quotes needed for a smile fit
MAX_FIT_RMSE = 0.02  # IV units; a worse fit is not trusted (quotes are junk or crossed)

SKEW_SCHEMA = pl.Schema(
    {
        "underlying": pl.String(),
        "expiry": pl.Date(),
        "T": pl.Float64(),
        "forward": pl.Float64(),
        "atm_iv": pl.Float64(),
        "iv_put_1sd": pl.Float64(),
        "iv_call_1sd": pl.Float64(),
        "put_call_ratio": pl.Float64(),
        "rr25": pl.Float64(),
        "skew_norm": pl.Float64(),
        "n_iv": pl.Int64(),
        "fit_rmse": pl.Float64(),
        "skew_source": pl.String(),
        "skew_reason": pl.String(),
    }
)


def measure_skew(prepared: pl.DataFrame) -> pl.DataFrame:
    """One row per (underlying, expiry) of a prepared chain (`chain.prepare_chain`).

    The loop is over expiries (a handful per cycle), each one vectorised fit.
    """
    keys = ["underlying", "expiry"]
    otm = prepared.filter(
        pl.col("iv_used").is_finite()
        & (pl.col("iv_used") > 0)
        & pl.col("forward").is_not_null()
        & (
            ((pl.col("right") == "P") & (pl.col("strike") < pl.col("forward")))
            | ((pl.col("right") == "C") & (pl.col("strike") >= pl.col("forward")))
        )
    )
    groups = prepared.group_by(keys).agg(
        pl.col("T").first(), pl.col("forward").first(), atm_guess=_atm_guess()
    )
    rows: list[dict[str, object]] = []
    by_key = {k: g for k, g in otm.group_by(keys)}
    for g in groups.sort(keys).iter_rows(named=True):
        sub = by_key.get((g["underlying"], g["expiry"]))
        rows.append(_measure_one(g, sub))
    return pl.DataFrame(rows, schema=SKEW_SCHEMA)


def lean(skew: pl.DataFrame, settings: StrategySettings) -> pl.DataFrame:
    """`skew` plus `lean` in [-1, 1] (0 where the skew is neutral/unknown)."""
    s = (pl.col("skew_norm") - settings.skew_neutral) / settings.skew_full_lean
    return skew.with_columns(
        lean=pl.when(pl.col("skew_source") == "fit")
        .then(s.clip(-1.0, 1.0))
        .otherwise(0.0)
        .fill_null(0.0)
    )


# ----------------------------------------------------------------------------------------


def _atm_guess() -> pl.Expr:
    """IV of the quote nearest the forward (used when no smile can be fitted)."""
    dist = (pl.col("strike") - pl.col("forward")).abs()
    usable = pl.col("iv_used").is_finite() & (pl.col("iv_used") > 0)
    return pl.col("iv_used").filter(usable).sort_by(dist.filter(usable)).first()


def _neutral(
    g: dict[str, object], n: int, reason: str, rmse: float = math.nan
) -> dict[str, object]:
    log.info("skew %s %s: neutral (%s)", g["underlying"], g["expiry"], reason)
    atm = g.get("atm_guess")
    return {
        "underlying": g["underlying"],
        "expiry": g["expiry"],
        "T": g["T"],
        "forward": g["forward"],
        "atm_iv": atm if isinstance(atm, float) and math.isfinite(atm) else None,
        "iv_put_1sd": None,
        "iv_call_1sd": None,
        "put_call_ratio": None,
        "rr25": None,
        "skew_norm": None,
        "n_iv": n,
        "fit_rmse": rmse if math.isfinite(rmse) else None,
        "skew_source": "neutral",
        "skew_reason": reason,
    }


def _measure_one(g: dict[str, object], sub: pl.DataFrame | None) -> dict[str, object]:
    forward = g["forward"]
    T = g["T"]
    if not isinstance(forward, float) or not math.isfinite(forward) or forward <= 0:
        return _neutral(g, 0, "no forward or underlying price: skew unknown, lean 0")
    n = 0 if sub is None else sub.height
    if sub is None or n < MIN_POINTS:
        return _neutral(g, n, f"only {n} usable OTM IVs (need {MIN_POINTS}): lean 0")
    n_put = int((sub["right"] == "P").sum())
    n_call = n - n_put
    if min(n_put, n_call) < MIN_SIDE_POINTS:
        return _neutral(
            g,
            n,
            f"one-sided IVs ({n_put} puts, {n_call} calls; need {MIN_SIDE_POINTS} each): lean 0",
        )
    assert isinstance(T, float)
    fit = fit_smile(
        sub["strike"].to_numpy(),
        T,
        spot=forward,
        ivs=sub["iv_used"].to_numpy(),
        min_points=MIN_POINTS,
    )
    if not fit.success or not np.isfinite([fit.params.theta, fit.params.rho, fit.params.phi]).all():
        return _neutral(g, n, f"smile fit failed ({fit.message}): lean 0")
    if fit.rmse > MAX_FIT_RMSE:
        return _neutral(
            g, n, f"smile fit rmse {fit.rmse:.4f} > {MAX_FIT_RMSE} (noisy IVs): lean 0", fit.rmse
        )
    m = skew_metrics(fit.params)
    if not (math.isfinite(m.rr25) and m.atm_iv > 0):
        return _neutral(g, n, "25-delta strikes not solvable on the fitted smile: lean 0")
    return {
        "underlying": g["underlying"],
        "expiry": g["expiry"],
        "T": T,
        "forward": forward,
        "atm_iv": m.atm_iv,
        "iv_put_1sd": m.iv_put_1sd,
        "iv_call_1sd": m.iv_call_1sd,
        "put_call_ratio": m.put_call_ratio,
        "rr25": m.rr25,
        "skew_norm": -m.rr25 / m.atm_iv,
        "n_iv": n,
        "fit_rmse": fit.rmse,
        "skew_source": "fit",
        "skew_reason": "",
    }


__all__ = ["SKEW_SCHEMA", "lean", "measure_skew"]
