"""Two V6 homes on one Prefect server: each run carries its home's tag, and each home's
view (`v6 status`'s flow runs) sees its own runs only."""

from __future__ import annotations

import asyncio
from pathlib import Path

from core.config import Settings
from deployments.catalog import entry
from deployments.installation import home_tag
from deployments.runs import run_local
from deployments.status import flow_runs


def home(root: Path) -> Settings:
    return Settings(storage={"root": str(root / "data")})


async def test_two_homes_on_one_server_each_see_their_own_runs(tmp_path: Path) -> None:
    one, two = home(tmp_path / "one"), home(tmp_path / "two")
    assert home_tag(one) != home_tag(two)
    halt = entry("halt")
    # run_local runs the flow on its own event loop, as `v6 run` does
    first = await asyncio.to_thread(run_local, halt, {"reason": "drill one"}, one)
    second = await asyncio.to_thread(run_local, halt, {"reason": "drill two"}, two)
    assert first.exit_code == 0 and second.exit_code == 0
    (mine,) = await flow_runs(["halt"], home_tag(one))
    (theirs,) = await flow_runs(["halt"], home_tag(two))
    assert mine.last_state == "Completed" and theirs.last_state == "Completed"
    assert mine.last_at is not None and theirs.last_at is not None
    assert mine.last_at < theirs.last_at  # one's own, earlier run; not two's latest
    (nobody,) = await flow_runs(["halt"], "home:v6-0000000000")
    assert nobody.last_state is None
