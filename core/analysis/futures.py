"""Futures as leading indicators of the option underlyings (ES->SPY, NQ->QQQ, RTY->IWM).

Index futures trade nearly around the clock and react to news first; the ETFs follow a
little later in regular hours and gap toward the futures at the open. This module
measures that lead from stored 1-minute bars and turns it into a signal the entry
pipeline can read:

* `lead_lag`: as-of join (polars `join_asof`, backward, with a tolerance) of underlying
  returns at t with futures returns at t - k, for k = 0..max lag minutes; the lag with the
  highest correlation is the lead, the regression slope there is `beta`.
  Returns are 1-minute log returns taken only between consecutive minutes of the same
  contract (a roll or a gap never counts as a return).
* `leading_signal`: at a given time, how far the futures moved over the last `lead`
  minutes (the part the underlying has not followed yet), their momentum against the
  underlying's over the last N minutes, and their move since the underlying's prior
  regular-hours close. In regular hours the expected underlying move is
  beta x lead move; outside them it is beta x the overnight move (where it should open).
* Estimates need `AnalysisSettings.lead_lag_min_days` distinct days with both series;
  with fewer, the answer is `InsufficientData` saying exactly how many days there are.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

import polars as pl

from core.config import Settings
from core.domain.timezones import MARKET_TZ, UTC_US
from core.store.delta import DeltaStore, WriteResult

log = logging.getLogger(f"v6.{__name__}")

_ONE_MIN = pl.duration(minutes=1)


# -- results ---------------------------------------------------------------------------
@dataclass(frozen=True)
class InsufficientData:
    """Too little history for a lead-lag estimate; `have_days` is exact."""

    underlying: str
    need_days: int
    have_days: int

    @property
    def message(self) -> str:
        return (
            f"lead-lag for {self.underlying}: need {self.need_days} days of futures and "
            f"underlying bars, have {self.have_days}"
        )

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class LeadLag:
    """The measured lead of a future over its underlying."""

    underlying: str
    future: str
    days: int
    best_lag_min: int
    best_corr: float
    beta: float
    correlations: pl.DataFrame  # lag_min, corr, beta, n


@dataclass(frozen=True)
class LeadingSignal:
    """What the futures say about the underlying's next move, as of `ts` (percent units)."""

    underlying: str
    future: str
    ts: datetime
    days_of_data: int
    best_lag_min: int
    best_corr: float
    beta: float
    lead_move_pct: float | None
    overnight_move_pct: float | None
    futures_momentum_pct: float | None
    underlying_momentum_pct: float | None
    momentum_gap_pct: float | None
    expected_move_pct: float | None
    direction: str | None  # up | down | neutral; None when current data are missing

    def is_fresh(self, now: datetime, max_age: timedelta) -> bool:
        """False when the reading is older than `max_age` (the entry pipeline should ignore it)."""
        return now - self.ts <= max_age


# -- series preparation ------------------------------------------------------------------
def futures_returns(bars: pl.DataFrame) -> pl.DataFrame:
    """One row per minute of the front contract: ts, contract, close, ret (1-min log return).

    If two contracts overlap (a roll), the one whose data run later is kept. A return is
    set only between consecutive minutes of one contract.
    """
    if bars.is_empty():
        return pl.DataFrame(
            schema={
                "ts": UTC_US,
                "contract": pl.String(),
                "close": pl.Float64(),
                "ret": pl.Float64(),
            }
        )
    front = (
        bars.select("ts", "contract", "close")
        .with_columns(pl.col("ts").max().over("contract").alias("_last"))
        .sort("ts", "_last")
        .unique("ts", keep="last")
        .sort("ts")
        .drop("_last")
    )
    return front.with_columns(_log_return(by="contract"))


def underlying_returns(bars: pl.DataFrame) -> pl.DataFrame:
    """ts, close, ret (1-min log return between consecutive minutes) of one underlying."""
    if bars.is_empty():
        return pl.DataFrame(schema={"ts": UTC_US, "close": pl.Float64(), "ret": pl.Float64()})
    return (
        bars.select("ts", "close")
        .unique("ts", keep="last")
        .sort("ts")
        .with_columns(_log_return(by=None))
    )


def _log_return(by: str | None) -> pl.Expr:
    logc = pl.col("close").log()
    step = pl.col("ts").diff()
    diff = logc.diff()
    if by is not None:
        step, diff = step.over(by), diff.over(by)
    return pl.when(step == timedelta(minutes=1)).then(diff).otherwise(None).alias("ret")


