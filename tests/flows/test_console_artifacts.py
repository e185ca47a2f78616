"""The operator's artifacts: a positions table and an equity page per installation, with
an SVG equity curve whose x axis carries the market dates of the data."""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from core.config import Settings
from core.runtime import Runtime
from core.store import REGISTRY, DeltaStore
from core.views.equity import equity_by_date, equity_svg
from tasks.console import artifact_keys, publish_console_artifacts

NY = ZoneInfo("America/New_York")
SID = "ic-SPY-20260302-0123456789"


def seed(root: Path) -> Runtime:
    store = DeltaStore(str(root))
    for name in ("strategies", "legs", "fills"):
        store.merge(name, REGISTRY[name].example())
    store.merge("decisions", REGISTRY["decisions"].example().with_columns(strategy_id=pl.lit(SID)))
    health = REGISTRY["cycle_health"].example()
    ts = health["ts"].dtype
    rows = [  # two cycles on 2 March (the later one counts), one on 3 March
        (datetime(2026, 3, 2, 15, 0, tzinfo=UTC), 100_050.0),
        (datetime(2026, 3, 2, 20, 0, tzinfo=UTC), 100_100.0),
        (datetime(2026, 3, 3, 20, 0, tzinfo=UTC), 99_900.0),
    ]
    store.append(
        "cycle_health",
        pl.concat(
            health.with_columns(run_id=pl.lit(f"r{i}"), ts=pl.lit(at).cast(ts), net_liq=pl.lit(liq))
            for i, (at, liq) in enumerate(rows)
        ),
    )
    daily = REGISTRY["account_daily"].example()
    store.merge("account_daily", daily.with_columns(date=pl.lit(date(2026, 3, 2)),
                                                    start_net_liq=pl.lit(100_000.0)))  # fmt: skip
    return Runtime(Settings(), store)


def test_equity_by_market_date_and_its_chart(store_root: Path) -> None:
    frame = equity_by_date(seed(store_root).store, NY)
    assert frame.select("date", "net_liq", "day_pnl").rows() == [
        (date(2026, 3, 2), 100_100.0, 100.0),  # against the day's start-of-day baseline
        (date(2026, 3, 3), 99_900.0, -200.0),  # no baseline: against the previous close
    ]
    svg = equity_svg(frame)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert ">03-02</text>" in svg and ">03-03</text>" in svg  # one label per date, not one
    assert ">99,900</text>" in svg and ">100,100</text>" in svg
    assert svg.count("<circle") == 2


async def test_artifacts_are_keyed_per_installation(tmp_path: Path) -> None:
    one, two = seed(tmp_path / "one"), seed(tmp_path / "two")
    assert artifact_keys(one) != artifact_keys(two)

    @flow
    async def refresh() -> None:
        await publish_console_artifacts(one)

    await refresh()
    positions_key, equity_key = artifact_keys(one)
    async with get_client() as client:
        arts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[positions_key, equity_key]))
        )
        others = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=list(artifact_keys(two))))
        )
    assert others == []
    by_key = {a.key: a for a in arts}
    assert SID in str(by_key[positions_key].data) and "170.1" in str(by_key[positions_key].data)
    page = str(by_key[equity_key].data)
    assert "| 2026-03-03 | 99,900.00 | -200.00 |" in page
    encoded = page.split("data:image/svg+xml;base64,")[1].split(")")[0]
    assert base64.b64decode(encoded).decode().startswith("<svg")
