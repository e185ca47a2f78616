"""Portfolio limits and hard caps: each limit refuses a candidate that breaches it (with the
right numbers) and accepts one just inside; correlation is measured from stored bars."""

from __future__ import annotations

import inspect
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from core.config import ConfigError, LimitSettings, Settings, load_settings
from core.domain import AccountSummary
from core.domain.timezones import UTC_US
from core.risk.limits import (
    HARD_CAPS,
    MAX_CONTRACTS_PER_DAY,
    MAX_CONTRACTS_PER_ORDER,
    MAX_LOSS_PER_DAY_PCT,
    MAX_LOSS_PER_ORDER_PCT,
    MAX_NOTIONAL_PER_DAY,
    MAX_NOTIONAL_PER_ORDER,
    Book,
    LimitResult,
    candidate_book,
    check_hard_caps,
    check_limits,
    record_rejections,
)
from core.store import DeltaStore

NOW = datetime(2026, 3, 10, 16, 0, tzinfo=UTC)  # 12:00 New York
LAST_WEEK = NOW - timedelta(days=7)
SETTINGS = LimitSettings(
    max_portfolio_delta=50.0,
    max_underlying_delta=25.0,
    max_concentration_pct=40.0,
    correlation_threshold=0.8,
    correlation_lookback_days=20,
    max_correlated_exposure_pct=60.0,
    max_buying_power_pct=50.0,
    max_open_strategies=3,
    max_new_strategies_per_day=2,
)


def account(margin: float = 0.0, net_liq: float = 100_000.0) -> AccountSummary:
    return AccountSummary(
        account="DU0000001",
        net_liquidation=net_liq,
        buying_power=2 * net_liq,
        available_funds=net_liq - margin,
        maintenance_margin=margin,
    )


def book(*strategies: dict[str, Any]) -> Book:
    """Each strategy gets one leg of 10 contracts whose position delta is `delta`."""
    if not strategies:
        return Book.empty()
    legs = pl.DataFrame(
        {
            "strategy_id": [s["strategy_id"] for s in strategies],
            "underlying": [s["underlying"] for s in strategies],
            "quantity": [10] * len(strategies),
            "delta": [s.get("delta", 0.0) / 10 for s in strategies],
            "multiplier": [100] * len(strategies),
            "strike": [500.0] * len(strategies),
        }
    )
    strats = pl.DataFrame(
        {
            "strategy_id": [s["strategy_id"] for s in strategies],
            "underlying": [s["underlying"] for s in strategies],
            "max_loss": [s.get("max_loss", 1_000.0) for s in strategies],
            "buying_power": [s.get("buying_power", 1_000.0) for s in strategies],
            "opened_at": [s.get("opened_at", LAST_WEEK) for s in strategies],
            "closed_at": [s.get("closed_at") for s in strategies],
        },
        schema_overrides={"opened_at": UTC_US, "closed_at": UTC_US},
    )
    return Book(legs, strats)


def s(sid: str, und: str, **kw: Any) -> dict[str, Any]:
    return {"strategy_id": sid, "underlying": und, **kw}


def candidate(
    und: str = "SPY",
    *,
    delta: float = 0.0,
    max_loss: float = 1_000.0,
    buying_power: float = 1_000.0,
    qty: int = 1,
    strike: float = 500.0,
) -> Book:
    legs = pl.DataFrame(
        {
            "strategy_id": ["cand"],
            "underlying": [und],
            "quantity": [qty],
            "delta": [delta / qty],
            "multiplier": [100],
            "strike": [strike],
        }
    )
    strategy = pl.DataFrame(
        {
            "strategy_id": ["cand"],
            "underlying": [und],
            "max_loss": [max_loss],
            "buying_power": [buying_power],
            "opened_at": [NOW],
        },
        schema_overrides={"opened_at": UTC_US},
    )
    return candidate_book(legs, strategy)


def run(b: Book, c: Book, acct: AccountSummary | None = None, **kw: Any) -> LimitResult:
    return check_limits(b, c, acct or account(), SETTINGS, NOW, **kw)


def row(result: LimitResult, limit: str) -> dict[str, Any]:
    rows = result.checks.filter(pl.col("limit") == limit)
    assert rows.height == 1, f"{limit} missing from {result.checks['limit'].to_list()}"
    return rows.row(0, named=True)


def rejected(result: LimitResult) -> list[str]:
    return result.rejections["limit"].to_list()