def _asof(
    left: pl.DataFrame,
    right: pl.DataFrame,
    *,
    lag_min: int,
    tolerance_s: int,
    right_cols: list[str],
) -> pl.DataFrame:
    """`left` with `right_cols` of the latest `right` row at or before left.ts - lag."""
    keyed = left.with_columns((pl.col("ts") - pl.duration(minutes=lag_min)).alias("_at")).sort(
        "_at"
    )
    return keyed.join_asof(
        right.select(pl.col("ts").alias("_rts"), *right_cols),
        left_on="_at",
        right_on="_rts",
        strategy="backward",
        tolerance=timedelta(seconds=tolerance_s),
        suffix="_f",
    ).drop("_at")


# -- lead-lag ----------------------------------------------------------------------------
def count_days(fut: pl.DataFrame, und: pl.DataFrame, *, tolerance_s: int) -> int:
    """Distinct New York dates on which an underlying return meets a futures return."""
    aligned = _asof(und, fut, lag_min=0, tolerance_s=tolerance_s, right_cols=["ret"])
    pairs = aligned.drop_nulls(["ret", "ret_f"])
    return int(
        pairs.select(pl.col("ts").dt.convert_time_zone(MARKET_TZ.key).dt.date().n_unique()).item()
    )


def lead_lag(
    futures_bars: pl.DataFrame,
    underlying_bars: pl.DataFrame,
    *,
    underlying: str,
    future: str,
    max_lag_min: int,
    tolerance_s: int,
    min_days: int,
) -> LeadLag | InsufficientData:
    """Correlation of underlying returns with lagged futures returns, lags 0..max_lag_min."""
    fut = futures_returns(futures_bars)
    und = underlying_returns(underlying_bars)
    days = count_days(fut, und, tolerance_s=tolerance_s)
    if days < min_days:
        log.info("lead-lag %s/%s: %d of %d days needed", underlying, future, days, min_days)
        return InsufficientData(underlying, min_days, days)
    long = pl.concat(
        [
            _asof(und, fut, lag_min=k, tolerance_s=tolerance_s, right_cols=["ret"])
            .select(
                pl.lit(k, pl.Int64).alias("lag_min"),
                pl.col("ret").alias("ru"),
                pl.col("ret_f").alias("rf"),
            )
            .drop_nulls()
            for k in range(max_lag_min + 1)
        ]
    )
    corr = (
        long.group_by("lag_min")
        .agg(
            pl.corr("ru", "rf").alias("corr"),
            (pl.cov("ru", "rf") / pl.col("rf").var()).alias("beta"),
            pl.len().cast(pl.Int64).alias("n"),
        )
        .sort("lag_min")
        .with_columns(pl.col("corr", "beta").fill_nan(None))
    )
    ranked = corr.drop_nulls("corr").sort(["corr", "lag_min"], descending=[True, False])
    if ranked.is_empty():
        return InsufficientData(underlying, min_days, days)
    best = ranked.row(0, named=True)
    return LeadLag(
        underlying=underlying,
        future=future,
        days=days,
        best_lag_min=int(best["lag_min"]),
        best_corr=float(best["corr"]),
        beta=float(best["beta"]) if best["beta"] is not None else 0.0,
        correlations=corr,
    )


# -- signal --------------------------------------------------------------------------------
def _close_at(
    series: pl.DataFrame, at: datetime | None, tolerance_s: int, contract: str | None = None
) -> float | None:
    """Close of the latest bar at or before `at` (within tolerance), optionally of one contract."""
    if at is None:
        return None
    frame = series if contract is None else series.filter(pl.col("contract") == contract)
    hit = frame.filter(
        (pl.col("ts") <= at) & (pl.col("ts") >= at - timedelta(seconds=tolerance_s))
    ).tail(1)
    return None if hit.is_empty() else float(hit.item(0, "close"))


def _pct(now_px: float | None, then_px: float | None) -> float | None:
    if now_px is None or then_px is None or then_px <= 0:
        return None
    return (now_px / then_px - 1.0) * 100.0


