"""Market regime per underlying, from its daily closes and VIX: sets the take-profit target.

Classification, first match wins (thresholds in `RuleSettings.regime_*`):
1. crash       VIX >= crash_vix, or the underlying is >= crash_drawdown_pct below its highest
               close of the last crash_lookback_bars (either signal alone suffices, so a crash
               is seen even when the other input is missing);
2. unknown     no fresh VIX close, stale underlying (last close older than max_age_days), or
               fewer than lookback_bars + 1 closes: the target falls back to
               `profit_target_fallback_pct` (see `targets.py`);
3. high_vol    VIX >= high_vol_vix;
4. trending    efficiency >= trending_efficiency;
5. low_vol     VIX < low_vol_vix;
6. range_bound efficiency <= range_bound_efficiency;
7. normal      otherwise.

Efficiency (Kaufman's efficiency ratio) over the last lookback_bars daily moves is
abs(net change) / sum(abs(daily changes)): 1 = a straight line, 0 = back where it started.
It is scale-free, so one threshold serves SPY and IWM alike. Derived ratios are rounded to
1e-9 so a threshold behaves as written (93 / 100 is a 7% drawdown, not 6.999999999999995).

Vol regimes outrank trend when stressed (high_vol before trending) because a vol spike is the
bigger threat to a short premium position; trend outranks calm (trending before low_vol)
because a steady drift threatens one side of a condor even when VIX is low.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import polars as pl

from core.config import RuleSettings
from core.domain.regimes import Regime
from core.domain.timezones import MARKET_TZ

c = pl.col


def daily_closes(bars: pl.DataFrame | pl.LazyFrame, tz: str = MARKET_TZ.key) -> pl.DataFrame:
    """The last close per symbol per market date (bars: symbol, ts UTC, close), sorted."""
    return (
        bars.lazy()
        .select("symbol", "ts", "close")
        .with_columns(c("ts").dt.convert_time_zone(tz).dt.date().alias("_day"))
        .sort("symbol", "ts")
        .group_by("symbol", "_day")
        .agg(c("ts").last(), c("close").last())
        .drop("_day")
        .sort("symbol", "ts")
        .collect()
    )


def detect_regimes(
    closes: pl.DataFrame | pl.LazyFrame,
    vix: pl.DataFrame | pl.LazyFrame,
    settings: RuleSettings,
    now: datetime,
    symbols: Sequence[str] | None = None,
) -> pl.DataFrame:
    """One row per symbol: regime plus the measurements behind it and a reason.

    `closes`: symbol, ts, close (daily; see `daily_closes`); `vix`: ts, close (daily). Only
    data at or before `now` is used, so a backtest sees no future. `symbols` adds rows (regime
    unknown) for underlyings with no closes at all, so every strategy gets a regime.
    """
    if now.tzinfo is None:
        raise ValueError(f"now={now!r} is naive; pass a tz-aware datetime")
    now = now.astimezone(UTC)
    n, k = settings.regime_lookback_bars, settings.regime_crash_lookback_bars
    max_age = timedelta(days=settings.regime_max_age_days)

    vix_last = vix.lazy().select("ts", "close").filter(c("ts") <= now).sort("ts").tail(1).collect()
    vix_value: float | None = None
    vix_note = "no VIX close"
    if vix_last.height:
        ts, value = vix_last.row(0)
        if now - ts > max_age:
            vix_note = f"VIX close of {ts:%Y-%m-%d} is stale"
        elif value is not None and value > 0:
            vix_value = float(value)

    per = (
        closes.lazy()
        .select("symbol", "ts", "close")
        .filter((c("ts") <= now) & (c("close") > 0))
        .sort("symbol", "ts")
        .group_by("symbol")
        .agg(
            pl.len().alias("bars"),
            c("ts").last().alias("as_of"),
            c("close").last().alias("_last"),
            c("close").tail(n + 1).first().alias("_first"),
            c("close").tail(n + 1).diff().abs().sum().alias("_path"),
            c("close").tail(k + 1).max().alias("_high"),
        )
        .collect()
    )
    if symbols is not None:
        base = pl.DataFrame({"symbol": list(dict.fromkeys(symbols))}, schema={"symbol": pl.String})
        per = base.join(per, on="symbol", how="left").with_columns(c("bars").fill_null(0))

    v = pl.lit(vix_value, dtype=pl.Float64)
    fresh = c("as_of").is_not_null() & ((pl.lit(now) - c("as_of")) <= max_age)
    enough = c("bars") >= n + 1
    measured = per.with_columns(
        v.alias("vix"),
        pl.when(enough & (c("_path") > 0))
        .then(((c("_last") - c("_first")).abs() / c("_path")).round(9))
        .when(enough)
        .then(0.0)
        .alias("efficiency"),
        pl.when(enough)
        .then(((c("_last") / c("_first") - 1.0) * 100.0).round(9))
        .alias("return_pct"),
        pl.when(c("bars") >= k + 1)
        .then(((c("_last") / c("_high") - 1.0) * 100.0).round(9))
        .alias("drawdown_pct"),
        fresh.fill_null(False).alias("_fresh"),
        enough.fill_null(False).alias("_enough"),
    )
    crash = (
        (c("vix") >= settings.regime_crash_vix)
        | (c("_fresh") & (c("drawdown_pct") <= -settings.regime_crash_drawdown_pct))
    ).fill_null(False)
    unknown = c("vix").is_null() | ~c("_fresh") | ~c("_enough")
    regime = (
        pl.when(crash)
        .then(pl.lit(Regime.CRASH.value))
        .when(unknown)
        .then(pl.lit(Regime.UNKNOWN.value))
        .when(c("vix") >= settings.regime_high_vol_vix)
        .then(pl.lit(Regime.HIGH_VOL.value))
        .when(c("efficiency") >= settings.regime_trending_efficiency)
        .then(pl.lit(Regime.TRENDING.value))
        .when(c("vix") < settings.regime_low_vol_vix)
        .then(pl.lit(Regime.LOW_VOL.value))
        .when(c("efficiency") <= settings.regime_range_bound_efficiency)
        .then(pl.lit(Regime.RANGE_BOUND.value))
        .otherwise(pl.lit(Regime.NORMAL.value))
    )
    why_unknown = pl.concat_str(
        [
            pl.when(c("vix").is_null()).then(pl.lit(vix_note)),
            pl.when(c("as_of").is_null()).then(pl.lit("no closes")),
            pl.when(c("as_of").is_not_null() & ~c("_fresh")).then(
                pl.format("last close {} is stale", c("as_of").dt.strftime("%Y-%m-%d"))
            ),
            pl.when(c("as_of").is_not_null() & ~c("_enough")).then(
                pl.format(f"only {{}} of {n + 1} closes", c("bars"))
            ),
        ],
        separator="; ",
        ignore_nulls=True,
    )
    measures = pl.format(
        f"VIX {{}}, efficiency {{}} over {n} closes, drawdown {{}}% vs {k}-close high",
        _n(c("vix")),
        _n(c("efficiency"), 3),
        _n(c("drawdown_pct")),
    )
    return (
        measured.with_columns(regime.alias("regime"))
        .with_columns(
            pl.when(c("regime") == Regime.UNKNOWN.value)
            .then(pl.format("{}: target falls back", why_unknown))
            .otherwise(measures)
            .alias("reason")
        )
        .select(
            "symbol",
            "regime",
            "as_of",
            "bars",
            "vix",
            "efficiency",
            "return_pct",
            "drawdown_pct",
            "reason",
        )
        .sort("symbol")
    )


def _n(expr: pl.Expr, digits: int = 2) -> pl.Expr:
    return expr.round(digits).cast(pl.String).fill_null("n/a")
