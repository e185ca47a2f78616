"""`v6 positions`, `v6 trades`, `v6 strategy ID` and the P&L dates of `v6 status`: output
that fits 100 columns, exit codes and bad arguments, over a book in real Delta tables."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from cli_harness import one_line_error, v6

from core.domain.timezones import MARKET_TZ
from core.store import REGISTRY, DeltaStore
from deployments import cli
from deployments.status import pnl_summary

SID = "ic-SPY-20260302-0123456789"


@pytest.fixture
def home(no_config: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("V6_STORAGE__ROOT", str(no_config / "data"))
    monkeypatch.setenv("V6_STORAGE__REPORTS_DIR", str(no_config / "reports"))
    monkeypatch.setattr(cli.console, "width", 200)  # the commands narrow it to 100 themselves
    return no_config


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def seed(root: Path) -> DeltaStore:
    """One open iron-condor leg sold at 2.10 (a 210 USD credit), its order, its last
    decision (81% of the credit kept: take profit), and two closed trades in March 2026."""
    store = DeltaStore(str(root))
    for name in ("strategies", "legs", "fills", "orders", "order_intents"):
        store.merge(name, REGISTRY[name].example())
    store.merge("decisions", REGISTRY["decisions"].example().with_columns(strategy_id=pl.lit(SID)))
    ex = REGISTRY["trades"].example()
    ts = ex["closed_at"].dtype
    store.merge(
        "trades",
        pl.concat(
            ex.with_columns(
                trade_id=pl.lit(tid), strategy_id=pl.lit(sid), closed_at=pl.lit(at).cast(ts),
                pnl=pl.lit(pnl),
            )
            for tid, sid, at, pnl in (
                ("T-1", "old-one", utc(2026, 3, 3, 19), -40.0),
                ("T-2", "S-0001", utc(2026, 3, 20, 19), 118.7),
                ("T-3", "S-0002", utc(2026, 3, 20, 20), 10.0),
            )
        ),
    )  # fmt: skip
    return store


def assert_fits(out: str) -> None:
    wide = [ln for ln in out.splitlines() if len(ln) > 100]
    assert not wide, wide


def test_positions_show_credit_mark_pnl_greeks_and_the_rules(
    capsys: pytest.CaptureFixture[str], home: Path
) -> None:
    seed(home / "data")
    code, out, err = v6(capsys, "positions")
    assert code == 0, err
    assert_fits(out)
    row = next(ln for ln in out.splitlines() if SID in ln and "210.00" in ln)
    for needle in ("210.00", "39.90", "+170.10", "+81%", "30", "-0.05", "+0.010"):
        assert needle in row, (needle, row)
    rules = next(ln for ln in out.splitlines() if SID in ln and "CLOSE" in ln)
    assert "iron_condor" in rules and "normal" in rules and "80%" in rules
    assert "take_profit" in rules
    assert "26-04-17 480.0 P" in out


def test_trades_since_a_market_date(capsys: pytest.CaptureFixture[str], home: Path) -> None:
    seed(home / "data")
    code, out, _ = v6(capsys, "trades")
    assert code == 0 and "closed trades (3)" in out and "total realised: +88.70 USD" in out
    assert_fits(out)
    code, out, _ = v6(capsys, "trades", "--since", "2026-03-20")
    assert code == 0 and "closed trades (2) since 2026-03-20" in out and "old-one" not in out
    code, out, _ = v6(capsys, "trades", "--since", "2027-01-01")
    assert code == 0 and "no closed trades since 2027-01-01" in out
    code, _, err = v6(capsys, "trades", "--since", "last week")
    one_line_error(code, err, "--since: 'last week' is not a date", "YYYY-MM-DD")


def test_strategy_shows_its_life(capsys: pytest.CaptureFixture[str], home: Path) -> None:
    seed(home / "data")
    code, out, err = v6(capsys, "strategy", SID)
    assert code == 0, err
    assert_fits(out)
    assert f"{SID}: iron_condor on SPY, OPEN" in out.replace("\n", " ")
    assert "orders (intent before sending" in out and "FILLED" in out and "1.25" in out
    assert "fills" in out and "2.10" in out and "broker" in out
    assert "rule decisions" in out and "take_profit" in out
    code, _, err = v6(capsys, "strategy", "nope")
    one_line_error(code, err, "no strategy 'nope' in the book", "v6 positions")


def test_an_empty_book_says_so(capsys: pytest.CaptureFixture[str], home: Path) -> None:
    assert v6(capsys, "positions")[:2] == (0, "no open strategies\n")
    assert v6(capsys, "trades")[:2] == (0, "no closed trades\n")


def test_status_pnl_follows_the_data_dates(home: Path) -> None:
    """A March 2026 book read in December: "today" is the latest close's market date."""
    store = seed(home / "data")
    pnl = pnl_summary(store, utc(2026, 12, 7, 21), MARKET_TZ)
    assert str(pnl.as_of_date) == "2026-03-20"
    assert pnl.realised_today == pytest.approx(128.7)
    assert pnl.realised_30d == pytest.approx(88.7)
