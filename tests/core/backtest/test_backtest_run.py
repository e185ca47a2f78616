"""A backtest is V6's own cycle on a simulated market: entries on a calm day, exits when a
crash day comes, and only the results leave the scratch book."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import core.backtest.run as backtest_run
from core.backtest.export import config_hash
from core.backtest.run import cycle_times, run_backtest
from core.calendar import MarketCalendar
from core.config import ScheduleSettings, Settings
from core.runtime import Runtime
from core.store import REGISTRY, DeltaStore, SchemaViolation
from core.store.manifest import MANIFEST_NAME, Manifest
from core.store.memory import MemoryStore


def test_cycle_times_respect_the_session_and_half_days() -> None:
    cal = MarketCalendar(ScheduleSettings())
    full = cycle_times(cal, date(2026, 3, 2), timedelta(minutes=60))
    assert len(full) == 7  # 09:35 .. 15:35 ET
    half = cycle_times(cal, date(2026, 11, 27), timedelta(minutes=60))  # 13:00 close
    assert len(half) == 4  # 09:35 .. 12:35 ET


def test_config_hash_tracks_trading_settings_only() -> None:
    base = Settings()
    assert config_hash(base) == config_hash(Settings(storage={"root": "/elsewhere"}))
    assert config_hash(base) != config_hash(Settings(limits={"max_open_strategies": 3}))


async def test_calm_day_then_crash_day_opens_and_closes_trades(store_root: Path) -> None:
    settings = Settings(sim={"start": "2026-03-02", "regimes": {"2026-03-03": "crash"}})
    target = DeltaStore(store_root)
    seen: list[int] = []
    result = await run_backtest(
        settings, target, days=2, cycle_minutes=240, progress=lambda i, n, at: seen.append(i)
    )
    assert result.sessions == 2 and result.cycles == 4 == len(seen)  # 09:35 and 13:35 ET
    assert result.predictions > 0  # entries were made on the calm day
    trades = target.read("backtest_trades").collect()
    assert trades.height == result.trades > 0  # the crash closed some
    assert trades["run_id"].unique().to_list() == [result.run_id]
    assert trades["config_hash"].unique().to_list() == [config_hash(settings)]
    assert trades["source"].unique().to_list() == ["backtest"]
    preds = target.read("backtest_predictions").collect()
    assert preds.height == result.predictions
    # the scratch book is gone: only backtest tables were written to the target
    written = {p.name for p in store_root.iterdir() if p.name != MANIFEST_NAME}
    assert written == {"backtest_trades", "backtest_predictions"}
    assert set(Manifest(store_root).read()) == written  # the versions V6 wrote, beside them


async def test_bad_arguments_are_refused(store_root: Path) -> None:
    with pytest.raises(ValueError, match="days must be >= 1"):
        await run_backtest(Settings(), DeltaStore(store_root), days=0)
    with pytest.raises(ValueError, match="cycle_minutes must be >= 5"):
        await run_backtest(Settings(), DeltaStore(store_root), days=1, cycle_minutes=1)


def _sorted(frame: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    return frame.sort(keys or frame.columns, maintain_order=True)


async def test_memory_book_gives_the_delta_books_results(tmp_path: Path) -> None:
    """The fast scratch book changes nothing: the same cycles (entries on a calm day, exits
    on a crash day) leave every book table identical to a Delta scratch book's, and export
    the same trades and predictions (trade sums up to float summation order: Delta defines
    no row order)."""
    settings = Settings(sim={"start": "2026-03-02", "regimes": {"2026-03-03": "crash"}})
    fast_book = MemoryStore(defer_value_checks=True)
    slow_book = DeltaStore(tmp_path / "scratch")
    fast, slow = DeltaStore(tmp_path / "fast"), DeltaStore(tmp_path / "slow")
    runs = [
        await run_backtest(settings, out, days=2, cycle_minutes=240, run_id="bt", scratch=book)
        for out, book in ((fast, fast_book), (slow, slow_book))
    ]
    assert runs[0].trades > 0 and runs[0].outcomes == {"Completed": 4}
    assert (runs[0].trades, runs[0].predictions) == (runs[1].trades, runs[1].predictions)
    written = [name for name in REGISTRY if slow_book.exists(name)]
    assert written == [name for name in REGISTRY if fast_book.exists(name)]
    assert {"strategies", "legs", "orders", "fills", "decisions"} <= set(written)
    for name in written:
        keys = list(REGISTRY[name].keys)
        mine = _sorted(fast_book.read(name).collect(), keys)
        assert mine.equals(_sorted(slow_book.read(name).collect(), keys)), name
    for name in ("backtest_trades", "backtest_predictions"):
        keys = list(REGISTRY[name].keys)
        got = [_sorted(out.read(name).collect().drop("run_at"), keys) for out in (fast, slow)]
        assert_frame_equal(got[0], got[1], rel_tol=1e-12)


async def test_the_run_touches_nothing_under_the_live_storage_root(tmp_path: Path) -> None:
    """The scratch book and the market-data line pool are the run's own: a live process's
    lines (a file under the live root) neither limit nor see a backtest."""
    live = tmp_path / "live"
    settings = Settings(storage={"root": str(live)}, sim={"start": "2026-03-02"})
    await run_backtest(settings, DeltaStore(tmp_path / "target"), days=1, cycle_minutes=240)
    assert not live.exists()


async def test_a_batch_live_would_refuse_fails_the_run_before_export(
    store_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Value checks run in bulk once a session; a refusal stops the run, nothing exported."""
    real = backtest_run.run_trading_cycle

    async def cycle_writing_a_bad_order(rt: Runtime, run_id: str) -> Any:
        run = await real(rt, run_id)
        bad = rt.store.spec("orders").example().with_columns(quantity=pl.lit(0, pl.Int64))
        rt.store.merge("orders", bad)  # live refuses this at the write
        return run

    monkeypatch.setattr(backtest_run, "run_trading_cycle", cycle_writing_a_bad_order)
    target = DeltaStore(store_root)
    seen: list[int] = []
    with pytest.raises(SchemaViolation, match="quantity"):
        await run_backtest(
            Settings(), target, days=2, cycle_minutes=240, progress=lambda i, n, at: seen.append(i)
        )
    assert seen == [1, 2]  # the first session's checks stopped it
    assert not target.exists("backtest_trades") and not target.exists("backtest_predictions")
