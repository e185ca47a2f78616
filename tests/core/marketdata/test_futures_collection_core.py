"""Collection steps without Prefect: gap backfill, idempotent re-runs, quarantine, roll."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.broker.base import Broker
from core.domain import Bar, Contract, Quote
from core.domain.timezones import UTC_US
from core.marketdata.futures_collection import (
    BAR,
    RECENT,
    PreparedBatch,
    fetch_bars,
    last_stored_bars,
    prepare_batch,
    quotes_frame,
    request_duration,
    resolve_front_contracts,
    series_id,
    write_collection,
)
from core.store import DeltaStore

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
CAP = timedelta(hours=48)


class FakeFuturesBroker:
    """Deterministic minute bars for any future; only the calls collection makes."""

    def __init__(self) -> None:
        self.bad_minutes: set[datetime] = set()
        self.requests: list[tuple[str, datetime, timedelta]] = []
        self.known = True

    async def qualify(self, contracts: Sequence[Contract]) -> list[Contract | None]:
        return [c.with_con_id(600_000 + i) if self.known else None for i, c in enumerate(contracts)]

    async def historical_bars(
        self, contract: Contract, *, end: datetime, duration: timedelta, bar_size: str = "1 min"
    ) -> list[Bar]:
        self.requests.append((contract.local_symbol, end, duration))
        first = (end - duration).replace(second=0, microsecond=0)
        n = int((end - first) / BAR) + 1
        out = []
        for i in range(n):
            ts = first + i * BAR
            if ts > end:
                break
            px = 6800.0 + (ts - T0) / BAR * 0.25
            high = px - 5 if ts in self.bad_minutes else px + 1  # bad: high below open
            out.append(Bar(ts, px, high, px - 1, px + 0.25, 100))
        return out

    async def quotes(self, contracts: Sequence[Contract]) -> list[Quote]:
        return [Quote(c, T0, bid=6800.0, ask=math.nan, last=-1.0) for c in contracts]


async def run_once(fake: FakeFuturesBroker, store: DeltaStore, now: datetime) -> PreparedBatch:
    """One collection run, composed from the core steps the flow's tasks wrap."""
    broker = cast(Broker, fake)
    contracts = await resolve_front_contracts(broker, ["ES"], now, 8)
    series = [(c.symbol, series_id(c)) for c in contracts]
    last = last_stored_bars(store, "futures_bars", series, now, CAP)
    frames = [
        await fetch_bars(broker, c, last=last.get((c.symbol, series_id(c))), now=now, cap=CAP)
        for c in contracts
    ]
    batch = prepare_batch(
        "future", pl.concat(frames), series, last, now, interval=timedelta(minutes=1), cap=CAP
    )
    write_collection(store, futures=batch)
    return batch


def stored(store: DeltaStore) -> pl.DataFrame:
    return store.read("futures_bars").sort("ts").collect()


async def test_missed_runs_are_backfilled_exactly_once(store_root: Path) -> None:
    store, broker = DeltaStore(store_root), FakeFuturesBroker()
    first = await run_once(broker, store, T0 + timedelta(minutes=1, seconds=5))
    assert first.summary.item(0, "contract") == "ESH6"
    # T0 .. T0+1min: the T0+1 bar is still in progress and is left for the next run.
    assert stored(store).get_column("ts").max() == T0
    assert first.pending == 1

    # Runs at +2..+5 are missed; the run at +6 fills the gap.
    now = T0 + timedelta(minutes=6, seconds=5)
    healed = await run_once(broker, store, now)
    row = healed.summary.row(0, named=True)
    assert row["bars_new"] == 5  # T0+1 .. T0+5
    assert row["gap_filled"] == 4  # all but the newest bar were due at earlier runs
    frame = stored(store)
    stamps = frame.get_column("ts").to_list()
    assert stamps == sorted(set(stamps))  # no duplicates
    assert stamps[-1] == T0 + timedelta(minutes=5)
    # The request reached back to the last stored bar only (capped, whole minutes).
    assert broker.requests[-1][2] == timedelta(minutes=8)

    version = store.history("futures_bars", 1)[0]["version"]
    again = await run_once(broker, store, now)
    assert again.summary.item(0, "bars_new") == 0
    assert store.history("futures_bars", 1)[0]["version"] == version  # nothing committed
    assert stored(store).equals(frame)


