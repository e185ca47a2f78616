"""Lead-lag of futures over underlyings: recovers a known lag, refuses thin data, signals."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from core.analysis.futures import (
    InsufficientData,
    LeadingSignal,
    LeadLag,
    compute_signals,
    latest_signal,
    lead_lag,
    leading_signal,
    write_signals,
)
from core.config import Settings
from core.domain.timezones import UTC_US
from core.store import DeltaStore

START = date(2026, 3, 2)
FUT_OPEN_MIN = 13 * 60  # futures bars from 13:00 UTC; the underlying trades 14:30-21:00
RTH_OFFSET = 90
RTH_MIN = 390


def synth(
    days: int, lag: int, *, seed: int = 1, noise: float = 1e-4, contract: str = "ESH6"
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Futures random walk; the underlying is the future `lag` minutes earlier, plus noise."""
    rng = np.random.default_rng(seed)
    sessions = [d for d in (START + timedelta(days=i) for i in range(days * 2)) if d.weekday() < 5]
    fut, und = [], []
    level = np.log(6800.0)
    for d in sessions[:days]:
        t0 = datetime(d.year, d.month, d.day, tzinfo=UTC) + timedelta(minutes=FUT_OPEN_MIN)
        n = RTH_OFFSET + RTH_MIN + 30
        logf = level + np.cumsum(rng.normal(0, 5e-4, n))
        level = logf[-1]
        ts = pl.datetime_range(
            t0, t0 + timedelta(minutes=n - 1), "1m", eager=True, time_zone="UTC"
        ).cast(UTC_US)
        fut.append(
            _ohlc(ts, np.exp(logf)).with_columns(symbol=pl.lit("ES"), contract=pl.lit(contract))
        )
        i0 = RTH_OFFSET
        logu = logf[i0 - lag : i0 - lag + RTH_MIN] + np.log(0.1) + rng.normal(0, noise, RTH_MIN)
        und.append(_ohlc(ts[i0 : i0 + RTH_MIN], np.exp(logu)).with_columns(symbol=pl.lit("SPY")))
    return pl.concat(fut), pl.concat(und)


def _ohlc(ts: pl.Series, close: np.ndarray) -> pl.DataFrame:
    open_ = np.concatenate([[close[0]], close[:-1]])
    return pl.DataFrame(
        {
            "ts": ts,
            "open": open_,
            "high": np.maximum(open_, close),
            "low": np.minimum(open_, close),
            "close": close,
            "volume": np.full(len(close), 100, dtype=np.int64),
        }
    )


def estimate(fut: pl.DataFrame, und: pl.DataFrame, min_days: int = 7) -> LeadLag | InsufficientData:
    return lead_lag(
        fut, und, underlying="SPY", future="ES", max_lag_min=10, tolerance_s=90, min_days=min_days
    )


@pytest.mark.parametrize("lag", [0, 2, 5])
def test_recovers_known_lag(lag: int) -> None:
    fut, und = synth(8, lag)
    est = estimate(fut, und)
    assert isinstance(est, LeadLag)
    assert est.best_lag_min == lag
    assert est.best_corr > 0.9
    assert est.beta == pytest.approx(1.0, abs=0.05)
    assert est.days == 8
    others = est.correlations.filter(pl.col("lag_min") != lag)["corr"]
    assert others.abs().max() < 0.2  # type: ignore[operator]


def test_fewer_days_than_required_says_exactly_how_many() -> None:
    fut, und = synth(5, 2)
    est = estimate(fut, und)
    assert isinstance(est, InsufficientData)
    assert (est.need_days, est.have_days) == (7, 5)
    assert est.message == ("lead-lag for SPY: need 7 days of futures and underlying bars, have 5")


def test_days_count_only_where_both_series_exist() -> None:
    fut, und = synth(8, 2)
    last_day = und["ts"].dt.date().max()
    est = estimate(fut.filter(pl.col("ts").dt.date() != last_day), und, min_days=9)
    assert isinstance(est, InsufficientData)
    assert est.have_days == 7


def test_roll_does_not_create_a_return() -> None:
    fut, und = synth(8, 2)
    day = fut["ts"].dt.date().unique().sort()[4]
    # From day 5 the next contract trades at a 1% premium: a jump that is not a move.
    rolled = fut.with_columns(
        pl.when(pl.col("ts").dt.date() >= day)
        .then(pl.lit("ESM6"))
        .otherwise("contract")
        .alias("contract"),
        pl.when(pl.col("ts").dt.date() >= day)
        .then(pl.col("close") * 1.01)
        .otherwise("close")
        .alias("close"),
    )
    est = estimate(rolled, und)
    assert isinstance(est, LeadLag)
    assert est.best_lag_min == 2
    assert est.best_corr > 0.9


def _signal(fut: pl.DataFrame, und: pl.DataFrame, now: datetime) -> LeadingSignal:
    est = estimate(fut.filter(pl.col("ts") <= now), und.filter(pl.col("ts") <= now))
    assert isinstance(est, LeadLag)
    return leading_signal(
        fut, und, est, now, momentum_min=15, tolerance_s=90, threshold_pct=0.1, min_corr=0.1
    )


