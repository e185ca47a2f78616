"""futures_collection against the in-process simulator (SimBroker) on a temp store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from core.analysis.futures import LeadingSignal, latest_signal
from core.broker.base import BrokerError, ErrorClass
from core.broker.sim import SimBroker
from core.clock import SimClock
from core.config import Settings
from core.domain import Bar, Contract
from core.runtime import Runtime, use_runtime
from core.store import DeltaStore
from flows.futures_collection import futures_collection

T0 = datetime(2026, 3, 4, 15, 0, 20, tzinfo=UTC)  # Wed 10:00 ET: futures and RTH open
TABLES = (
    "futures_bars",
    "underlying_bars",
    "futures_quotes",
    "futures_quarantine",
    "futures_signals",
)


class CorruptingSimBroker(SimBroker):
    """The simulator, except one ES bar comes back with its high below its low."""

    bad_minute: datetime | None = None

    async def historical_bars(
        self, contract: Contract, *, end: datetime, duration: timedelta, bar_size: str = "1 min"
    ) -> list[Bar]:
        bars = await super().historical_bars(
            contract, end=end, duration=duration, bar_size=bar_size
        )
        return [
            Bar(b.time, b.open, b.low - 1.0, b.low, b.close, b.volume)
            if contract.symbol == "ES" and b.time == self.bad_minute
            else b
            for b in bars
        ]


def make_runtime(
    tmp_path: Path, start: datetime, broker_cls: type[SimBroker] = SimBroker, **overrides: Any
) -> Runtime:
    universe = {"futures_backfill_max_hours": 2, **overrides.pop("universe", {})}
    settings = Settings(storage={"root": str(tmp_path / "data")}, universe=universe, **overrides)
    clock = SimClock(start)
    return Runtime(
        settings=settings,
        store=DeltaStore.from_settings(settings),
        clock=clock,
        broker_factory=lambda: broker_cls.from_settings(settings, clock),
    )


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    runtime = make_runtime(tmp_path, T0)
    with use_runtime(runtime):
        yield runtime


def versions(store: DeltaStore) -> dict[str, int]:
    return {t: store.stats(t).version for t in TABLES}


def per_series(store: DeltaStore, table: str) -> pl.DataFrame:
    group = ["symbol", "contract"] if table == "futures_bars" else ["symbol"]
    return (
        store.read(table)
        .group_by(group)
        .agg(
            pl.len().alias("n"),
            pl.col("ts").n_unique().alias("distinct"),
            pl.col("ts").min().alias("first"),
            pl.col("ts").max().alias("last"),
        )
        .sort("symbol")
        .collect()
    )


async def test_missed_runs_backfill_once_and_a_repeat_changes_nothing(rt: Runtime) -> None:
    clock = rt.clock
    assert isinstance(clock, SimClock)
    first = await futures_collection()
    assert first["contracts"] == {"ES": "ESH6", "NQ": "NQH6", "RTY": "RTYH6"}
    assert first["underlyings_collected"] is True
    assert first["quarantined"] == 0

    clock.advance(timedelta(minutes=1))
    steady = await futures_collection()
    assert steady["bars_inserted"] == 6  # one new minute for 3 futures + 3 underlyings
    assert steady["gap_filled"] == 0

    clock.advance(timedelta(minutes=5))  # four scheduled runs missed
    healed = await futures_collection()
    assert healed["bars_inserted"] == 6 * 5
    assert healed["gap_filled"] == 6 * 4
    for table in ("futures_bars", "underlying_bars"):
        s = per_series(rt.store, table)
        assert (s["n"] == s["distinct"]).all(), "no bar stored twice"
        assert (s["last"] == datetime(2026, 3, 4, 15, 5, tzinfo=UTC)).all()  # now 15:06:20
        minutes = (s["last"] - s["first"]).dt.total_minutes() + 1
        assert (s["n"] == minutes).all(), "no minute missing"

    before = versions(rt.store)
    repeat = await futures_collection()
    assert (repeat["bars_inserted"], repeat["bars_updated"], repeat["quotes_inserted"]) == (0, 0, 0)
    assert versions(rt.store) == before


async def test_bad_bar_is_quarantined_and_the_rest_land(tmp_path: Path) -> None:
    CorruptingSimBroker.bad_minute = T0.replace(second=0) - timedelta(minutes=3)
    runtime = make_runtime(tmp_path, T0, CorruptingSimBroker)
    with use_runtime(runtime):
        result = await futures_collection(underlyings=False, signals=False)
    store = runtime.store
    bad = store.read("futures_quarantine").collect()
    assert result["quarantined"] == 1
    assert bad.select("symbol", "contract", "ts").row(0) == (
        "ES",
        "ESH6",
        CorruptingSimBroker.bad_minute,
    )
    assert "OHLC inconsistent" in bad.item(0, "reason")
    es = store.read("futures_bars", where=pl.col("symbol") == "ES").collect()
    assert CorruptingSimBroker.bad_minute not in es["ts"].to_list()
    # The 2 h backfill cap reaches back to 13:00:20: bars 13:01 .. 14:59 are complete.
    assert es.height == 119 - 1
    assert store.read("futures_bars").collect().height == 3 * 119 - 1


async def test_front_month_rolls_on_the_documented_day(tmp_path: Path) -> None:
    # ESH6 (expires Fri 2026-03-20) rolls 8 days earlier: the session of Thu 2026-03-12,
    # which opens Wed 2026-03-11 18:00 ET = 22:00 UTC.
    runtime = make_runtime(tmp_path, datetime(2026, 3, 11, 20, 30, tzinfo=UTC))
    clock = runtime.clock
    assert isinstance(clock, SimClock)
    with use_runtime(runtime):
        before = await futures_collection(underlyings=False, signals=False)
        clock.set(datetime(2026, 3, 11, 22, 5, 10, tzinfo=UTC))
        after = await futures_collection(underlyings=False, signals=False)
    assert before["contracts"] == {"ES": "ESH6", "NQ": "NQH6", "RTY": "RTYH6"}
    assert after["contracts"] == {"ES": "ESM6", "NQ": "NQM6", "RTY": "RTYM6"}
    stored = per_series(runtime.store, "futures_bars")
    assert set(stored["contract"]) == {"ESH6", "NQH6", "RTYH6", "ESM6", "NQM6", "RTYM6"}
    last = dict(zip(stored["contract"], stored["last"], strict=True))
    assert last["ESM6"] == datetime(2026, 3, 11, 22, 4, tzinfo=UTC)


async def test_lead_lag_signal_recovers_the_simulators_lag(tmp_path: Path) -> None:
    runtime = make_runtime(
        tmp_path,
        datetime(2026, 3, 16, 15, 0, 10, tzinfo=UTC),
        universe={"futures_backfill_max_hours": 24 * 14},
        sim={"futures_lead_minutes": 3},
    )
    with use_runtime(runtime):
        result = await futures_collection()
    by_underlying = {s["underlying"]: s for s in result["signals"]}
    assert set(by_underlying) == {"SPY", "QQQ", "IWM"}
    for sig in by_underlying.values():
        assert sig["status"] == "ok"
        assert sig["best_lag_min"] == 3
        assert sig["best_corr"] > 0.8
        assert sig["days_of_data"] >= 7
    spy = latest_signal(runtime.store, "SPY")
    assert isinstance(spy, LeadingSignal) and spy.best_lag_min == 3


async def test_too_little_history_says_how_much(rt: Runtime) -> None:
    result = await futures_collection()
    spy = next(s for s in result["signals"] if s["underlying"] == "SPY")
    assert spy["status"] == "insufficient_data"
    assert spy["days_of_data"] == 1
    got = latest_signal(rt.store, "SPY")
    assert not isinstance(got, LeadingSignal)
    assert got.message == "lead-lag for SPY: need 7 days of futures and underlying bars, have 1"


async def test_closed_market_skips_without_touching_the_broker(tmp_path: Path) -> None:
    saturday = datetime(2026, 3, 7, 15, 0, tzinfo=UTC)
    runtime = make_runtime(tmp_path, saturday)
    runtime.broker_factory = None  # a broker call would build an unrelated default broker
    with use_runtime(runtime):
        state = await futures_collection(return_state=True)
    assert state.is_completed() and state.name == "MarketClosed"
    assert not runtime.store.exists("futures_bars")


async def test_each_run_publishes_a_collection_table(rt: Runtime) -> None:
    await futures_collection(signals=False)
    async with get_client() as client:
        arts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["futures-collection"]))
        )
    assert arts
    table = arts[-1].data
    assert isinstance(table, str) and "gap_filled" in table and "quarantined" in table


class UnreachableSimBroker(SimBroker):
    """A gateway that refuses connections (IB's nightly reset, a gateway restart)."""

    async def connect(self) -> None:
        raise BrokerError("cannot connect to IB: connection refused", ErrorClass.CONNECTIVITY)


async def test_unreachable_inside_the_planned_window_is_broker_unavailable(
    tmp_path: Path,
) -> None:
    at = datetime(2026, 3, 4, 5, 0, 20, tzinfo=UTC)  # 00:00 ET: Globex open, IB resetting
    runtime = make_runtime(tmp_path, at, UnreachableSimBroker)
    assert runtime.settings.broker.in_planned_outage(at)
    with use_runtime(runtime):
        state = await futures_collection(return_state=True)
    assert state.is_completed() and state.name == "BrokerUnavailable", state.message
    assert "planned outage window 23:45-00:45" in str(state.message)


async def test_unreachable_outside_the_window_fails(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path, T0, UnreachableSimBroker)
    with use_runtime(runtime):
        state = await futures_collection(return_state=True)
    assert state.is_failed(), (state.name, state.message)