async def test_bad_bar_is_quarantined_and_the_rest_land(store_root: Path) -> None:
    store, broker = DeltaStore(store_root), FakeFuturesBroker()
    broker.bad_minutes = {T0 + timedelta(minutes=2)}
    batch = await run_once(broker, store, T0 + timedelta(minutes=5))
    assert batch.summary.item(0, "quarantined") == 1
    good = stored(store).get_column("ts").to_list()
    assert T0 + timedelta(minutes=2) not in good
    assert T0 + timedelta(minutes=3) in good
    bad = store.read("futures_quarantine").collect()
    assert bad.height == 1
    assert bad.item(0, "ts") == T0 + timedelta(minutes=2)
    assert "OHLC inconsistent" in bad.item(0, "reason")
    # A repeat sees the same bad bar: quarantine is insert-only, nothing new is written.
    version = store.history("futures_quarantine", 1)[0]["version"]
    await run_once(broker, store, T0 + timedelta(minutes=5))
    assert store.history("futures_quarantine", 1)[0]["version"] == version


async def test_front_month_roll_switches_the_stored_contract(store_root: Path) -> None:
    store, broker = DeltaStore(store_root), FakeFuturesBroker()
    roll = datetime(2026, 3, 11, 22, 0, tzinfo=UTC)  # ESH6 expires 3/20; roll date Thu 3/12
    await run_once(broker, store, roll - timedelta(minutes=2))
    batch = await run_once(broker, store, roll + timedelta(minutes=3))
    assert batch.summary.item(0, "contract") == "ESM6"
    last_bar = stored(store).group_by("contract").agg(pl.col("ts").max())
    assert dict(last_bar.iter_rows()) == {
        "ESH6": roll - timedelta(minutes=3),  # the last complete bar before the roll
        "ESM6": roll + timedelta(minutes=2),
    }
    # The new contract has no history yet: its first run backfills up to the cap.
    assert broker.requests[-1] == ("ESM6", roll + timedelta(minutes=3), CAP)


async def test_unknown_contract_is_a_clear_error() -> None:
    broker = FakeFuturesBroker()
    broker.known = False
    with pytest.raises(LookupError, match=r"front futures contracts \['ESH6'\]"):
        await resolve_front_contracts(cast(Broker, broker), ["ES"], T0, 8)


def test_request_duration_reaches_back_to_last_bar_within_cap() -> None:
    now = T0 + timedelta(minutes=10, seconds=30)
    assert request_duration(None, now, CAP) == CAP
    assert request_duration(T0, now, CAP) == timedelta(minutes=12)
    assert request_duration(now - timedelta(seconds=20), now, CAP) == timedelta(minutes=2)
    assert request_duration(T0 - timedelta(days=5), now, CAP) == CAP


async def test_last_stored_bars_only_looks_inside_the_cap(store_root: Path) -> None:
    store, broker = DeltaStore(store_root), FakeFuturesBroker()
    await run_once(broker, store, T0 + timedelta(minutes=3))
    now = T0 + timedelta(minutes=10)
    assert last_stored_bars(store, "futures_bars", [("ES", "ESH6")], now, CAP) == {
        ("ES", "ESH6"): T0 + timedelta(minutes=2)
    }
    far = T0 + timedelta(days=3)
    assert last_stored_bars(store, "futures_bars", [("ES", "ESH6")], far, CAP) == {}


def test_quote_without_prices_stores_nulls() -> None:
    c = Contract.future("ES", T0.date().replace(day=20), 50).with_con_id(1, local_symbol="ESH6")
    frame = quotes_frame([Quote(c, T0, bid=6800.0, ask=math.nan, last=-1.0)])
    assert frame.row(0) == ("ES", "ESH6", T0, 6800.0, None, None)