def leading_signal(
    futures_bars: pl.DataFrame,
    underlying_bars: pl.DataFrame,
    estimate: LeadLag,
    now: datetime,
    *,
    momentum_min: int,
    tolerance_s: int,
    threshold_pct: float,
    min_corr: float,
) -> LeadingSignal:
    """The signal at `now` from bars up to `now` and a lead-lag estimate (see module doc)."""
    fresh_s = tolerance_s + 60  # a bar is current when it closed within the tolerance
    fut = futures_returns(futures_bars.filter(pl.col("ts") <= now))
    und = underlying_returns(underlying_bars.filter(pl.col("ts") <= now))
    lead_move = overnight = fut_mom = und_mom = None
    if not fut.is_empty() and fut.item(-1, "ts") >= now - timedelta(seconds=fresh_s):
        last_ts: datetime = fut.item(-1, "ts")
        contract: str = fut.item(-1, "contract")
        px = float(fut.item(-1, "close"))
        lag = timedelta(minutes=estimate.best_lag_min)
        lead_move = (
            _pct(px, _close_at(fut, last_ts - lag, tolerance_s, contract))
            if estimate.best_lag_min > 0
            else 0.0
        )
        fut_mom = _pct(
            px, _close_at(fut, last_ts - timedelta(minutes=momentum_min), tolerance_s, contract)
        )
        prior_close = _prior_rth_close(und, now, fresh_s)
        overnight = _pct(px, _close_at(fut, prior_close, tolerance_s, contract))
    und_trading = not und.is_empty() and und.item(-1, "ts") >= now - timedelta(seconds=fresh_s)
    if und_trading:
        und_last: datetime = und.item(-1, "ts")
        und_mom = _pct(
            float(und.item(-1, "close")),
            _close_at(und, und_last - timedelta(minutes=momentum_min), tolerance_s),
        )
    gap = fut_mom - und_mom if fut_mom is not None and und_mom is not None else None
    basis = lead_move if und_trading else overnight
    expected = estimate.beta * basis if basis is not None else None
    if expected is None:
        direction = None
    elif estimate.best_corr < min_corr or abs(expected) < threshold_pct:
        direction = "neutral"
    else:
        direction = "up" if expected > 0 else "down"
    return LeadingSignal(
        underlying=estimate.underlying,
        future=estimate.future,
        ts=now,
        days_of_data=estimate.days,
        best_lag_min=estimate.best_lag_min,
        best_corr=estimate.best_corr,
        beta=estimate.beta,
        lead_move_pct=lead_move,
        overnight_move_pct=overnight,
        futures_momentum_pct=fut_mom,
        underlying_momentum_pct=und_mom,
        momentum_gap_pct=gap,
        expected_move_pct=expected,
        direction=direction,
    )


def _prior_rth_close(und: pl.DataFrame, now: datetime, fresh_s: int) -> datetime | None:
    """ts of the underlying's last regular-hours bar before the current session.

    While the underlying trades, that is the last bar of an earlier New York date;
    otherwise it is simply its latest bar.
    """
    if und.is_empty():
        return None
    last: datetime = und.item(-1, "ts")
    if last < now - timedelta(seconds=fresh_s):
        return last
    ny = pl.col("ts").dt.convert_time_zone(MARKET_TZ.key).dt.date()
    today = und.select(ny.last()).item()
    earlier = und.filter(ny < today)
    return None if earlier.is_empty() else earlier.item(-1, "ts")


# -- store-level entry points ------------------------------------------------------------
SIGNAL_COLUMNS = [
    "underlying",
    "future",
    "ts",
    "status",
    "days_of_data",
    "best_lag_min",
    "best_corr",
    "beta",
    "lead_move_pct",
    "overnight_move_pct",
    "futures_momentum_pct",
    "underlying_momentum_pct",
    "momentum_gap_pct",
    "expected_move_pct",
    "direction",
]