def test_empty_book_small_candidate_passes_every_check() -> None:
    result = run(Book.empty(), candidate())
    assert result.ok and rejected(result) == []
    assert result.checks["limit"].to_list() == [
        "portfolio_delta",
        "underlying_delta",
        "concentration",
        "correlated_exposure",
        "buying_power",
        "open_strategies",
        "new_strategies_today",
        "hard_contracts_per_order",
        "hard_notional_per_order",
        "hard_max_loss_per_order",
        "hard_contracts_per_day",
        "hard_notional_per_day",
        "hard_max_loss_per_day",
    ]


# -- delta ----------------------------------------------------------------------------------

DELTA_BOOK = [s("a", "SPY", delta=25.0), s("b", "QQQ", delta=20.0)]


def test_portfolio_delta_rejects_breach_with_numbers() -> None:
    result = run(book(*DELTA_BOOK), candidate("IWM", delta=5.5))
    assert rejected(result) == ["portfolio_delta"]
    r = row(result, "portfolio_delta")
    assert r["current"] == pytest.approx(45.0)
    assert r["with_candidate"] == pytest.approx(50.5)
    assert (r["cap"], r["scope"], r["hard"]) == (50.0, "portfolio", False)


@pytest.mark.parametrize("delta", [4.99, 5.0, -20.0])
def test_portfolio_delta_accepts_just_inside(delta: float) -> None:
    # 5.0 lands exactly on the cap (inclusive); -20 reduces it
    assert run(book(*DELTA_BOOK), candidate("IWM", delta=delta)).ok


def test_delta_reducing_candidate_is_not_refused_when_already_over() -> None:
    over = book(s("a", "SPY", delta=30.0), s("b", "QQQ", delta=30.0))
    result = run(over, candidate("IWM", delta=-5.0))  # 60 -> 55: still over, but better
    assert row(result, "portfolio_delta")["ok"]
    assert not run(over, candidate("IWM", delta=1.0)).ok


@pytest.mark.parametrize(("sign"), [1.0, -1.0])
def test_underlying_delta_rejects_breach_and_accepts_just_inside(sign: float) -> None:
    b = book(s("a", "SPY", delta=20.0 * sign))
    bad = run(b, candidate("SPY", delta=5.01 * sign))
    assert rejected(bad) == ["underlying_delta"]
    r = row(bad, "underlying_delta")
    assert (r["scope"], r["current"], r["cap"]) == ("SPY", pytest.approx(20.0), 25.0)
    assert r["with_candidate"] == pytest.approx(25.01)
    assert run(b, candidate("SPY", delta=4.99 * sign)).ok


def test_unknown_delta_is_refused_not_treated_as_zero() -> None:
    c = candidate("SPY", delta=1.0)
    c = Book(c.legs.with_columns(delta=pl.lit(None, dtype=pl.Float64)), c.strategies)
    result = run(Book.empty(), c)
    assert set(rejected(result)) == {"portfolio_delta", "underlying_delta"}
    r = row(result, "portfolio_delta")
    assert r["with_candidate"] is None and "unknown" in r["detail"]


# -- concentration ------------------------------------------------------------------------------


def test_concentration_rejects_breach_and_accepts_at_cap() -> None:
    b = book(s("a", "SPY", max_loss=31_000.0))
    bad = run(b, candidate("SPY", max_loss=9_001.0))
    assert rejected(bad) == ["concentration"]
    r = row(bad, "concentration")
    assert (r["current"], r["with_candidate"], r["cap"]) == (31.0, 40.001, 40.0)
    assert r["unit"] == "% of net liquidation"
    assert run(b, candidate("SPY", max_loss=9_000.0)).ok  # exactly 40% is allowed


# -- correlation ---------------------------------------------------------------------------------


def synthetic_bars(days: int = 30, seed: int = 3) -> pl.DataFrame:
    """Two bars a session; QQQ follows SPY closely, IWM moves on its own."""
    rng = np.random.default_rng(seed)
    sessions = [
        d
        for d in (date(2026, 1, 20) + timedelta(days=i) for i in range(60))
        if d.weekday() < 5 and d < NOW.date()
    ][-days:]
    spy_r = rng.normal(0, 0.01, len(sessions))
    qqq_r = 1.2 * spy_r + rng.normal(0, 0.002, len(sessions))
    iwm_r = rng.normal(0, 0.01, len(sessions))
    frames = []
    for sym, r, p0 in (("SPY", spy_r, 600.0), ("QQQ", qqq_r, 500.0), ("IWM", iwm_r, 220.0)):
        closes = p0 * np.cumprod(1 + r)
        for hour, px in ((15, closes * 0.999), (20, closes)):  # the later bar is the close
            frames.append(
                pl.DataFrame(
                    {
                        "symbol": sym,
                        "ts": [
                            datetime(d.year, d.month, d.day, hour, 59, tzinfo=UTC) for d in sessions
                        ],
                        "close": px,
                    }
                )
            )
    return pl.concat(frames).with_columns(pl.col("ts").cast(UTC_US))