async def test_one_commit_per_table_per_run(store_root: Path) -> None:
    store, broker = DeltaStore(store_root), FakeFuturesBroker()
    broker.bad_minutes = {T0 + timedelta(minutes=1)}
    await run_once(broker, store, T0 + timedelta(minutes=30))
    # Table creation is version 0; the run's 29 bars arrive in a single commit.
    assert store.history("futures_bars", 1)[0]["version"] == 1
    assert store.history("futures_quarantine", 1)[0]["version"] == 1


def minute_bars(symbol: str, contract: str, first: datetime, n: int) -> pl.DataFrame:
    ts = [first + i * BAR for i in range(n)]
    return pl.DataFrame(
        {
            "symbol": symbol,
            "contract": contract,
            "ts": ts,
            "open": 100.0,
            "high": 101.0,
            "low": 99.0,
            "close": 100.5,
            "volume": pl.Series([5] * n, dtype=pl.Int64),
        }
    ).with_columns(pl.col("ts").cast(UTC_US))


def test_last_stored_bars_narrow_look_then_fallback(store_root: Path) -> None:
    """Steady state is answered from the last minutes; a series whose last bar is older
    (an outage, a quiet contract) is still found anywhere inside the lookback, also across
    midnight; one older than the lookback is not (the request is capped anyway)."""
    store = DeltaStore(store_root)
    now = datetime(2026, 3, 3, 0, 5, 5, tzinfo=UTC)
    midnight = datetime(2026, 3, 3, tzinfo=UTC)
    store.merge("futures_bars", minute_bars("ES", "ESH6", midnight - 10 * BAR, 15))  # to 00:04
    store.merge("futures_bars", minute_bars("ES", "ESM6", midnight - 20 * BAR, 2))  # to 23:41
    store.merge("futures_bars", minute_bars("NQ", "NQH6", now - timedelta(hours=5), 30))
    store.merge("futures_bars", minute_bars("RTY", "RTYH6", now - timedelta(days=3), 5))
    wanted = [("ES", "ESH6"), ("ES", "ESM6"), ("NQ", "NQH6"), ("RTY", "RTYH6"), ("YM", "YMH6")]
    got = last_stored_bars(store, "futures_bars", wanted, now, CAP)
    assert got == {
        ("ES", "ESH6"): midnight + 4 * BAR,
        ("ES", "ESM6"): midnight - 19 * BAR,
        ("NQ", "NQH6"): now - timedelta(hours=5) + 29 * BAR,
    }
    assert now - (midnight - 19 * BAR) > RECENT  # ESM6 really needed the fallback


@settings(max_examples=12, deadline=None)
@given(ages=st.lists(st.integers(min_value=1, max_value=3 * 24 * 60), min_size=1, max_size=4))
def test_last_stored_bars_matches_a_full_scan(ages: list[int]) -> None:
    """Whatever the age of each series' newest bar, the two-step lookup equals a brute-force
    scan of the whole table restricted to the lookback."""
    now = datetime(2026, 3, 5, 14, 0, 5, tzinfo=UTC)
    with tempfile.TemporaryDirectory() as root:
        store = DeltaStore(root)
        series = [(f"S{i}", f"S{i}H6") for i in range(len(ages))]
        frames = [
            minute_bars(s, c, now - timedelta(minutes=age, seconds=5) - 3 * BAR, 3)
            for (s, c), age in zip(series, ages, strict=True)
        ]
        for frame in frames:  # one file each, so file stats really prune
            store.merge("futures_bars", frame)
        brute = (
            store.read("futures_bars")
            .filter(pl.col("ts") >= now - CAP)
            .group_by("symbol", "contract")
            .agg(pl.col("ts").max())
            .collect()
        )
        expect = {(r[0], r[1]): r[2] for r in brute.iter_rows()}
        assert last_stored_bars(store, "futures_bars", series, now, CAP) == expect
