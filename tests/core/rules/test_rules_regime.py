"""Regime detection from daily closes and VIX, and the take-profit target it selects."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from rules_helpers import NOW

from core.config import RuleSettings
from core.domain.timezones import UTC_US
from core.rules import daily_closes, detect_regimes, profit_target, profit_target_expr
from core.rules.targets import check_targets

S = RuleSettings()
LAST_CLOSE = NOW - timedelta(hours=18)  # yesterday's close


def closes(values: list[float], symbol: str = "SPY", last: datetime = LAST_CLOSE) -> pl.DataFrame:
    n = len(values)
    ts = [last - timedelta(days=n - 1 - i) for i in range(n)]
    return pl.DataFrame({"symbol": [symbol] * n, "ts": ts, "close": values}).with_columns(
        pl.col("ts").cast(UTC_US)
    )


def vix(level: float | None, last: datetime = LAST_CLOSE) -> pl.DataFrame:
    rows = [] if level is None else [(last, level)]
    return pl.DataFrame(rows, schema={"ts": UTC_US, "close": pl.Float64}, orient="row")


def pattern(steps: list[float], n: int = 25, start: float = 100.0) -> list[float]:
    out = [start]
    for i in range(n - 1):
        out.append(out[-1] + steps[i % len(steps)])
    return out


TREND = pattern([1.0])  # efficiency 1
CHOP = pattern([1.0, -1.0])  # efficiency 0
MIXED = pattern([3.0, -2.0])  # efficiency 0.2: neither trending nor range-bound


def regime_of(values: list[float], level: float | None, settings: RuleSettings = S) -> str:
    out = detect_regimes(closes(values), vix(level), settings, NOW)
    return out.row(0, named=True)["regime"]


@pytest.mark.parametrize(
    ("values", "level", "expected"),
    [
        (MIXED, 18.0, "normal"),
        (TREND, 18.0, "trending"),
        (CHOP, 18.0, "range_bound"),
        (MIXED, 30.0, "high_vol"),
        (TREND, 30.0, "high_vol"),  # a vol spike outranks the trend
        (MIXED, 12.0, "low_vol"),
        (TREND, 12.0, "trending"),  # a steady drift outranks calm
        (MIXED, 45.0, "crash"),
        (CHOP, None, "unknown"),
    ],
)
def test_regimes(values: list[float], level: float | None, expected: str) -> None:
    assert regime_of(values, level) == expected


@pytest.mark.parametrize(
    ("level", "expected"),
    [(40.0, "crash"), (39.99, "high_vol"), (25.0, "high_vol"), (24.99, "normal"),
     (14.0, "normal"), (13.99, "low_vol")],
)  # fmt: skip
def test_vix_thresholds(level: float, expected: str) -> None:
    assert regime_of(MIXED, level) == expected


@pytest.mark.parametrize(("last", "crash"), [(93.0, True), (92.99, True), (93.01, False)])
def test_crash_by_drawdown_from_recent_high(last: float, crash: bool) -> None:
    values = [90.0] * 24 + [last]
    values[-3] = 100.0  # the high of the last 5 closes; 7% below it is 93
    assert (regime_of(values, 18.0) == "crash") is crash
    values[-7] = 120.0  # a higher close before that window does not count
    assert (regime_of(values, 18.0) == "crash") is crash


def test_drawdown_crash_is_seen_even_without_vix() -> None:
    values = [*MIXED[:-1], 80.0]
    values[-2] = 100.0
    out = detect_regimes(closes(values), vix(None), S, NOW).row(0, named=True)
    assert out["regime"] == "crash"


def test_trend_threshold() -> None:
    # 20 moves, 7 up 13 down of 1 point: net 6 / path 20 = 0.3 -> normal; 0.35 -> trending
    assert regime_of(pattern([1.0] * 7 + [-1.0] * 13, n=21), 18.0) == "normal"
    at = RuleSettings(regime_trending_efficiency=0.30)
    assert regime_of(pattern([1.0] * 7 + [-1.0] * 13, n=21), 18.0, at) == "trending"


def test_unknown_when_data_is_missing_stale_or_short() -> None:
    frame = pl.concat(
        [
            closes(MIXED, "SPY"),
            closes(MIXED, "QQQ", last=LAST_CLOSE - timedelta(days=5)),  # stale
            closes(MIXED[:10], "IWM"),  # too short for a 20-close lookback
        ]
    )
    out = detect_regimes(frame, vix(18.0), S, NOW, symbols=["SPY", "QQQ", "IWM", "DIA"])
    got = {r["symbol"]: r for r in out.iter_rows(named=True)}
    assert {s: r["regime"] for s, r in got.items()} == {
        "SPY": "normal", "QQQ": "unknown", "IWM": "unknown", "DIA": "unknown",
    }  # fmt: skip
    assert "stale" in got["QQQ"]["reason"]
    assert "only 10 of 21 closes" in got["IWM"]["reason"]
    assert "no closes" in got["DIA"]["reason"]
    stale_vix = detect_regimes(closes(MIXED), vix(18.0, LAST_CLOSE - timedelta(days=6)), S, NOW)
    assert stale_vix["regime"].to_list() == ["unknown"]
    assert "VIX close of" in stale_vix["reason"][0]


def test_future_closes_are_ignored() -> None:
    past = closes(MIXED)
    future = closes([50.0], last=NOW + timedelta(days=1))  # a crash that has not happened yet
    out = detect_regimes(pl.concat([past, future]), vix(18.0), S, NOW)
    assert out["regime"].to_list() == ["normal"]


def test_reason_carries_the_measurements() -> None:
    row = detect_regimes(closes(MIXED), vix(18.0), S, NOW).row(0, named=True)
    assert row["efficiency"] == pytest.approx(0.2)
    assert "VIX 18.0" in row["reason"] and "efficiency 0.2" in row["reason"]


def test_daily_closes_use_the_market_date() -> None:
    ts = [
        datetime(2026, 3, 2, 14, 30, tzinfo=UTC),
        datetime(2026, 3, 2, 20, 59, tzinfo=UTC),
        datetime(2026, 3, 3, 0, 30, tzinfo=UTC),  # still 2 March in New York
        datetime(2026, 3, 3, 14, 30, tzinfo=UTC),
    ]
    bars = pl.DataFrame(
        {"symbol": ["SPY"] * 4, "ts": ts, "close": [1.0, 2.0, 3.0, 4.0]}
    ).with_columns(pl.col("ts").cast(UTC_US))
    assert daily_closes(bars)["close"].to_list() == [3.0, 4.0]


# -- targets ----------------------------------------------------------------------------------


def test_profit_target_per_regime_and_fallback() -> None:
    assert profit_target("crash", S) == 40.0
    assert profit_target("low_vol", S) == 90.0
    assert profit_target(None, S) == S.profit_target_fallback_pct == 50.0
    assert profit_target("unknown", S) == 50.0
    partial = RuleSettings(profit_target_pct={"crash": 30.0}, profit_target_fallback_pct=45.0)
    frame = pl.DataFrame({"regime": ["crash", "normal", None]}, schema={"regime": pl.String})
    assert frame.select(profit_target_expr(partial)).to_series().to_list() == [30.0, 45.0, 45.0]


def test_unknown_regime_in_targets_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"unknown regime\(s\) \['calm'\]"):
        check_targets(RuleSettings(profit_target_pct={"calm": 90.0}))
