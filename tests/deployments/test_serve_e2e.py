"""End to end on a real Prefect server: `prefect server start` on loopback, `v6 serve` in
the background, an ad-hoc run of a served deployment followed through the API to its
final state; then the shipped prefect.yaml deployed from the checkout with `prefect
deploy --all` onto the process work pool, and one deployment run by a process worker.

The server and serve are separate processes (as in production), so everything is
observed through the API and V6's tables, never in-process state.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import pytest
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.objects import FlowRun, StateType
from processes import stop, tail, wait_healthy

from core.analysis.synthetic import synthetic_trades
from core.config import Settings
from core.store import DeltaStore
from deployments.catalog import CATALOG
from deployments.deploy_config import WORK_POOL, deployment_spec

pytestmark = pytest.mark.server

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SERVER_START_S = 90.0
SERVE_READY_S = 60.0
RUN_FINISH_S = 60.0
AS_OF = datetime(2026, 3, 31, 22, 30, tzinfo=UTC)


@dataclass
class Server:
    url: str
    env: dict[str, str]
    home: Path
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "V6_"))}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW="ignore",
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    env = _clean_env(home)
    log_path = home / "server.log"
    log: IO[bytes] = log_path.open("wb")
    # --no-ui: the API is all this test needs. --no-scheduler: only the ad-hoc run under
    # test executes (otherwise whatever schedule falls due, e.g. futures_collection in the
    # futures session, would run too and make the test depend on the time of day).
    cmd = [str(BIN / "prefect"), "server", "start", "--no-ui", "--no-scheduler"]
    cmd += ["--host", "127.0.0.1"]
    proc = subprocess.Popen(
        [*cmd, "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        wait_healthy(proc, url, log_path, SERVER_START_S)
        yield Server(url, env, home, log_path)
    finally:
        stop(proc)
        log.close()


@pytest.fixture
async def client(prefect_server: Server) -> AsyncIterator[PrefectClient]:
    async with PrefectClient(prefect_server.url) as c:
        yield c


def seed_store(root: Path) -> None:
    """A month of live trades and one backtest run, so the flow does its real work."""
    store = DeltaStore(str(root))
    live, live_pred = synthetic_trades(120, seed=1, end=AS_OF)
    hist, hist_pred = synthetic_trades(
        400, seed=2, source="backtest", run_id="BT-E2E", run_at=AS_OF - timedelta(days=1),
        end=AS_OF - timedelta(days=2), days=200,
    )  # fmt: skip
    store.merge("trades", live)
    store.merge("predictions", live_pred)
    store.merge("backtest_trades", hist)
    store.merge("backtest_predictions", hist_pred)


async def _wait_for_deployment(client: PrefectClient, name: str, serve: subprocess.Popen[bytes],
                               log: Path) -> None:  # fmt: skip
    deadline = time.monotonic() + SERVE_READY_S
    while True:
        if serve.poll() is not None:
            pytest.fail(f"`v6 serve` exited ({serve.returncode}):\n{tail(log)}")
        try:
            await client.read_deployment_by_name(name)
            return
        except Exception:  # ObjectNotFound until serve has registered it
            if time.monotonic() > deadline:
                pytest.fail(f"{name} not registered after {SERVE_READY_S:.0f}s:\n{tail(log)}")
            await asyncio.sleep(0.5)


async def _wait_final(client: PrefectClient, run: FlowRun, log: Path) -> FlowRun:
    deadline = time.monotonic() + RUN_FINISH_S
    while not (run.state and run.state.is_final()):
        if time.monotonic() > deadline:
            pytest.fail(f"flow run still {run.state} after {RUN_FINISH_S:.0f}s:\n{tail(log)}")
        await asyncio.sleep(0.5)
        run = await client.read_flow_run(run.id)
    return run


async def test_serve_runs_an_ad_hoc_deployment_to_completion(
    prefect_server: Server, client: PrefectClient, tmp_path: Path
) -> None:
    started = time.monotonic()
    data = tmp_path / "data"
    seed_store(data)
    env = {
        **prefect_server.env,
        "PREFECT_API_URL": prefect_server.url,
        "V6_STORAGE__ROOT": str(data),
        "V6_STORAGE__REPORTS_DIR": str(tmp_path / "reports"),
        "V6_ANALYSIS__BOOTSTRAP_SAMPLES": "200",
        # serve polls for new runs every 10 s by default; an ad-hoc run in a test need not wait
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
    }
    serve_log = tmp_path / "serve.log"
    with serve_log.open("wb") as log:
        serve = subprocess.Popen(
            [sys.executable, "-m", "deployments.cli", "serve"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            await _wait_for_deployment(
                client, "variance_analysis/variance_analysis", serve, serve_log
            )
            deployment = await client.read_deployment_by_name("variance_analysis/variance_analysis")
            # Served as the catalog says: market-time cron, one run at a time.
            assert [s.schedule.cron for s in deployment.schedules] == ["30 18 * * 1-5"]  # type: ignore[union-attr]
            assert {s.schedule.timezone for s in deployment.schedules} == {"America/New_York"}  # type: ignore[union-attr]
            assert deployment.global_concurrency_limit is not None
            assert deployment.global_concurrency_limit.limit == 1

            # Ad hoc, with a parameter: the run happens in a serve subprocess.
            run = await client.create_flow_run_from_deployment(
                deployment.id, parameters={"as_of": AS_OF.isoformat(), "seed": 3}
            )
            run = await _wait_final(client, run, serve_log)
            assert run.state is not None
            assert run.state.type is StateType.COMPLETED, (run.state, tail(serve_log))

            # It ran on the V6 config serve was given: tonight's results are in its store.
            results = DeltaStore(str(data)).read("variance_results").collect()
            assert results.height > 0
            assert results.get_column("run_date").unique().to_list() == [AS_OF.date()]
            assert results.get_column("hist_run_id").unique().to_list() == ["BT-E2E"]
            assert (tmp_path / "reports" / "variance-2026-03-31.html").exists()

            # The same through the CLI: trigger the served deployment and follow it.
            cli_run = subprocess.run(
                [sys.executable, "-m", "deployments.cli", "run", "variance_analysis",
                 "--deployment", "-p", f"as_of={AS_OF.isoformat()}", "--timeout", "60"],
                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert cli_run.returncode == 0, cli_run.stdout + cli_run.stderr
            assert "triggered variance_analysis/variance_analysis" in cli_run.stdout
            assert "variance_analysis: Completed" in cli_run.stdout.splitlines()

            # The operator's view of the same server: the run is the flow's last run.
            status = subprocess.run(
                [sys.executable, "-m", "deployments.cli", "status"],
                cwd=tmp_path, env={**env, "COLUMNS": "200"}, capture_output=True, text=True,
                timeout=60,
            )  # fmt: skip
            assert status.returncode == 0, status.stderr
            line = next(ln for ln in status.stdout.splitlines() if "variance_analysis" in ln)
            assert "Completed" in line
            assert "realised (closed trades)" in status.stdout
        finally:
            stop(serve)
    print(f"\nserve e2e (excluding server start): {time.monotonic() - started:.1f}s")


async def test_shipped_prefect_yaml_deploys_and_a_worker_runs_it(
    prefect_server: Server, client: PrefectClient, tmp_path: Path
) -> None:
    """As the README says: `prefect deploy --all` in the checkout registers the file
    entrypoints, and a process worker (its own cwd elsewhere) runs one to completion."""
    await client.create_work_pool(WorkPoolCreate(name=WORK_POOL, type="process"))
    data = tmp_path / "data"
    seed_store(data)
    env = {
        **prefect_server.env,
        "PREFECT_API_URL": prefect_server.url,
        "V6_HOME": str(REPO),
        "V6_STORAGE__ROOT": str(data),
        "V6_STORAGE__REPORTS_DIR": str(tmp_path / "reports"),
        "V6_ANALYSIS__BOOTSTRAP_SAMPLES": "200",
    }
    done = subprocess.run(
        [str(BIN / "prefect"), "--no-prompt", "deploy", "--all"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr

    for item in CATALOG:
        dep = await client.read_deployment_by_name(f"{item.name}/{item.name}")
        spec = deployment_spec(item, Settings())
        assert dep.work_pool_name == WORK_POOL
        assert dep.entrypoint == spec["entrypoint"] == item.target
        served = {(s.schedule.cron, s.schedule.timezone) for s in dep.schedules}  # type: ignore[union-attr]
        assert served == {(s["cron"], s["timezone"]) for s in spec["schedules"]}
        if item.one_at_a_time:
            assert dep.global_concurrency_limit is not None
            assert dep.global_concurrency_limit.limit == 1
        # V6_HOME was set at deploy time, so the pull step points at this checkout.
        assert dep.pull_steps == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}
        ]

    deployment = await client.read_deployment_by_name("variance_analysis/variance_analysis")
    run = await client.create_flow_run_from_deployment(
        deployment.id, parameters={"as_of": AS_OF.isoformat(), "seed": 3}
    )
    worker_log = tmp_path / "worker.log"
    with worker_log.open("wb") as log:
        worker = subprocess.Popen(
            [str(BIN / "prefect"), "worker", "start", "--pool", WORK_POOL, "--run-once"],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            run = await _wait_final(client, run, worker_log)
        finally:
            stop(worker)
    assert run.state is not None
    assert run.state.type is StateType.COMPLETED, (run.state, tail(worker_log))
    results = DeltaStore(str(data)).read("variance_results").collect()
    assert results.get_column("run_date").unique().to_list() == [AS_OF.date()]
