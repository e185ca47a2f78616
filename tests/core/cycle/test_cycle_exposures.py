"""The snapshot's assignment exposures (pin distance, dividend cushion, put extrinsic),
checked by hand on small books: what the pin-risk and early-assignment rules decide on."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime

import polars as pl
import pytest

from core.config import Settings
from core.cycle.market import BARS_SCHEMA, DIVIDEND_SCHEMA, market_context
from core.cycle.snapshot import exposures, strategy_snapshot

NOW = datetime(2026, 3, 20, 19, 0, tzinfo=UTC)  # Friday 15:00 New York
TODAY = date(2026, 3, 20)
LATER = date(2026, 4, 17)


def legs(*rows: tuple[str, str, int, float, date, float]) -> pl.DataFrame:
    """(strategy_id, right, ratio, strike, expiry, mid) option legs on SPY, 1 unit each."""
    return pl.DataFrame(
        {
            "strategy_id": [r[0] for r in rows],
            "strategy_type": "vertical",
            "underlying": "SPY",
            "managed": True,
            "sec_type": "OPT",
            "right": [r[1] for r in rows],
            "ratio": [r[2] for r in rows],
            "quantity": [r[2] for r in rows],
            "strike": [r[3] for r in rows],
            "expiry": [r[4] for r in rows],
            "mid": [r[5] for r in rows],
            "multiplier": 100,
            "avg_price": 1.0,
            "delta": 0.1,
            "gamma": 0.01,
            "iv": 0.2,
        },
        schema_overrides={"expiry": pl.Date, "strike": pl.Float64, "mid": pl.Float64},
    )


def context(
    spot: float = 500.0, ex: date | None = None, amount: float | None = None
) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "symbol": ["SPY"],
            "spot": [spot],
            "dividend_ex_date": [ex],
            "dividend_amount": [amount],
        },
        schema={"symbol": pl.String, "spot": pl.Float64, "dividend_ex_date": pl.Date,
                "dividend_amount": pl.Float64},
    )  # fmt: skip


def row(frame: pl.DataFrame, ctx: pl.DataFrame) -> dict[str, object]:
    return exposures(frame, ctx, TODAY).row(0, named=True)


def test_pin_distance_is_the_nearest_short_strike_expiring_today() -> None:
    book = legs(
        ("v", "P", -1, 497.0, TODAY, 0.5),  # 0.6% away
        ("v", "P", 1, 490.0, TODAY, 0.1),  # long: cannot be assigned
        ("v", "C", -1, 510.0, LATER, 2.0),  # does not expire today
    )
    assert row(book, context())["pin_distance_pct"] == pytest.approx(0.6)
    later = legs(("w", "P", -1, 500.0, LATER, 3.0))
    assert row(later, context())["pin_distance_pct"] == math.inf
    assert row(book, context(spot=math.nan))["pin_distance_pct"] is None  # no spot: unknown


def test_short_itm_put_extrinsic() -> None:
    book = legs(("p", "P", -1, 510.0, LATER, 10.03), ("p", "P", 1, 500.0, LATER, 3.0))
    got = row(book, context())
    assert got["put_extrinsic"] == pytest.approx(0.03)  # 10.03 - (510 - 500)
    otm = legs(("q", "P", -1, 490.0, LATER, 0.01))
    assert row(otm, context())["put_extrinsic"] == math.inf
    no_mid = legs(("r", "P", -1, 510.0, LATER, math.nan))
    assert row(no_mid, context())["put_extrinsic"] is None


def test_short_itm_call_before_its_ex_date() -> None:
    ex = date(2026, 3, 24)
    book = legs(("c", "C", -1, 490.0, LATER, 10.5), ("c", "C", 1, 480.0, LATER, 20.2))
    got = row(book, context(ex=ex, amount=1.75))
    assert got["dividend_cushion"] == pytest.approx(0.5 - 1.75)  # extrinsic 0.5 < dividend
    assert got["dividend_days"] == 4.0
    # not exposed: the ex-date after expiry, no dividend, the call out of the money
    for ctx in (
        context(ex=date(2026, 5, 1), amount=1.75),
        context(ex=None, amount=0.0),
        context(spot=480.0, ex=ex, amount=1.75),
        context(ex=TODAY, amount=1.75),  # already ex
    ):
        got = row(book, ctx)
        assert (got["dividend_cushion"], got["dividend_days"]) == (math.inf, math.inf)
    unknown = row(book, context(ex=None, amount=None))  # an ITM call, dividend not known
    assert unknown["dividend_cushion"] is None and unknown["dividend_days"] is None


def test_no_dividend_columns_leave_only_itm_calls_unknown() -> None:
    bare = pl.DataFrame({"symbol": ["SPY"], "spot": [500.0]})
    otm = legs(("c", "C", -1, 520.0, LATER, 1.0))
    assert row(otm, bare)["dividend_cushion"] == math.inf
    itm = legs(("c", "C", -1, 480.0, LATER, 21.0))
    assert row(itm, bare)["dividend_cushion"] is None


def test_the_snapshot_carries_the_exposures_to_the_rules() -> None:
    book = legs(("v", "P", -1, 499.0, TODAY, 1.2), ("v", "P", 1, 490.0, TODAY, 0.1))
    ctx = context(ex=None, amount=0.0).with_columns(
        regime=pl.lit("normal"), underlying_move_1h_pct=0.0, iv_percentile=50.0, vix=18.0
    )
    snap = strategy_snapshot(book, ctx, NOW).row(0, named=True)
    assert snap["pin_distance_pct"] == pytest.approx(0.2)
    assert snap["put_extrinsic"] == math.inf and snap["dividend_cushion"] == math.inf


def test_market_context_carries_dividends_and_unknown_stays_null() -> None:
    iv = pl.DataFrame(
        schema={"underlying": pl.String, "iv_percentile": pl.Float64, "iv_rank": pl.Float64,
                "reason": pl.String}
    )  # fmt: skip
    divs = pl.DataFrame([("SPY", date(2026, 3, 20), 1.7)], schema=DIVIDEND_SCHEMA, orient="row")
    ctx = market_context(
        ["SPY", "QQQ"], pl.DataFrame(schema=BARS_SCHEMA), {"SPY": 500.0, "QQQ": 400.0},
        18.0, iv, Settings(), NOW, divs,
    )  # fmt: skip
    rows = {r["symbol"]: r for r in ctx.iter_rows(named=True)}
    assert (rows["SPY"]["dividend_ex_date"], rows["SPY"]["dividend_amount"]) == (TODAY, 1.7)
    assert rows["QQQ"]["dividend_amount"] is None  # not asked / no answer: unknown
