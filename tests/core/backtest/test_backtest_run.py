"""A backtest is V6's own cycle on a simulated market: entries on a calm day, exits when a
crash day comes, and only the results leave the scratch book."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest

from v6.core.backtest.export import config_hash
from v6.core.backtest.run import cycle_times, run_backtest
from v6.core.calendar import MarketCalendar
from v6.core.config import ScheduleSettings, Settings
from v6.core.store import DeltaStore


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
    written = {p.name for p in store_root.iterdir()}
    assert written == {"backtest_trades", "backtest_predictions"}


async def test_bad_arguments_are_refused(store_root: Path) -> None:
    with pytest.raises(ValueError, match="days must be >= 1"):
        await run_backtest(Settings(), DeltaStore(store_root), days=0)
    with pytest.raises(ValueError, match="cycle_minutes must be >= 5"):
        await run_backtest(Settings(), DeltaStore(store_root), days=1, cycle_minutes=1)
