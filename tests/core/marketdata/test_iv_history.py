"""IV history: backfill from the broker's daily IV bars, chain snapshots, rank/percentile."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from gateway_world import make_exchange

from core.broker.sim import SimBroker
from core.calendar import MarketCalendar
from core.clock import SimClock
from core.config import ScheduleSettings
from core.domain import Bar, Contract
from core.domain.timezones import UTC_US
from core.marketdata.iv_history import (
    BROKER,
    CHAIN,
    IV_WHAT,
    TABLE,
    atm_iv_30d,
    backfill_iv_history,
    bars_frame,
    iv_stats,
    record_atm_iv,
)
from core.sim.exchange import SimExchange
from core.store import DeltaStore

NOW = datetime(2026, 3, 2, 15, 30, tzinfo=UTC)  # make_exchange's clock: 10:30 ET, Monday


@pytest.fixture
def exchange() -> SimExchange:
    return make_exchange()


@pytest.fixture
async def broker(exchange: SimExchange) -> AsyncIterator[SimBroker]:
    b = SimBroker(exchange)
    await b.connect()
    yield b
    await b.disconnect()


@pytest.fixture
def store(store_root: Path) -> DeltaStore:
    return DeltaStore(store_root)


def _table(store: DeltaStore) -> pl.DataFrame:
    return store.read(TABLE).collect().sort("underlying", "date")


def _versions(store: DeltaStore) -> int:
    return len(store.history(TABLE))


def _daily_iv(exchange: SimExchange, symbol: str, days: int = 400) -> list[Bar]:
    now = exchange.market.clock.now()
    return exchange.bars(
        Contract.stock(symbol),
        end=now,
        duration=timedelta(days=days),
        bar_size="1 day",
        what=IV_WHAT,
    )


def _write(store: DeltaStore, symbol: str, ivs: list[float], last: date, source: str) -> None:
    """`ivs` on consecutive calendar days ending at `last` (stats do not care about gaps)."""
    n = len(ivs)
    store.merge(
        TABLE,
        pl.DataFrame(
            {
                "underlying": [symbol] * n,
                "date": [last - timedelta(days=n - 1 - i) for i in range(n)],
                "atm_iv": ivs,
                "source": [source] * n,
                "recorded_at": [NOW] * n,
            }
        ).with_columns(pl.col("recorded_at").cast(UTC_US)),
    )


# ------------------------------------------------------------------------------- backfill
async def test_fresh_backfill_stores_every_session_and_a_replay_changes_nothing(
    broker: SimBroker, exchange: SimExchange, store: DeltaStore
) -> None:
    now = exchange.market.clock.now()
    assert now == NOW
    got = await backfill_iv_history(broker, store, ["SPY", "qqq"], now, days=260)
    assert got.errors == {} and got.version is not None
    table = _table(store)
    spy = _daily_iv(exchange, "SPY")
    assert got.fetched == {"SPY": len(spy), "QQQ": len(_daily_iv(exchange, "QQQ"))}
    assert got.written == table.height == got.fetched["SPY"] + got.fetched["QQQ"]
    rows = table.filter(pl.col("underlying") == "SPY")
    # one row per completed session, dated in New York, valued at the bar's close
    assert rows["date"].to_list() == [b.time.date() for b in spy]
    assert rows["atm_iv"].to_list() == [b.close for b in spy]
    assert rows["date"].max() == date(2026, 2, 27)  # today's session is still trading
    assert set(table["source"]) == {BROKER} and set(table["recorded_at"]) == {NOW}

    versions = _versions(store)
    again = await backfill_iv_history(broker, store, ["SPY", "QQQ"], now, days=260)
    assert again.written == 0 and again.version is None
    assert _versions(store) == versions
    assert _table(store).equals(table)


async def test_backfill_fills_the_gap_since_the_last_stored_day(
    broker: SimBroker, exchange: SimExchange, store: DeltaStore
) -> None:
    clock: SimClock = exchange.market.clock
    await backfill_iv_history(broker, store, ["SPY"], clock.now(), days=20)
    before = _table(store)
    clock.advance(timedelta(days=2))  # Wednesday: Monday and Tuesday completed, unseen
    # the cycle records Wednesday's ATM IV from the chain while the day is trading
    chain = pl.DataFrame({"underlying": ["SPY"], "atm_iv": [0.2]})
    assert record_atm_iv(store, chain, now=clock.now()) == 1
    clock.advance(timedelta(days=2))  # Friday 10:30 ET
    got = await backfill_iv_history(broker, store, ["SPY"], clock.now(), days=20)
    after = _table(store)
    # Mon, Tue (the gap behind the snapshot) and Thu new; Wednesday's snapshot replaced
    assert got.written == 4
    new_days = [date(2026, 3, 2), date(2026, 3, 3), date(2026, 3, 4), date(2026, 3, 5)]
    assert after["date"].to_list() == [*before["date"].to_list(), *new_days]
    assert set(after["source"]) == {BROKER}
    bars = {b.time.date(): b.close for b in _daily_iv(exchange, "SPY", 10)}
    tail = after.filter(pl.col("date").is_in(new_days))
    assert tail["atm_iv"].to_list() == [bars[d] for d in new_days]
    # rows before the gap are untouched (their recorded_at still says the first run)
    head = after.filter(pl.col("date") < date(2026, 3, 2))
    assert head.equals(before.filter(pl.col("date") < date(2026, 3, 2)))


async def test_first_backfill_honours_days(
    broker: SimBroker, exchange: SimExchange, store: DeltaStore
) -> None:
    got = await backfill_iv_history(broker, store, ["SPY"], NOW, days=10)
    dates = _table(store)["date"]
    # 10 sessions fit in the 28 calendar days asked for (10 x 7/5 + 14)
    assert dates.min() >= NOW.date() - timedelta(days=28) and got.written >= 10
    assert dates.max() == date(2026, 2, 27)


async def test_a_symbol_without_iv_is_reported_and_the_others_still_go_in(
    broker: SimBroker, store: DeltaStore
) -> None:
    got = await backfill_iv_history(broker, store, ["NOPE", "SPY"], NOW, days=20)
    assert set(got.errors) == {"NOPE"} and "NOPE" not in got.fetched
    assert set(_table(store)["underlying"]) == {"SPY"}


async def test_bad_arguments_name_the_fix(broker: SimBroker, store: DeltaStore) -> None:
    with pytest.raises(ValueError, match="tz-aware"):
        await backfill_iv_history(broker, store, ["SPY"], NOW.replace(tzinfo=None))
    with pytest.raises(ValueError, match="days=0"):
        await backfill_iv_history(broker, store, ["SPY"], NOW, days=0)
    with pytest.raises(ValueError, match="list of symbols"):
        await backfill_iv_history(broker, store, "SPY", NOW)
    with pytest.raises(ValueError, match="what='BID_ASK'"):
        await broker.historical_bars(
            Contract.stock("SPY"), end=NOW, duration=timedelta(days=2), what="BID_ASK"
        )


def test_bar_dates_are_new_york_session_dates_and_junk_is_dropped() -> None:
    bars = [
        # IB daily bar: the bare session date, which bar_from_ib stamps midnight UTC
        Bar(datetime(2026, 3, 2, tzinfo=UTC), 0.2, 0.2, 0.2, 0.21, 0),
        # simulator daily bar: the session open
        Bar(datetime(2026, 3, 3, 14, 30, tzinfo=UTC), 0.2, 0.2, 0.2, 0.22, 0),
        # an evening stamp in New York that is already the next day in UTC
        Bar(datetime(2026, 3, 5, 0, 30, tzinfo=UTC), 0.2, 0.2, 0.2, 0.23, 0),
        Bar(datetime(2026, 3, 5, 14, 30, tzinfo=UTC), 0.2, 0.2, 0.2, math.nan, 0),
        Bar(datetime(2026, 3, 6, 14, 30, tzinfo=UTC), 0.2, 0.2, 0.2, -1.0, 0),
    ]
    frame = bars_frame("SPY", bars)
    assert frame["date"].to_list() == [date(2026, 3, 2), date(2026, 3, 3), date(2026, 3, 4)]
    assert frame["atm_iv"].to_list() == [0.21, 0.22, 0.23]


# ------------------------------------------------------------------------------- snapshots
def test_chain_atm_iv_is_interpolated_to_30_days_in_total_variance() -> None:
    per_expiry = pl.DataFrame(
        {
            "underlying": ["SPY", "SPY", "QQQ", "IWM"],
            "T": [20 / 365, 40 / 365, 50 / 365, 10 / 365],
            "atm_iv": [0.16, 0.20, 0.25, None],
        }
    )
    got = dict(atm_iv_30d(per_expiry).iter_rows())
    # halfway in T: w = (0.16^2 x 20 + 0.20^2 x 40) / 2 / 365, iv = sqrt(w / (30/365))
    assert got["SPY"] == pytest.approx(math.sqrt((0.16**2 * 20 + 0.20**2 * 40) / 2 / 30))
    assert got["QQQ"] == pytest.approx(0.25)  # one expiry only: flat vol
    assert "IWM" not in got  # no usable IV
    with pytest.raises(ValueError, match="several rows for \\['SPY'\\]"):
        atm_iv_30d(per_expiry.drop("T"))
    with pytest.raises(ValueError, match="lacks columns \\['atm_iv'\\]"):
        atm_iv_30d(per_expiry.drop("atm_iv"))


async def test_record_atm_iv_upserts_today_and_never_overrides_the_broker(
    broker: SimBroker, store: DeltaStore
) -> None:
    snap = pl.DataFrame({"underlying": ["SPY", "QQQ"], "atm_iv": [0.18, 0.22]})
    assert record_atm_iv(store, snap, now=NOW) == 2
    versions = _versions(store)
    assert record_atm_iv(store, snap, now=NOW + timedelta(minutes=5)) == 0  # replay: no commit
    assert _versions(store) == versions
    later = snap.with_columns(pl.col("atm_iv") + 0.01)
    assert record_atm_iv(store, later, now=NOW + timedelta(minutes=10)) == 2
    table = _table(store)
    assert table["atm_iv"].to_list() == pytest.approx([0.23, 0.19])  # QQQ, SPY: latest wins
    assert set(table["date"]) == {date(2026, 3, 2)} and set(table["source"]) == {CHAIN}
    # once the broker's bar covers a day, snapshots of that day are ignored
    _write(store, "SPY", [0.17], date(2026, 3, 2), BROKER)
    assert record_atm_iv(store, later.with_columns(atm_iv=pl.lit(0.3)), now=NOW) == 1  # QQQ only
    spy = _table(store).filter(pl.col("underlying") == "SPY")
    assert spy["source"].to_list() == [BROKER] and spy["atm_iv"].to_list() == [0.17]


def test_record_atm_iv_skips_a_day_without_a_session(store: DeltaStore) -> None:
    calendar = MarketCalendar(ScheduleSettings())
    saturday = datetime(2026, 3, 7, 15, 0, tzinfo=UTC)
    snap = pl.DataFrame({"underlying": ["SPY"], "atm_iv": [0.18]})
    assert record_atm_iv(store, snap, now=saturday, calendar=calendar) == 0
    assert record_atm_iv(store, snap, now=NOW, calendar=calendar) == 1


# ------------------------------------------------------------------------------- stats
def test_stats_match_a_hand_computed_rank_and_percentile(store: DeltaStore) -> None:
    today = date(2026, 3, 2)
    history = [round(0.10 + 0.01 * i, 2) for i in range(24)]  # 0.10 .. 0.33
    _write(store, "SPY", [*history, 0.155], today, BROKER)
    full = iv_stats(store, ["SPY"], NOW, min_history=20, lookback_days=260).row(0, named=True)
    # 25 days including today; 0.10, 0.11, .., 0.15 (6 days) are below 0.155
    assert full["iv_now"] == 0.155 and full["n_days"] == 25 and full["as_of"] == today
    assert full["iv_percentile"] == pytest.approx(6 / 25 * 100)  # 24.0
    assert full["iv_rank"] == pytest.approx((0.155 - 0.10) / (0.33 - 0.10) * 100)  # 23.9
    assert full["reason"] is None
    # a 20-day window keeps 0.15 .. 0.33 and today: one day (0.15) below
    short = iv_stats(store, ["SPY"], NOW, min_history=20, lookback_days=20).row(0, named=True)
    assert short["n_days"] == 20 and short["iv_percentile"] == pytest.approx(5.0)
    assert short["iv_rank"] == pytest.approx((0.155 - 0.15) / (0.33 - 0.15) * 100)
    # rows after `now` are not seen yet
    _write(store, "SPY", [0.5], today + timedelta(days=1), BROKER)
    assert iv_stats(store, ["SPY"], NOW)["iv_now"].to_list() == [0.155]


def test_stats_explain_missing_short_stale_and_flat_history(store: DeltaStore) -> None:
    today = date(2026, 3, 2)
    _write(store, "SPY", [0.2, 0.21, 0.19], today, CHAIN)
    _write(store, "QQQ", [0.2] * 30, today - timedelta(days=9), BROKER)
    _write(store, "IWM", [0.25] * 30, today, BROKER)
    stats = iv_stats(store, ["SPY", "QQQ", "DIA", "IWM"], NOW, min_history=20, max_age_days=5)
    assert stats["underlying"].to_list() == ["SPY", "QQQ", "DIA", "IWM"]
    by = {r["underlying"]: r for r in stats.iter_rows(named=True)}
    assert by["SPY"]["reason"] == "need 20 days of IV history, have 3"
    assert by["SPY"]["iv_now"] == 0.19 and by["SPY"]["iv_percentile"] is None
    assert by["SPY"]["iv_rank"] is None and by["SPY"]["n_days"] == 3
    assert by["QQQ"]["reason"] == (
        "latest IV is from 2026-02-21 (9 days old, max 5); backfill the IV history"
    )
    assert by["QQQ"]["iv_percentile"] is None
    assert by["DIA"]["reason"] == "need 20 days of IV history, have 0"
    assert by["DIA"]["iv_now"] is None and by["DIA"]["n_days"] == 0
    assert by["IWM"]["iv_percentile"] == 0.0 and by["IWM"]["iv_rank"] is None
    assert by["IWM"]["reason"] == "iv_rank undefined: IV flat at 0.2500 over 30 days"
    with pytest.raises(ValueError, match="min_history=30, lookback_days=20"):
        iv_stats(store, ["SPY"], NOW, min_history=30, lookback_days=20)


async def test_backfilled_sim_history_gives_stats(
    broker: SimBroker, exchange: SimExchange, store: DeltaStore
) -> None:
    await backfill_iv_history(broker, store, ["SPY"], NOW, days=260)
    row = iv_stats(store, ["SPY"], NOW).row(0, named=True)
    closes = [b.close for b in _daily_iv(exchange, "SPY")]
    assert row["reason"] is None and row["n_days"] == len(closes) >= 20
    assert row["iv_now"] == closes[-1]
    assert row["iv_percentile"] == pytest.approx(
        sum(c < closes[-1] for c in closes) / len(closes) * 100
    )
