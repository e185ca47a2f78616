"""Skew-aware strike selection: short strike by target delta, long strike by wing width.

Formula (all deltas are absolute, per unit of the underlying):

    base         = (short_delta_min + short_delta_max) / 2            e.g. 0.18
    put_target   = base + max(lean, 0)  * skew_max_delta_shift        rich puts: closer in
    call_target  = base + max(-lean, 0) * skew_max_delta_shift        rich calls: closer in
    accepted |delta| of the short strike on a side:
                   [short_delta_min, short_delta_max + max(side lean, 0) * shift]

`lean` in [-1, 1] comes from `skew.lean` (+1 = puts fully rich). So with the defaults
(0.16-0.20, shift 0.04) neutral skew sells ~0.18 delta on both sides, and fully rich put
skew sells a ~0.22 delta put (a strike closer to the money, where the expensive premium
is) while the call side stays at 0.18. The rich side can never exceed
`short_delta_max + skew_max_delta_shift` and the cheap side never leaves the base band.
Why only the rich side moves: leaning into the expensive wing collects its premium; also
pushing the cheap wing out would add directional delta twice for the same skew signal.

The short strike is the listed strike whose |delta| is nearest its target inside the
accepted range (ties: the further out-of-the-money one); it must have a bid. The long
strike is the listed strike nearest `short -/+ wing_width` beyond the short with an ask;
its actual distance is the candidate's width.
"""

from __future__ import annotations

import polars as pl

from core.config import StrategySettings

SIDE_SCHEMA_KEYS = ("underlying", "expiry", "right")
_LEG_COLS = (
    "strike",
    "con_id",
    "bid",
    "ask",
    "mid",
    "delta_used",
    "iv_used",
    "local_symbol",
    "trading_class",
)


def delta_targets(skew: pl.DataFrame, settings: StrategySettings) -> pl.DataFrame:
    """Per (underlying, expiry): put/call target deltas and accepted ranges from `lean`."""
    base = (settings.short_delta_min + settings.short_delta_max) / 2.0
    shift = settings.skew_max_delta_shift
    up = pl.col("lean").clip(lower_bound=0.0)
    down = (-pl.col("lean")).clip(lower_bound=0.0)
    return skew.with_columns(
        put_target=base + up * shift,
        call_target=base + down * shift,
        put_hi=settings.short_delta_max + up * shift,
        call_hi=settings.short_delta_max + down * shift,
        delta_lo=pl.lit(settings.short_delta_min),
    )


def select_strikes(
    prepared: pl.DataFrame, targets: pl.DataFrame, settings: StrategySettings
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(chosen vertical per side, sides with no acceptable strike and why).

    `prepared` is `chain.prepare_chain` output; `targets` is `delta_targets` output. One row
    per (underlying, expiry, right) in the first frame: the short and long legs
    (`short_*`, `long_*` columns), `width`, `target_delta`, `delta_hi`.
    """
    keys = ["underlying", "expiry"]
    per_side = pl.concat(
        [
            targets.select(
                *keys,
                right=pl.lit("P"),
                target_delta="put_target",
                delta_lo="delta_lo",
                delta_hi="put_hi",
            ),
            targets.select(
                *keys,
                right=pl.lit("C"),
                target_delta="call_target",
                delta_lo="delta_lo",
                delta_hi="call_hi",
            ),
        ]
    )
    side_keys = [*keys, "right"]
    rows = prepared.with_columns(abs_delta=pl.col("delta_used").abs())
    shorts = (
        rows.join(per_side, on=side_keys)
        .filter(
            pl.col("abs_delta").is_between(pl.col("delta_lo"), pl.col("delta_hi"))
            & pl.col("bid").is_finite()
            & (pl.col("bid") > 0)
            & pl.col("mid").is_finite()
        )
        .sort((pl.col("abs_delta") - pl.col("target_delta")).abs(), "abs_delta")
        .group_by(side_keys, maintain_order=True)
        .first()
    )
    missing = (
        per_side.join(shorts.select(side_keys), on=side_keys, how="anti")
        .with_columns(
            reason=pl.format(
                "no {} strike with a bid and |delta| in [{}, {}]",
                pl.when(pl.col("right") == "P").then(pl.lit("put")).otherwise(pl.lit("call")),
                pl.col("delta_lo").round(3),
                pl.col("delta_hi").round(3),
            )
        )
        .select(*side_keys, "reason")
    )
    short_cols = shorts.select(
        *side_keys,
        "target_delta",
        "delta_hi",
        "T",
        "dte",
        "forward",
        "multiplier",
        *[pl.col(c).alias(f"short_{c}") for c in _LEG_COLS],
    )
    widths = pl.col("underlying").replace_strict(
        settings.wing_width, default=settings.default_wing_width, return_dtype=pl.Float64
    )
    longs_pool = rows.filter(
        pl.col("ask").is_finite() & (pl.col("ask") > 0) & pl.col("mid").is_finite()
    ).select(*side_keys, *[pl.col(c).alias(f"long_{c}") for c in _LEG_COLS])
    beyond = (
        pl.when(pl.col("right") == "P")
        .then(pl.col("long_strike") < pl.col("short_strike"))
        .otherwise(pl.col("long_strike") > pl.col("short_strike"))
    )
    desired = (
        pl.when(pl.col("right") == "P")
        .then(pl.col("short_strike") - pl.col("wing"))
        .otherwise(pl.col("short_strike") + pl.col("wing"))
    )
    chosen = (
        short_cols.with_columns(wing=widths)
        .join(longs_pool, on=side_keys)
        .filter(beyond)
        .sort(
            (pl.col("long_strike") - desired).abs(),
            (pl.col("long_strike") - pl.col("short_strike")).abs(),
        )
        .group_by(side_keys, maintain_order=True)
        .first()
        .with_columns(width=(pl.col("short_strike") - pl.col("long_strike")).abs())
    )
    no_long = (
        short_cols.join(chosen.select(side_keys), on=side_keys, how="anti")
        .select(*side_keys)
        .with_columns(reason=pl.lit("no listed long strike with an ask beyond the short strike"))
    )
    return chosen.sort(side_keys), pl.concat([missing, no_long]).sort(side_keys)


__all__ = ["delta_targets", "select_strikes"]
