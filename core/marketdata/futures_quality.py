"""Split a batch of futures bars into rows that may land and rows to quarantine.

The store rejects a whole batch when one row fails a check, which is right for a
store but wrong for collection: one bad print from the broker must not cost the other
bars of the run. So collection checks first, row by row but vectorised, and sends
each failing bar to `futures_quarantine` with every reason it failed; the rest land.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import polars as pl

from core.domain.timezones import UTC_US

BAR_KEYS = ("symbol", "contract", "ts")
PRICES = ("open", "high", "low", "close")
BAR_COLUMNS = (*BAR_KEYS, *PRICES, "volume")

# Reason texts are part of the quarantine table's key: keep them stable (no timestamps),
# so re-checking the same bad bar on a repeated run finds the row already there.
REASON_MISSING = "missing value (null/NaN price or null volume)"
REASON_NON_POSITIVE = "non-positive price"
REASON_OHLC = "OHLC inconsistent (need low <= open, close <= high)"
REASON_NEGATIVE_VOLUME = "negative volume"
REASON_FUTURE = "ts in the future"
REASON_DUPLICATE = "duplicate key with conflicting values"


@dataclass(frozen=True)
class QualitySplit:
    """Outcome of the pre-check: `good` fits `futures_bars`, `quarantined` fits the quarantine."""

    good: pl.DataFrame
    quarantined: pl.DataFrame
    duplicates_dropped: int  # exact copies collapsed into one row (harmless, not quarantined)

    def reason_counts(self) -> dict[str, int]:
        """How many quarantined rows carry each single reason (a row may carry several)."""
        if self.quarantined.is_empty():
            return {}
        counts = (
            self.quarantined.select(pl.col("reason").str.split("; ").alias("r"))
            .explode("r")
            .with_columns(pl.col("r").str.replace(r" \(copy \d+ of \d+\)$", ""))
            .group_by("r")
            .len()
            .sort("r")
        )
        return dict(zip(counts["r"].to_list(), counts["len"].to_list(), strict=True))


def split_bars(bars: pl.DataFrame, now: datetime) -> QualitySplit:
    """Partition `bars` (symbol, contract, ts, open, high, low, close, volume) by the checks:
    complete values, positive prices, OHLC consistency, non-negative volume, ts not after
    `now`, and one version per (symbol, contract, ts). Exact duplicates collapse silently;
    conflicting versions of one key are all quarantined, since neither can be trusted.
    """
    missing_cols = [c for c in BAR_COLUMNS if c not in bars.columns]
    if missing_cols:
        raise ValueError(
            f"split_bars: columns {missing_cols} are missing; a bar batch needs {list(BAR_COLUMNS)}"
        )
    if now.tzinfo is None:
        raise ValueError(f"split_bars: now must be tz-aware UTC, got naive {now!r}")
    frame = bars.select(BAR_COLUMNS)
    if frame.get_column("ts").null_count():
        raise ValueError(
            "split_bars: some bars have a null ts; a bar without a time cannot be kept"
        )
    deduped = frame.unique(maintain_order=True)
    dropped = frame.height - deduped.height

    c = pl.col
    keys = list(BAR_KEYS)
    missing = pl.any_horizontal(
        *[c(p).is_null() | c(p).is_nan() for p in PRICES], c("volume").is_null()
    )
    non_positive = pl.any_horizontal(*[c(p) <= 0 for p in PRICES]).fill_null(False)
    consistent = (
        (c("low") <= c("open"))
        & (c("low") <= c("close"))
        & (c("high") >= c("open"))
        & (c("high") >= c("close"))
    )
    inconsistent = (~consistent).fill_null(False) & ~missing
    copies = pl.len().over(keys)
    copy_no = pl.int_range(pl.len()).over(keys) + 1
    duplicate = pl.format(f"{REASON_DUPLICATE} (copy {{}} of {{}})", copy_no, copies)
    reason = pl.concat_str(
        [
            pl.when(missing).then(pl.lit(REASON_MISSING)),
            pl.when(non_positive).then(pl.lit(REASON_NON_POSITIVE)),
            pl.when(inconsistent).then(pl.lit(REASON_OHLC)),
            pl.when(c("volume") < 0).then(pl.lit(REASON_NEGATIVE_VOLUME)),
            pl.when(c("ts") > pl.lit(now).cast(UTC_US)).then(pl.lit(REASON_FUTURE)),
            pl.when(copies > 1).then(duplicate),
        ],
        separator="; ",
        ignore_nulls=True,
    )
    checked = deduped.with_columns(reason.alias("reason"))
    bad = checked.get_column("reason") != ""
    good = checked.filter(~bad).drop("reason")
    quarantined = checked.filter(bad).with_columns(pl.lit(now).cast(UTC_US).alias("quarantined_at"))
    return QualitySplit(good=good, quarantined=quarantined, duplicates_dropped=dropped)
