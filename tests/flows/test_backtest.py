"""The ad hoc backtest flow: V6's cycle over simulated sessions, results into the store."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from core.clock import SimClock
from core.config import load_settings
from core.runtime import Runtime, use_runtime
from core.store import DeltaStore
from core.store.manifest import MANIFEST_NAME, Manifest
from flows.backtest import backtest


async def test_backtest_flow_exports_results_and_reports(tmp_path: Path, no_config: Path) -> None:
    settings = load_settings(storage={"root": str(tmp_path / "data")})
    store = DeltaStore.from_settings(settings)
    runtime = Runtime(settings, store, clock=SimClock(datetime(2026, 3, 1, tzinfo=UTC)))
    with use_runtime(runtime):
        summary = await backtest(days=1, start=date(2026, 3, 2), cycle_minutes=240)

    assert (summary["sessions"], summary["cycles"]) == (1, 2)
    assert summary["outcomes"] == {"Completed": 2}
    assert summary["predictions"] > 0 and summary["days_per_second"] > 0
    preds = store.read("backtest_predictions").collect()
    assert preds.height == summary["predictions"]
    assert preds["run_id"].unique().to_list() == [summary["run_id"]]
    # only results reach the store: the scratch book and the line pool stay in memory
    written = {p.name for p in (tmp_path / "data").iterdir()} - {MANIFEST_NAME}
    assert written == {"backtest_trades", "backtest_predictions"}
    assert set(Manifest(tmp_path / "data").read()) == written
    async with get_client() as client:
        md = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["backtest-summary"]))
        )
    assert any(summary["run_id"] in str(a.data) for a in md)