CORR_BOOK = [s("q", "QQQ", max_loss=51_000.0), s("i", "IWM", max_loss=30_000.0)]


def test_correlated_underlyings_count_together() -> None:
    bars = synthetic_bars()
    bad = run(book(*CORR_BOOK), candidate("SPY", max_loss=9_001.0), bars=bars)
    assert rejected(bad) == ["correlated_exposure"]
    r = row(bad, "correlated_exposure")
    # SPY + QQQ (correlated); IWM (independent) is not in the group
    assert (r["current"], r["with_candidate"], r["cap"]) == (51.0, 60.001, 60.0)
    assert "SPY, QQQ" in r["detail"] and "IWM" not in r["detail"].split("USD")[0]
    assert "QQQ corr +0.9" in r["detail"]
    assert row(bad, "concentration")["ok"]  # SPY alone is 9%
    assert run(book(*CORR_BOOK), candidate("SPY", max_loss=9_000.0), bars=bars).ok


def test_correlation_from_the_store_bars_table(store_root: Path) -> None:
    store = DeltaStore(store_root)
    bars = synthetic_bars().with_columns(
        open=pl.col("close"),
        high=pl.col("close"),
        low=pl.col("close"),
        volume=pl.lit(100, dtype=pl.Int64),
    )
    store.append("underlying_bars", bars)
    lazy = store.read("underlying_bars")
    bad = run(book(*CORR_BOOK), candidate("SPY", max_loss=9_001.0), bars=lazy)
    assert rejected(bad) == ["correlated_exposure"]


def test_without_enough_bars_exposure_is_assumed_correlated() -> None:
    result = run(book(*CORR_BOOK), candidate("SPY", max_loss=10_000.0))  # no bars at all
    r = row(result, "correlated_exposure")
    assert not r["ok"] and r["with_candidate"] == 91.0
    assert "IWM assumed correlated (0 returns < 10)" in r["detail"]


# -- buying power --------------------------------------------------------------------------------


def test_buying_power_rejects_breach_and_accepts_at_cap() -> None:
    b = book(s("a", "SPY", buying_power=30_000.0))
    acct = account(margin=40_000.0)  # broker's figure is larger: it counts
    bad = run(b, candidate("QQQ", buying_power=10_001.0), acct)
    assert rejected(bad) == ["buying_power"]
    r = row(bad, "buying_power")
    assert (r["current"], r["with_candidate"], r["cap"]) == (40.0, 50.001, 50.0)
    assert run(b, candidate("QQQ", buying_power=10_000.0), acct).ok


def test_buying_power_uses_the_book_when_the_broker_lags() -> None:
    b = book(s("a", "SPY", buying_power=45_000.0))
    r = row(run(b, candidate("QQQ", buying_power=5_001.0), account(margin=1_000.0)), "buying_power")
    assert (r["current"], r["ok"]) == (45.0, False)


# -- counts ------------------------------------------------------------------------------------


def test_max_open_strategies() -> None:
    three = book(s("a", "SPY"), s("b", "SPY"), s("c", "QQQ"))
    bad = run(three, candidate("IWM"))
    assert rejected(bad) == ["open_strategies"]
    r = row(bad, "open_strategies")
    assert (r["current"], r["with_candidate"], r["cap"]) == (3.0, 4.0, 3.0)
    closed_one = book(s("a", "SPY"), s("b", "SPY"), s("c", "QQQ", closed_at=NOW))
    assert run(closed_one, candidate("IWM")).ok


def test_max_new_strategies_per_market_day() -> None:
    today = NOW - timedelta(hours=2)
    # 03:00 UTC on the 10th is still the 9th in New York: not today
    last_night = datetime(2026, 3, 10, 3, 0, tzinfo=UTC)
    bad = run(
        book(s("a", "SPY", opened_at=today), s("b", "QQQ", opened_at=today, closed_at=NOW)),
        candidate("IWM"),
    )
    assert rejected(bad) == ["new_strategies_today"]  # the closed one still counts
    r = row(bad, "new_strategies_today")
    assert (r["current"], r["with_candidate"], r["cap"]) == (2.0, 3.0, 2.0)
    ok = book(s("a", "SPY", opened_at=today), s("b", "QQQ", opened_at=last_night))
    assert run(ok, candidate("IWM")).ok


