"""The exit rules' per-strategy snapshot, built from the book's held legs and live quotes.

One vectorised pass over the legs (polars group-by), per strategy and per ONE unit:
- P&L: `entry` = sum(ratio x multiplier x average fill price), `value` = the same at mid.
  entry < 0 is a credit received: profit % = (credit - cost to close) / credit; otherwise a
  debit: (value - debit) / debit (`rules.profit_pct_expr`).
- greeks per share, signed: sum(ratio x multiplier x greek) / 100 (an option contract's
  delta is per share already; a stock leg of 100 shares counts 1.0).
- `iv`: the mean implied vol of the short option legs (weighted by |ratio|), of all option
  legs when none is short: the vol the position is selling.
- `dte`: the nearest option expiry, in market days from today (New York date).
- context (regime, 1-hour move, IV percentile, VIX) joined on the underlying.
- exposures to assignment (`rules.inputs` defines them), per option leg then the smallest
  per strategy, from the underlying's spot and next dividend (context) and the leg's mid:
  pin distance of the short legs expiring today; extrinsic value (mid - intrinsic) of the
  short ITM puts; of the short ITM calls whose expiry is on or after the next ex-date, the
  extrinsic less the dividend and the days to that ex-date. A leg that is not exposed counts
  +inf; one whose exposure cannot be told (no spot, no mid, no dividend known) makes the
  strategy's number null.
A leg without a mid (or a greek) makes that strategy's number null, never a partial sum,
so the rules report NO_DATA instead of deciding on half a position.

`entry_iv`/`entry_vix` are the current values here: the rules' state is write-once and
wins, so they only seed strategies seen for the first time (adopted or recorded before a
crash); a fill records the real entry values (`entry_values`).

The book and the rules share one strategy type vocabulary (`core.domain.strategies`); only
a strategy V6 may not manage (EXTERNAL, untagged) is shown to the rules as `external`, which
they never action.
"""

from __future__ import annotations

import math
from datetime import date, datetime

import polars as pl

from core.domain.strategies import StrategyType
from core.domain.timezones import MARKET_TZ
from core.rules.inputs import profit_pct_expr
from core.strategy.candidates import Candidate

c = pl.col


def _all_finite(expr: pl.Expr) -> pl.Expr:
    return (expr.is_not_null() & expr.is_finite()).all()


def rules_type() -> pl.Expr:
    """The strategy type the rules see for each leg's strategy (see the module doc)."""
    external = pl.lit(StrategyType.EXTERNAL.value)
    return (
        pl.when(c("managed").fill_null(False))
        .then(c("strategy_type").fill_null(external))
        .otherwise(external)
    )