def load_window(
    store: DeltaStore, underlying: str, future: str, start: datetime, end: datetime
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Futures and underlying bars in [start, end], pruned by the date partitions."""

    def where(symbol: str) -> pl.Expr:
        return (
            (pl.col("date") >= start.date())
            & (pl.col("date") <= end.date())
            & (pl.col("symbol") == symbol)
            & pl.col("ts").is_between(pl.lit(start).cast(UTC_US), pl.lit(end).cast(UTC_US))
        )

    fut = store.read(
        "futures_bars", where=where(future), columns=["ts", "contract", "close"]
    ).collect()
    und = store.read("underlying_bars", where=where(underlying), columns=["ts", "close"]).collect()
    return fut, und


def compute_signals(store: DeltaStore, settings: Settings, now: datetime) -> pl.DataFrame:
    """One futures_signals row per configured underlying (insufficient_data rows included)."""
    an = settings.analysis
    start = now - timedelta(days=an.lead_lag_window_days)
    rows: list[dict[str, object]] = []
    for underlying in settings.universe.underlyings:
        future = settings.universe.leading_future.get(underlying)
        if future is None:
            log.info("no leading future configured for %s; skipped", underlying)
            continue
        fut, und = load_window(store, underlying, future, start, now)
        est = lead_lag(
            fut,
            und,
            underlying=underlying,
            future=future,
            max_lag_min=an.lead_lag_max_lag_min,
            tolerance_s=an.asof_tolerance_s,
            min_days=an.lead_lag_min_days,
        )
        if isinstance(est, InsufficientData):
            log.info("%s", est.message)
            rows.append(_insufficient_row(est, future, now))
            continue
        sig = leading_signal(
            fut,
            und,
            est,
            now,
            momentum_min=an.lead_momentum_min,
            tolerance_s=an.asof_tolerance_s,
            threshold_pct=an.lead_signal_threshold_pct,
            min_corr=an.lead_lag_min_corr,
        )
        rows.append({**asdict(sig), "status": "ok"})
    return signals_frame(rows)


def _insufficient_row(est: InsufficientData, future: str, now: datetime) -> dict[str, object]:
    row: dict[str, object] = {c: None for c in SIGNAL_COLUMNS}
    row.update(
        underlying=est.underlying,
        future=future,
        ts=now,
        status="insufficient_data",
        days_of_data=est.have_days,
    )
    return row


def signals_frame(rows: list[dict[str, object]]) -> pl.DataFrame:
    schema = {
        "underlying": pl.String(),
        "future": pl.String(),
        "ts": UTC_US,
        "status": pl.String(),
        "days_of_data": pl.Int64(),
        "best_lag_min": pl.Int64(),
        "best_corr": pl.Float64(),
        "beta": pl.Float64(),
        "lead_move_pct": pl.Float64(),
        "overnight_move_pct": pl.Float64(),
        "futures_momentum_pct": pl.Float64(),
        "underlying_momentum_pct": pl.Float64(),
        "momentum_gap_pct": pl.Float64(),
        "expected_move_pct": pl.Float64(),
        "direction": pl.String(),
    }
    return pl.DataFrame([{c: r.get(c) for c in SIGNAL_COLUMNS} for r in rows], schema=schema)


def write_signals(store: DeltaStore, signals: pl.DataFrame) -> WriteResult:
    """Upsert the readings (keyed by underlying and ts: a repeated run rewrites nothing)."""
    return store.merge("futures_signals", signals)


def latest_signal(
    store: DeltaStore,
    underlying: str,
    *,
    need_days: int = 7,
    now: datetime | None = None,
    lookback: timedelta = timedelta(days=7),
) -> LeadingSignal | InsufficientData:
    """The newest reading for `underlying`, for the entry pipeline (check `is_fresh`).

    `InsufficientData` when the newest reading says there was too little history, or when
    no analysis has run yet (then the days are counted from the stored bars). With `now`,
    only readings within `lookback` before it are considered (a pruned, cheap read).
    """
    where = pl.col("underlying") == underlying
    if now is not None:
        since = now - lookback
        where = where & (pl.col("date") >= since.date()) & (pl.col("ts") <= now)
    newest = store.read("futures_signals", where=where).sort("ts").tail(1).collect()
    if newest.is_empty():
        return InsufficientData(underlying, need_days, _stored_days(store, underlying))
    row = newest.row(0, named=True)
    if row["status"] != "ok":
        return InsufficientData(underlying, need_days, int(row["days_of_data"]))
    return LeadingSignal(
        underlying=row["underlying"],
        future=row["future"],
        ts=row["ts"],
        days_of_data=int(row["days_of_data"]),
        best_lag_min=int(row["best_lag_min"]),
        best_corr=float(row["best_corr"]),
        beta=float(row["beta"]),
        lead_move_pct=row["lead_move_pct"],
        overnight_move_pct=row["overnight_move_pct"],
        futures_momentum_pct=row["futures_momentum_pct"],
        underlying_momentum_pct=row["underlying_momentum_pct"],
        momentum_gap_pct=row["momentum_gap_pct"],
        expected_move_pct=row["expected_move_pct"],
        direction=row["direction"],
    )


def _stored_days(store: DeltaStore, underlying: str) -> int:
    """Dates that have bars of `underlying` and of some future (partition metadata only)."""
    und = store.read("underlying_bars", where=pl.col("symbol") == underlying, columns=["date"])
    fut = store.read("futures_bars", columns=["date"])
    return int(
        und.unique().join(fut.unique(), on="date", how="inner").select(pl.len()).collect().item()
    )
