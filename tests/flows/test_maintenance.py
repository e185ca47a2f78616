"""The nightly maintenance flow on a temp store full of small commits."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)

from core.clock import SimClock
from core.config import Settings
from core.domain.timezones import UTC_US
from core.runtime import Runtime, use_runtime
from core.store import DeltaStore
from core.store.maintenance import maintain_table
from flows.maintenance import maintenance

NIGHT = datetime(2026, 3, 5, 7, 0, tzinfo=UTC)  # 02:00 New York
DAYS = (date(2026, 3, 3), date(2026, 3, 4), date(2026, 3, 5))


def seed(store: DeltaStore) -> pl.DataFrame:
    """Three one-row commits per day, one day being today's (still open) partition."""
    for d in DAYS:
        for i in range(3):
            bar = pl.DataFrame(
                {
                    "symbol": ["ES"],
                    "contract": ["ESH6"],
                    "ts": [datetime(d.year, d.month, d.day, 1, i, tzinfo=UTC)],
                    "open": [6800.0],
                    "high": [6801.0],
                    "low": [6799.0],
                    "close": [6800.5],
                    "volume": [5],
                }
            ).with_columns(pl.col("ts").cast(UTC_US))
            store.merge("futures_bars", bar)
    store.ensure("futures_quotes")
    return store.read("futures_bars").sort("ts").collect()


@pytest.fixture
def rt(tmp_path: Path) -> Runtime:
    settings = Settings(storage={"root": str(tmp_path / "data"), "vacuum_retention_hours": 0})
    return Runtime(
        settings=settings, store=DeltaStore.from_settings(settings), clock=SimClock(NIGHT)
    )


async def test_compacts_closed_partitions_and_reports(rt: Runtime) -> None:
    before = seed(rt.store)
    with use_runtime(rt):
        state = await maintenance(return_state=True)
    summary = await state.result()
    assert summary["tables"] == 2  # only the tables that exist
    assert summary["failed"] == []
    # Two closed days: 3 files -> 1 each; today's 3 files are left alone.
    bars = rt.store.stats("futures_bars")
    assert bars.files == 2 + 3
    assert summary["files_before"] == 9 and summary["files_after"] == 5
    assert summary["files_vacuumed"] == 6  # retention 0 h from the settings
    assert summary["bytes_after"] < summary["bytes_before"]
    assert rt.store.read("futures_bars").sort("ts").collect().equals(before)

    async with get_client() as client:
        arts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["store-maintenance"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
            )
        )  # this run's: other tests on the session's server write the same key
    assert len(arts) == 1 and "files_before" in str(arts[0].data)


async def test_one_failing_table_fails_the_run_but_the_others_are_done(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(rt.store)

    def flaky(store: DeltaStore, name: str, **kwargs: object) -> object:
        if name == "futures_quotes":
            raise OSError("disk full")
        return maintain_table(store, name, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("tasks.maintenance.maintain_table", flaky)
    with use_runtime(rt):
        state = await maintenance(retention_hours=168, return_state=True)
    assert state.is_failed() and state.name == "MaintenanceFailed"
    assert "futures_quotes" in (state.message or "")
    assert rt.store.stats("futures_bars").files == 5  # compacted all the same


async def test_unknown_table_is_refused(rt: Runtime) -> None:
    with use_runtime(rt):
        state = await maintenance(tables=["futures_barz"], return_state=True)
    assert state.is_failed()
    with pytest.raises(ValueError, match="unknown tables"):
        await state.result()  # type: ignore[misc]