# -- hard caps -----------------------------------------------------------------------------------


def test_hard_contracts_per_order() -> None:
    bad = run(Book.empty(), candidate(qty=MAX_CONTRACTS_PER_ORDER + 1, strike=10.0))
    assert rejected(bad) == ["hard_contracts_per_order"]
    r = row(bad, "hard_contracts_per_order")
    assert (r["with_candidate"], r["cap"], r["hard"]) == (51.0, 50.0, True)
    assert run(Book.empty(), candidate(qty=MAX_CONTRACTS_PER_ORDER, strike=10.0)).ok


def test_hard_notional_per_order() -> None:
    # 10 contracts x 100 x strike; the cap is 5,000,000 USD
    bad = run(Book.empty(), candidate(qty=10, strike=5_000.01))
    assert rejected(bad) == ["hard_notional_per_order"]
    assert row(bad, "hard_notional_per_order")["with_candidate"] == pytest.approx(5_000_010.0)
    assert run(Book.empty(), candidate(qty=10, strike=5_000.0)).ok


def test_hard_day_caps() -> None:
    c = candidate(qty=50, strike=10.0)
    assert run(Book.empty(), c, day_contracts=MAX_CONTRACTS_PER_DAY - 50).ok
    bad = run(Book.empty(), c, day_contracts=MAX_CONTRACTS_PER_DAY - 49)
    assert rejected(bad) == ["hard_contracts_per_day"]
    assert row(bad, "hard_contracts_per_day")["with_candidate"] == 501.0
    big = candidate(qty=10, strike=5_000.0)  # 5,000,000 notional
    assert run(Book.empty(), big, day_notional=MAX_NOTIONAL_PER_DAY - 5_000_000.0).ok
    bad = run(Book.empty(), big, day_notional=MAX_NOTIONAL_PER_DAY - 4_999_999.0)
    assert rejected(bad) == ["hard_notional_per_day"]


def hard(legs: pl.DataFrame, **kw: Any) -> LimitResult:
    args: dict[str, Any] = {
        "order_max_loss": 1_000.0,
        "net_liquidation": 100_000.0,
        "day_contracts": 0,
        "day_notional": 0.0,
        "day_max_loss": 0.0,
    }
    return check_hard_caps(legs, **(args | kw))


def test_closing_order_is_not_refused_by_day_caps_but_is_by_order_caps() -> None:
    legs = candidate(qty=50, strike=10.0).legs
    closing = hard(
        legs, day_contracts=10_000, day_notional=1e12, day_max_loss=1e9, order_max_loss=1e9,
        net_liquidation=float("nan"), reduces_risk=True,
    )  # fmt: skip
    assert closing.ok and "not enforced" in row(closing, "hard_contracts_per_day")["detail"]
    assert "not enforced" in row(closing, "hard_max_loss_per_order")["detail"]
    assert not hard(legs, day_contracts=10_000).ok
    too_big = candidate(qty=51, strike=10.0).legs
    assert not hard(too_big, reduces_risk=True).ok


@pytest.mark.parametrize(
    ("net_liq", "max_loss", "ok"),
    [
        (100_000.0, 10_000.0, True),  # exactly 10 % of net liquidation
        (100_000.0, 10_000.01, False),
        (100_000.0, 9_999.99, True),
        (1_000_000.0, 100_000.0, True),  # the cap scales with the account
        (1_000_000.0, 100_000.01, False),
        (10_000.0, 1_000.01, False),  # a small account: a small order is already too big
    ],
)
def test_hard_max_loss_per_order_scales_with_net_liquidation(
    net_liq: float, max_loss: float, ok: bool
) -> None:
    result = run(Book.empty(), candidate(max_loss=max_loss), account(net_liq=net_liq))
    assert rejected(result) == ([] if ok else ["hard_max_loss_per_order"])
    r = row(result, "hard_max_loss_per_order")
    assert (r["cap"], r["hard"], r["unit"]) == (
        MAX_LOSS_PER_ORDER_PCT,
        True,
        "% of net liquidation",
    )
    assert r["with_candidate"] == pytest.approx(max_loss * 100 / net_liq)


@pytest.mark.parametrize(
    ("day_max_loss", "ok"), [(20_000.0, True), (20_000.01, False), (19_999.99, True)]
)
def test_hard_max_loss_per_day_counts_what_was_already_sent(day_max_loss: float, ok: bool) -> None:
    # 25 % of 100,000 = 25,000: 20,000 already sent today + this order's 5,000
    result = run(Book.empty(), candidate(max_loss=5_000.0), day_max_loss=day_max_loss)
    assert rejected(result) == ([] if ok else ["hard_max_loss_per_day"])
    r = row(result, "hard_max_loss_per_day")
    assert r["cap"] == MAX_LOSS_PER_DAY_PCT
    assert r["current"] == pytest.approx(day_max_loss / 1_000)


