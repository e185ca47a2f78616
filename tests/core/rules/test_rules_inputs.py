"""Snapshot validation and building: bad input raises clearly, missing values become null."""

from __future__ import annotations

import math
from datetime import date, timedelta

import polars as pl
import pytest
from rules_helpers import NOW, QUIET, snapshot

from core.domain.timezones import UTC_US
from core.rules import build_snapshot, normalize_snapshot, profit_pct_expr, underlying_move_1h


def test_missing_required_column_is_named() -> None:
    with pytest.raises(ValueError, match="'net_gamma' is missing"):
        normalize_snapshot(snapshot({}).drop("net_gamma"))


def test_wrong_dtype_is_named_with_the_fix() -> None:
    bad = snapshot({}).with_columns(pl.col("dte").cast(pl.String))
    with pytest.raises(ValueError, match=r"'dte' has dtype String, expected Int64.*cast"):
        normalize_snapshot(bad)
    fractional = snapshot({}).with_columns(pl.col("dte").cast(pl.Float64))
    with pytest.raises(ValueError, match="'dte' has dtype Float64"):
        normalize_snapshot(fractional)


def test_integer_and_all_null_columns_are_accepted() -> None:
    frame = snapshot({}).with_columns(
        pl.col("profit_pct").cast(pl.Int32), pl.lit(None).alias("net_gamma")
    )
    out = normalize_snapshot(frame)
    assert out.schema["profit_pct"] == pl.Float64 and out["net_gamma"].to_list() == [None]


def test_optional_columns_may_be_absent() -> None:
    out = normalize_snapshot(snapshot({}).drop("regime", "entry_iv", "underlying"))
    assert out.row(0, named=True)["regime"] is None and out.height == 1


def test_nan_and_inf_become_null() -> None:
    out = normalize_snapshot(snapshot({"iv": math.nan, "net_delta": -math.inf}))
    assert (out["iv"][0], out["net_delta"][0]) == (None, None)


def test_duplicate_and_null_ids_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"\['S1'\] appear more than once"):
        normalize_snapshot(snapshot({}, {}))
    with pytest.raises(ValueError, match="null strategy_id"):
        normalize_snapshot(snapshot({"strategy_id": None}))


def test_unknown_strategy_type_and_regime_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"strategy_type values \['strangle'\]"):
        normalize_snapshot(snapshot({"strategy_type": "strangle"}))
    with pytest.raises(ValueError, match=r"regime values \['calm'\]"):
        normalize_snapshot(snapshot({"regime": "calm"}))


def test_profit_pct_for_credit_and_debit_positions() -> None:
    frame = pl.DataFrame(
        {
            "entry": [2.00, 2.00, 2.00, 1.50, 0.0],
            "mark": [0.40, 6.00, 2.00, 2.25, 1.0],
            "credit": [True, True, True, False, True],
        }
    )
    got = frame.select(profit_pct_expr(pl.col("entry"), pl.col("mark"), pl.col("credit")))
    assert got.to_series().to_list() == [80.0, -200.0, 0.0, 50.0, None]


def test_build_snapshot_from_prices_expiry_and_context() -> None:
    facts = pl.DataFrame(
        {
            **{k: [v] for k, v in QUIET.items() if k not in ("profit_pct", "dte", "regime")},
            "entry_price": [1.60],
            "mark": [0.40],
            "is_credit": [True],
            "expiry": [date(2026, 4, 17)],
        }
    ).drop("underlying_move_1h_pct")
    regimes = pl.DataFrame({"symbol": ["SPY", "QQQ"], "regime": ["crash", "normal"]})
    moves = pl.DataFrame({"symbol": ["SPY"], "underlying_move_1h_pct": [-1.5]})
    out = build_snapshot(facts, regimes=regimes, moves=moves, today=date(2026, 3, 2))
    row = out.row(0, named=True)
    assert row["profit_pct"] == pytest.approx(75.0)
    assert (row["dte"], row["regime"], row["underlying_move_1h_pct"]) == (46, "crash", -1.5)


def test_build_snapshot_explains_what_is_missing() -> None:
    with pytest.raises(ValueError, match=r"profit_pct.*missing \['mark'\]"):
        build_snapshot(
            snapshot({}).drop("profit_pct").with_columns(entry_price=1.0, is_credit=True)
        )
    with pytest.raises(ValueError, match="'dte', or an 'expiry'"):
        build_snapshot(snapshot({}).drop("dte"))


def _bars(symbol: str, closes: list[float], step: timedelta) -> pl.DataFrame:
    n = len(closes)
    ts = [NOW - step * (n - 1 - i) for i in range(n)]
    return pl.DataFrame({"symbol": [symbol] * n, "ts": ts, "close": closes}).with_columns(
        pl.col("ts").cast(UTC_US)
    )


def test_underlying_move_over_the_last_hour() -> None:
    # 13 five-minute closes: the first is exactly one hour before the last.
    closes = [100.0] + [99.0] * 11 + [96.5]
    bars = pl.concat(
        [_bars("SPY", closes, timedelta(minutes=5)), _bars("QQQ", [50.0, 50.5], timedelta(hours=1))]
    )
    got = dict(underlying_move_1h(bars, NOW).iter_rows())
    assert got["SPY"] == pytest.approx(-3.5)
    assert got["QQQ"] == pytest.approx(1.0)


def test_underlying_move_is_null_when_stale_or_short() -> None:
    stale = _bars("SPY", [100.0, 90.0], timedelta(hours=1)).with_columns(
        pl.col("ts") - pl.duration(minutes=30)
    )
    short = _bars("QQQ", [100.0, 99.0], timedelta(minutes=10))  # no close an hour ago
    got = dict(underlying_move_1h(pl.concat([stale, short]), NOW).iter_rows())
    assert got == {"QQQ": None, "SPY": None}


def test_underlying_move_ignores_bars_after_now() -> None:
    bars = _bars("SPY", [100.0, 97.0], timedelta(hours=1))
    future = bars.with_columns(pl.col("ts") + pl.duration(minutes=30), pl.lit(50.0).alias("close"))
    got = dict(underlying_move_1h(pl.concat([bars, future]), NOW).iter_rows())
    assert got["SPY"] == pytest.approx(-3.0)
