"""The rules' strategy snapshot from held legs and quotes, and the 1-hour move: the numbers
the exit rules decide on, checked by hand on small books."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest

from core.cycle.market import one_hour_moves
from core.cycle.snapshot import entry_values, strategy_snapshot
from core.domain.timezones import UTC_US
from core.rules.inputs import normalize_snapshot

NOW = datetime(2026, 3, 2, 15, 30, tzinfo=UTC)  # 10:30 New York
EXPIRY = date(2026, 4, 17)  # 46 days after 2026-03-02

LEG_COLUMNS = (
    "strategy_id", "strategy_type", "underlying", "managed", "sec_type", "right", "expiry",
    "ratio", "quantity", "multiplier", "avg_price", "mid", "delta", "gamma", "iv",
)  # fmt: skip


# strikes around SPY at 500 (CONTEXT): every leg out of the money, nothing expires today
STRIKES = {("P", -1): 480.0, ("P", 1): 470.0, ("C", -1): 520.0, ("C", 1): 530.0}


def legs(*rows: tuple[object, ...]) -> pl.DataFrame:
    return _legs(*rows).with_columns(
        pl.struct("right", pl.col("ratio").sign())
        .map_elements(lambda r: STRIKES.get((r["right"], r["ratio"])), return_dtype=pl.Float64)
        .alias("strike")
    )


def _legs(*rows: tuple[object, ...]) -> pl.DataFrame:
    return pl.DataFrame(
        [dict(zip(LEG_COLUMNS, r, strict=True)) for r in rows],
        schema={
            "strategy_id": pl.String, "strategy_type": pl.String, "underlying": pl.String,
            "managed": pl.Boolean, "sec_type": pl.String, "right": pl.String,
            "expiry": pl.Date, "ratio": pl.Int64, "quantity": pl.Int64,
            "multiplier": pl.Int64, "avg_price": pl.Float64, "mid": pl.Float64,
            "delta": pl.Float64, "gamma": pl.Float64, "iv": pl.Float64,
        },
    )  # fmt: skip


def condor(sid: str = "ic", units: int = 2, *, short_put_mid: float = 0.60) -> list[tuple]:
    """Credit 1.20 received, 0.80 to close: +33.3%."""
    base = (sid, "iron_condor", "SPY", True, "OPT")
    return [
        (*base, "P", EXPIRY, -1, -units, 100, 1.00, short_put_mid, -0.15, 0.010, 0.25),
        (*base, "P", EXPIRY, 1, units, 100, 0.40, 0.20, -0.08, 0.008, 0.28),
        (*base, "C", EXPIRY, -1, -units, 100, 0.90, 0.50, 0.14, 0.009, 0.20),
        (*base, "C", EXPIRY, 1, units, 100, 0.30, 0.10, 0.06, 0.006, 0.19),
    ]


CONTEXT = pl.DataFrame(
    {
        "symbol": ["SPY"],
        "spot": [500.0],
        "regime": ["normal"],
        "underlying_move_1h_pct": [-0.4],
        "iv_percentile": [35.0],
        "vix": [17.0],
    }
)


def by_id(frame: pl.DataFrame) -> dict[str, dict[str, object]]:
    return {r["strategy_id"]: r for r in frame.iter_rows(named=True)}


def test_credit_condor_per_unit_numbers() -> None:
    row = by_id(strategy_snapshot(legs(*condor()), CONTEXT, NOW))["ic"]
    assert row["strategy_type"] == "iron_condor" and row["units"] == 2
    assert row["entry_usd"] == pytest.approx(-120.0) and row["value_usd"] == pytest.approx(-80.0)
    assert row["profit_pct"] == pytest.approx(100 * (120 - 80) / 120)
    assert row["net_delta"] == pytest.approx(0.15 - 0.08 - 0.14 + 0.06)
    assert row["net_gamma"] == pytest.approx(-0.010 + 0.008 - 0.009 + 0.006)
    assert row["iv"] == pytest.approx((0.25 + 0.20) / 2)  # the short legs' vol
    assert row["dte"] == 46
    assert (row["regime"], row["iv_percentile"], row["vix"]) == ("normal", 35.0, 17.0)
    assert row["entry_iv"] == row["iv"] and row["entry_vix"] == 17.0  # first-seen seeds


def test_a_leg_without_a_quote_makes_the_number_unknown_not_partial() -> None:
    snap = strategy_snapshot(legs(*condor(short_put_mid=math.nan)), CONTEXT, NOW)
    row = by_id(snap)["ic"]
    assert row["profit_pct"] is None and row["net_delta"] is not None
    nan_greek = legs(*[(*r[:-3], math.nan, *r[-2:]) if i == 0 else r
                       for i, r in enumerate(condor())])  # fmt: skip
    assert by_id(strategy_snapshot(nan_greek, CONTEXT, NOW))["ic"]["net_delta"] is None
    normalize_snapshot(snap)  # the rules accept it as it is


def test_the_rules_see_the_book_type_unless_v6_may_not_manage_it() -> None:
    put_spread = [
        ("v", "vertical", "SPY", True, "OPT", "P", EXPIRY, -1, -1, 100, 2.0, 1.5, -0.3, 0.02, 0.2),
        ("v", "vertical", "SPY", True, "OPT", "P", EXPIRY, 1, 1, 100, 1.0, 0.7, -0.2, 0.02, 0.2),
    ]
    call_spread = [(r[0].replace("v", "c"), *r[1:5], "C", *r[6:]) for r in put_spread]
    single = [("s", "single", "SPY", True, "OPT", "C", EXPIRY, 1, 3, 100, 2.0, 3.0, 0.5, 0.01, 0.2)]
    ext = [("x", "external", "SPY", False, "OPT", "C", EXPIRY, 1, 1, 100, 2.0, 3.0, 0.5, 0.0, 0.2)]
    untagged = [
        (r[0].replace("v", "u"), "bull_put_spread", "SPY", False, *r[4:]) for r in put_spread
    ]
    frame = legs(*put_spread, *call_spread, *single, *ext, *untagged)
    rows = by_id(strategy_snapshot(frame, CONTEXT, NOW))
    assert rows["v"]["strategy_type"] == "vertical"
    assert rows["c"]["strategy_type"] == "vertical"
    assert rows["s"]["strategy_type"] == "single"
    assert rows["s"]["profit_pct"] == pytest.approx(50.0)  # a debit: (3 - 2) / 2
    assert rows["x"]["strategy_type"] == "external" and rows["x"]["managed"] is False
    assert rows["u"]["strategy_type"] == "external" and rows["u"]["book_type"] == "bull_put_spread"


def test_entry_values_measure_like_the_snapshot() -> None:
    class Leg:
        def __init__(self, ratio: int, iv: float) -> None:
            self.ratio, self.iv = ratio, iv

    class Cand:
        strategy_id = "ic"
        legs = (Leg(-1, 0.25), Leg(1, 0.28), Leg(-1, 0.20), Leg(1, 0.19))

    got = entry_values(Cand(), 17.0)  # type: ignore[arg-type]
    assert got == {"strategy_id": "ic", "entry_iv": pytest.approx(0.225), "entry_vix": 17.0}
    assert entry_values(Cand(), math.nan)["entry_vix"] is None  # type: ignore[arg-type]


def bars(closes: dict[datetime, float]) -> pl.DataFrame:
    return pl.DataFrame(
        {"symbol": ["SPY"] * len(closes), "ts": list(closes), "close": list(closes.values())},
        schema={"symbol": pl.String, "ts": UTC_US, "close": pl.Float64},
    )


def test_first_hour_move_is_measured_from_the_previous_close() -> None:
    open_ = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)  # 09:30 New York
    b = bars({datetime(2026, 2, 27, 20, 55, tzinfo=UTC): 100.0, open_: 101.0})
    now = open_ + timedelta(minutes=10)
    live = one_hour_moves(b, {"SPY": 103.0}, now).row(0, named=True)
    assert live["underlying_move_1h_pct"] == pytest.approx(3.0)  # a gap counts
    from_bar = one_hour_moves(b, {"SPY": math.nan}, now).row(0, named=True)
    assert from_bar["underlying_move_1h_pct"] == pytest.approx(1.0)  # no quote: fresh bar
    stale = one_hour_moves(b, {"SPY": math.nan}, now + timedelta(hours=2)).row(0, named=True)
    assert stale["underlying_move_1h_pct"] is None  # neither a quote nor a fresh bar


def test_an_hour_into_the_session_the_move_is_intraday() -> None:
    t0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
    b = bars({t0 + timedelta(minutes=5 * i): 100.0 + i for i in range(24)})  # 09:30-11:25
    now = t0 + timedelta(hours=2)
    # reference: the bar that ended by 10:30 (started 10:25, close 100 + 11)
    got = one_hour_moves(b, {"SPY": 120.0}, now).row(0, named=True)
    assert got["underlying_move_1h_pct"] == pytest.approx((120.0 / 111.0 - 1) * 100)