@pytest.mark.parametrize("net_liq", [0.0, -5.0, float("nan"), float("inf")])
def test_unknown_net_liquidation_refuses_every_entry(net_liq: float) -> None:
    result = run(Book.empty(), candidate(max_loss=1.0), account(net_liq=net_liq))
    assert not result.ok
    assert {"hard_max_loss_per_order", "hard_max_loss_per_day", "concentration"} <= set(
        rejected(result)
    )
    assert "net liquidation unknown" in row(result, "hard_max_loss_per_order")["detail"]


def test_no_configuration_can_raise_the_hard_caps(
    no_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValidationError):
        Settings(limits={"max_contracts_per_order": 10_000})
    monkeypatch.setenv("V6_LIMITS__MAX_NOTIONAL_PER_DAY", "1e12")
    with pytest.raises(ConfigError, match="unknown setting"):
        load_settings()
    with pytest.raises(TypeError):
        HARD_CAPS["hard_contracts_per_order"] = 10_000  # type: ignore[index]
    assert "settings" not in inspect.signature(check_hard_caps).parameters
    assert dict(HARD_CAPS) == {
        "hard_contracts_per_order": MAX_CONTRACTS_PER_ORDER,
        "hard_notional_per_order": MAX_NOTIONAL_PER_ORDER,
        "hard_max_loss_per_order": MAX_LOSS_PER_ORDER_PCT,
        "hard_contracts_per_day": MAX_CONTRACTS_PER_DAY,
        "hard_notional_per_day": MAX_NOTIONAL_PER_DAY,
        "hard_max_loss_per_day": MAX_LOSS_PER_DAY_PCT,
    }
    # the loosest configuration still hits the hard caps
    loose = LimitSettings(
        max_portfolio_delta=1000,
        max_underlying_delta=1000,
        max_concentration_pct=100,
        max_correlated_exposure_pct=100,
        max_buying_power_pct=100,
        max_open_strategies=500,
        max_new_strategies_per_day=100,
    )
    result = check_limits(Book.empty(), candidate(qty=51, strike=1.0), account(), loose, NOW)
    assert rejected(result) == ["hard_contracts_per_order"]
    big = candidate(max_loss=10_001.0, buying_power=10_001.0)
    result = check_limits(Book.empty(), big, account(), loose, NOW)
    assert rejected(result) == ["hard_max_loss_per_order"]


# -- recording and input errors -------------------------------------------------------------------


def test_rejections_are_recorded_once(store_root: Path) -> None:
    store = DeltaStore(store_root)
    bad = run(book(s("a", "SPY", max_loss=35_000.0)), candidate("SPY", max_loss=10_000.0))
    good = run(Book.empty(), candidate())
    first = record_rejections(store, [bad, good], run_id="run-1", now=NOW)
    assert first.rows_inserted == 1
    assert record_rejections(store, [bad, good], run_id="run-1", now=NOW).rows_inserted == 0
    stored = store.read("limit_rejections").collect().row(0, named=True)
    assert {k: stored[k] for k in ("strategy_id", "underlying", "limit", "scope")} == {
        "strategy_id": "cand",
        "underlying": "SPY",
        "limit": "concentration",
        "scope": "SPY",
    }
    assert (stored["current"], stored["with_candidate"], stored["cap"]) == (35.0, 45.0, 40.0)
    assert "concentration[SPY]: 35 -> 45 > cap 40 % of net liquidation" in bad.describe()


def test_bad_inputs_name_the_column() -> None:
    c = candidate()
    with pytest.raises(ValueError, match="column 'strike' is missing"):
        Book(c.legs.drop("strike"), c.strategies)
    with pytest.raises(ValueError, match="'quantity' must hold whole numbers"):
        Book(c.legs.with_columns(quantity=pl.lit(1.5)), c.strategies)
    with pytest.raises(ValueError, match="max_loss must be finite and > 0"):
        Book(c.legs, c.strategies.with_columns(max_loss=pl.lit(0.0)))
    with pytest.raises(ValueError, match="exactly 1 strategy"):
        candidate_book(
            pl.concat([c.legs, c.legs]),
            pl.concat([c.strategies, c.strategies.with_columns(strategy_id=pl.lit("x"))]),
        )