def strategy_snapshot(legs: pl.DataFrame, context: pl.DataFrame, now: datetime) -> pl.DataFrame:
    """One row per strategy holding a position: the rules' snapshot columns plus `units`,
    `managed`, `book_type`, `entry_usd` and `value_usd` (per unit) for the audit."""
    if legs.is_empty():
        return _empty()
    today: date = now.astimezone(MARKET_TZ).date()
    opt = c("sec_type") == "OPT"
    short_opt = opt & (c("ratio") < 0)
    unit = c("ratio") * c("multiplier")
    iv_ok = c("iv").is_finite() & (c("iv") > 0)
    w_short = pl.when(short_opt & iv_ok).then(c("ratio").abs())
    w_any = pl.when(opt & iv_ok).then(c("ratio").abs())
    iv_short = (w_short * c("iv")).sum() / w_short.sum()
    iv_all = (w_any * c("iv")).sum() / w_any.sum()
    has_short = short_opt.any()
    gamma = pl.when(opt).then(c("gamma")).otherwise(0.0)
    delta = pl.when(opt).then(c("delta")).otherwise(1.0)
    per = (
        legs.with_columns(rules_type().alias("_rtype"))
        .group_by("strategy_id", maintain_order=True)
        .agg(
            c("_rtype").first().alias("strategy_type"),
            c("strategy_type").first().alias("book_type"),
            c("underlying").first(),
            c("managed").first().fill_null(False),
            (c("quantity").abs() // c("ratio").abs()).max().alias("units"),
            (unit * c("avg_price")).sum().alias("entry_usd"),
            _all_finite(c("avg_price")).alias("_entry_ok"),
            (unit * c("mid")).sum().alias("value_usd"),
            _all_finite(c("mid")).alias("_mark_ok"),
            ((c("ratio") * c("multiplier") * delta).sum() / 100.0).alias("net_delta"),
            _all_finite(pl.when(opt).then(c("delta")).otherwise(0.0)).alias("_delta_ok"),
            ((c("ratio") * c("multiplier") * gamma).sum() / 100.0).alias("net_gamma"),
            _all_finite(gamma).alias("_gamma_ok"),
            pl.when(has_short).then(iv_short).otherwise(iv_all).alias("iv"),
            c("expiry").filter(opt).min().alias("_expiry"),
            c("quantity").filter(c("sec_type") == "STK").sum().alias("stock_shares"),
        )
    )
    entry = pl.when(c("_entry_ok")).then(c("entry_usd"))
    value = pl.when(c("_mark_ok")).then(c("value_usd"))
    credit = entry < 0
    snap = per.with_columns(
        profit_pct_expr(
            entry.abs(),
            pl.when(credit).then(-value).otherwise(value),
            credit.fill_null(False),
        ).alias("profit_pct"),
        (c("_expiry") - pl.lit(today)).dt.total_days().cast(pl.Int64).alias("dte"),
        pl.when(c("_delta_ok")).then(c("net_delta")).alias("net_delta"),
        pl.when(c("_gamma_ok")).then(c("net_gamma")).alias("net_gamma"),
        pl.when(c("iv").is_finite() & (c("iv") > 0)).then(c("iv")).alias("iv"),
    )
    ctx = context.select(
        c("symbol").alias("underlying"),
        "regime",
        "underlying_move_1h_pct",
        "iv_percentile",
        "vix",
    )
    out = (
        snap.join(ctx, on="underlying", how="left")
        .join(exposures(legs, context, today), on="strategy_id", how="left")
        .with_columns(c("iv").alias("entry_iv"), c("vix").alias("entry_vix"))
    )
    return out.select(list(_SCHEMA)).cast(_SCHEMA)


INF = math.inf
_EXPOSURE_LEG_COLUMNS = ("strategy_id", "underlying", "sec_type", "ratio", "right", "strike",
                         "expiry", "mid")  # fmt: skip


def _smallest(value: pl.Expr) -> pl.Expr:
    """Per strategy: the smallest leg value (+inf when no leg is exposed); null when any
    leg's value is unknown (a known-safe leg cannot vouch for an unknown one)."""
    return pl.when(value.null_count() == 0).then(value.min().fill_null(INF))


def exposures(legs: pl.DataFrame, context: pl.DataFrame, today: date) -> pl.DataFrame:
    """Per strategy: pin_distance_pct, dividend_cushion, dividend_days, put_extrinsic (see
    the module doc). `context` may lack the dividend columns (then no dividend is known)."""
    div_cols = [name for name in ("dividend_ex_date", "dividend_amount") if name in context.columns]
    ctx = context.select(
        c("symbol").alias("underlying"),
        pl.when(c("spot").is_finite() & (c("spot") > 0)).then(c("spot")).alias("_spot"),
        *div_cols,
    )
    for name, dtype in (("dividend_ex_date", pl.Date), ("dividend_amount", pl.Float64)):
        if name not in ctx.columns:
            ctx = ctx.with_columns(pl.lit(None, dtype=dtype).alias(name))
    spot, strike = c("_spot"), c("strike")
    mid = pl.when(c("mid").is_finite() & (c("mid") >= 0)).then(c("mid"))
    short = (c("sec_type") == "OPT") & (c("ratio") < 0)
    call, put = short & (c("right") == "C"), short & (c("right") == "P")
    ex, amount = c("dividend_ex_date"), c("dividend_amount")
    # the next dividend cannot reach this call: none, already ex, or ex after its expiry
    no_dividend = (amount == 0) | (ex <= pl.lit(today)) | (ex > c("expiry"))
    call_safe = no_dividend.fill_null(False) | (spot <= strike).fill_null(False)
    call_cushion = (
        pl.when(~call | call_safe).then(INF).otherwise((mid - (spot - strike) - amount).round(9))
    )
    call_days = (
        pl.when(~call | call_safe)
        .then(INF)
        .otherwise((ex - pl.lit(today)).dt.total_days().cast(pl.Float64))
    )
    put_extrinsic = (
        pl.when(~put | (spot >= strike).fill_null(False))
        .then(INF)
        .otherwise((mid - (strike - spot)).round(9))
    )
    pin = (
        pl.when(~short | (c("expiry") != pl.lit(today)).fill_null(False))
        .then(INF)
        .otherwise(((strike / spot - 1.0).abs() * 100.0).round(9))
    )
    return (
        legs.select(_EXPOSURE_LEG_COLUMNS)
        .join(ctx, on="underlying", how="left")
        .group_by("strategy_id", maintain_order=True)
        .agg(
            _smallest(pin).alias("pin_distance_pct"),
            _smallest(call_cushion).alias("dividend_cushion"),
            _smallest(call_days).alias("dividend_days"),
            _smallest(put_extrinsic).alias("put_extrinsic"),
        )
    )


_SCHEMA = pl.Schema(
    {
        "strategy_id": pl.String(),
        "strategy_type": pl.String(),
        "underlying": pl.String(),
        "regime": pl.String(),
        "profit_pct": pl.Float64(),
        "dte": pl.Int64(),
        "net_delta": pl.Float64(),
        "net_gamma": pl.Float64(),
        "iv": pl.Float64(),
        "entry_iv": pl.Float64(),
        "iv_percentile": pl.Float64(),
        "vix": pl.Float64(),
        "entry_vix": pl.Float64(),
        "underlying_move_1h_pct": pl.Float64(),
        "stock_shares": pl.Int64(),
        "pin_distance_pct": pl.Float64(),
        "dividend_cushion": pl.Float64(),
        "dividend_days": pl.Float64(),
        "put_extrinsic": pl.Float64(),
        "units": pl.Int64(),
        "managed": pl.Boolean(),
        "book_type": pl.String(),
        "entry_usd": pl.Float64(),
        "value_usd": pl.Float64(),
    }
)


def _empty() -> pl.DataFrame:
    return pl.DataFrame(schema=_SCHEMA)


def entry_values(cand: Candidate, vix: float) -> dict[str, object]:
    """`rule_state` entry values of a filled candidate, measured the way the snapshot
    measures a held strategy (short-leg IV, |ratio|-weighted)."""
    shorts = [(abs(leg.ratio), leg.iv) for leg in cand.legs if leg.ratio < 0]
    legs = shorts or [(abs(leg.ratio), leg.iv) for leg in cand.legs]
    good = [(w, v) for w, v in legs if math.isfinite(v) and v > 0]
    iv = sum(w * v for w, v in good) / sum(w for w, _ in good) if good else math.nan
    return {
        "strategy_id": cand.strategy_id,
        "entry_iv": iv if math.isfinite(iv) else None,
        "entry_vix": vix if math.isfinite(vix) and vix > 0 else None,
    }


SNAPSHOT_EXTRA = ("units", "managed", "book_type", "entry_usd", "value_usd")

__all__ = ["SNAPSHOT_EXTRA", "entry_values", "exposures", "rules_type", "strategy_snapshot"]