def test_signal_in_regular_hours_is_the_move_the_underlying_owes() -> None:
    fut, und = synth(8, 2)
    last_fut = fut["ts"].max()
    # Futures jump 0.5% in the last minute of an RTH bar set: the underlying has not followed.
    now = und["ts"].max() - timedelta(minutes=30)
    fut = fut.filter(pl.col("ts") <= now).with_columns(
        pl.when(pl.col("ts") == now).then(pl.col("close") * 1.005).otherwise("close").alias("close")
    )
    und = und.filter(pl.col("ts") <= now)
    sig = _signal(fut, und, now)
    assert sig.best_lag_min == 2
    assert sig.lead_move_pct is not None and sig.lead_move_pct > 0.4
    assert sig.expected_move_pct == pytest.approx(sig.beta * sig.lead_move_pct)
    assert sig.direction == "up"
    assert sig.underlying_momentum_pct is not None and sig.momentum_gap_pct is not None
    assert last_fut > now


def test_signal_overnight_uses_futures_move_since_prior_close() -> None:
    fut, und = synth(8, 2)
    close_ts = und["ts"].max()
    now = fut["ts"].max()  # after the underlying closed, futures still trading
    ref = fut.filter(pl.col("ts") <= close_ts)["close"][-1]
    # Make the futures drop 1% after the close.
    fut = fut.with_columns(
        pl.when(pl.col("ts") == now).then(pl.lit(ref * 0.99)).otherwise("close").alias("close")
    )
    sig = _signal(fut, und, now)
    assert sig.underlying_momentum_pct is None  # the underlying is closed
    assert sig.overnight_move_pct == pytest.approx(-1.0, abs=1e-9)
    assert sig.expected_move_pct == pytest.approx(sig.beta * -1.0)
    assert sig.direction == "down"


def test_stale_futures_give_no_direction() -> None:
    fut, und = synth(8, 2)
    now = fut["ts"].max() + timedelta(hours=3)
    sig = _signal(fut, und, now)
    assert sig.direction is None
    assert sig.expected_move_pct is None


def test_store_round_trip_and_latest_signal(store_root: Path) -> None:
    store = DeltaStore(store_root)
    settings = Settings(
        universe={"underlyings": ["SPY"], "futures": ["ES"], "leading_future": {"SPY": "ES"}}
    )
    fut, und = synth(8, 2)
    # Before anything is stored or computed, the answer says so with the exact count.
    none_yet = latest_signal(store, "SPY")
    assert isinstance(none_yet, InsufficientData) and none_yet.have_days == 0

    store.merge("futures_bars", fut.filter(pl.col("ts").dt.date() < date(2026, 3, 5)))
    store.merge("underlying_bars", und)
    assert latest_signal(store, "SPY") == InsufficientData("SPY", 7, 3)
    now = datetime(2026, 3, 11, 12, tzinfo=UTC)
    thin = compute_signals(store, settings, now)
    write_signals(store, thin)
    assert thin.row(0, named=True)["status"] == "insufficient_data"
    got = latest_signal(store, "SPY")
    assert isinstance(got, InsufficientData) and got.have_days == 3

    store.merge("futures_bars", fut)
    now = und["ts"].max() + timedelta(minutes=1)
    full = compute_signals(store, settings, now)
    assert write_signals(store, full).rows_inserted == 1
    assert write_signals(store, full).version is None  # a repeat writes nothing
    sig = latest_signal(store, "SPY")
    assert isinstance(sig, LeadingSignal)
    assert (sig.best_lag_min, sig.days_of_data, sig.ts) == (2, 8, now)
    assert latest_signal(store, "SPY", now=now) == sig
    earlier = latest_signal(store, "SPY", now=now - timedelta(minutes=1))
    assert isinstance(earlier, InsufficientData) and earlier.have_days == 3
    assert sig.is_fresh(now + timedelta(minutes=4), timedelta(minutes=5))
    assert not sig.is_fresh(now + timedelta(minutes=6), timedelta(minutes=5))


@pytest.mark.parametrize("lead", [1, 4])
def test_recovers_the_market_simulators_lead(lead: int) -> None:
    from core.clock import SimClock
    from core.domain import Contract
    from core.marketdata.futures_collection import bars_frame
    from core.marketdata.futures_contracts import front_contract
    from core.sim.market import MarketSimulator

    settings = Settings(sim={"futures_lead_minutes": lead})
    now = datetime(2026, 3, 16, 21, 30, tzinfo=UTC)
    market = MarketSimulator.from_settings(settings, SimClock(now))
    fut = market.resolve(front_contract("ES", now, 8))
    spy = market.resolve(Contract.stock("SPY"))
    window = timedelta(days=14)
    fut_bars = bars_frame("ES", fut.local_symbol, market.bars(fut, end=now, duration=window))
    spy_bars = bars_frame("SPY", "SPY", market.bars(spy, end=now, duration=window))
    est = estimate(fut_bars, spy_bars)
    assert isinstance(est, LeadLag)
    assert est.best_lag_min == settings.sim.futures_lead_minutes
    assert est.days == 10
