"""The production topology, for real on loopback: Prefect server on PostgreSQL with basic
auth, the shipped prefect.yaml deployed onto the `v6-process` pool, two process workers,
V6's Delta tables on an S3 server (moto); trading_cycle, position_reconciliation and
maintenance run through their deployments to final states, and the breaker is reset
through its deployment only by an authenticated client.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.objects import FlowRun, StateType
from processes import stop, tail
from s3_world import S3World, s3_world_fixture  # noqa: F401  (fixture)
from topology_world import (  # noqa: F401  (fixtures)
    AUTH,
    BIN,
    PrefectServer,
    postgres_fixture,
    prefect_on_postgres_fixture,
    start,
)

from core.config import load_settings
from core.risk.breaker import Breaker, BreakerState
from core.store import DeltaStore
from deployments.deploy_config import WORK_POOL

pytestmark = [pytest.mark.server, pytest.mark.topology]

REPO = Path(__file__).resolve().parents[2]
RUN_FINISH_S = 120.0
WORKERS_READY_S = 60.0


@pytest.fixture
async def client(prefect_on_postgres: PrefectServer) -> AsyncIterator[PrefectClient]:
    async with PrefectClient(prefect_on_postgres.url, auth_string=AUTH) as c:
        yield c


def v6_toml(path: Path, s3: S3World) -> Path:
    options = ", ".join(f'{k} = "{v}"' for k, v in s3.options().items())
    path.write_text(
        f'[storage]\nroot = "{s3.root("topology")}"\nstorage_options = {{ {options} }}\n'
        f'reports_dir = "{path.parent / "reports"}"\n'
    )
    return path


async def _wait_final(client: PrefectClient, run: FlowRun, logs: list[Path]) -> FlowRun:
    deadline = time.monotonic() + RUN_FINISH_S
    while not (run.state and run.state.is_final()):
        if time.monotonic() > deadline:
            pytest.fail(f"{run.name} still {run.state}:\n" + "\n".join(tail(p) for p in logs))
        await asyncio.sleep(0.5)
        run = await client.read_flow_run(run.id)
    return run


async def test_unauthenticated_clients_are_refused(prefect_on_postgres: PrefectServer) -> None:
    url = prefect_on_postgres.url
    assert httpx.get(f"{url}/health", timeout=5).status_code == 200  # probes stay open
    for auth in (None, ("v6-admin", "wrong")):
        refused = httpx.post(f"{url}/deployments/filter", json={}, auth=auth, timeout=5)
        assert refused.status_code == 401, refused.text
    user, password = AUTH.split(":", 1)
    assert httpx.post(f"{url}/deployments/filter", json={}, auth=(user, password)).is_success


def doctor(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "v6"), "doctor"], cwd=cwd, env={**env, "COLUMNS": "300"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def fails(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [ln for ln in done.stdout.splitlines() if ln.startswith("FAIL")]


async def test_doctor_names_a_wrong_auth_string_and_a_missing_pool(
    prefect_on_postgres: PrefectServer, s3_world: S3World, tmp_path: Path
) -> None:
    config = v6_toml(tmp_path / "v6.toml", s3_world)
    url = prefect_on_postgres.url
    wrong = doctor({**prefect_on_postgres.client_env("v6-admin:wrong"), "V6_CONFIG": str(config)},
                   tmp_path)  # fmt: skip
    assert wrong.returncode == 2, wrong.stdout + wrong.stderr
    assert fails(wrong) == [
        f"FAIL prefect api  Prefect API at {url} refused PREFECT_API_AUTH_STRING; set "
        "PREFECT_API_AUTH_STRING to the server's PREFECT_SERVER_API_AUTH_STRING (user:password)"
    ]
    # The same line from the commands that talk to the server, before anything is started.
    run = subprocess.run(
        [str(BIN / "v6"), "run", "maintenance", "--deployment"], cwd=tmp_path,
        env={**prefect_on_postgres.client_env("v6-admin:wrong"), "V6_CONFIG": str(config)},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stderr.strip() == "error: " + fails(wrong)[0].split("  ", 1)[1]
    unset = doctor({**prefect_on_postgres.client_env(None), "V6_CONFIG": str(config)}, tmp_path)
    assert "requires credentials and PREFECT_API_AUTH_STRING is not set" in fails(unset)[0]
    no_pool = doctor({**prefect_on_postgres.client_env(), "V6_CONFIG": str(config)}, tmp_path)
    assert no_pool.returncode == 2
    assert fails(no_pool) == [
        f"FAIL work pool    work pool 'v6-process' does not exist at {url}; create it: "
        "prefect work-pool create v6-process --type process"
    ]
    for done in (wrong, unset, no_pool):
        assert AUTH.split(":", 1)[1] not in done.stdout + done.stderr
        assert s3_world.secret not in done.stdout + done.stderr


async def test_topology_runs_the_flows_through_deployments_on_two_workers(
    prefect_on_postgres: PrefectServer, client: PrefectClient, s3_world: S3World, tmp_path: Path
) -> None:
    started = time.monotonic()
    config = v6_toml(tmp_path / "v6.toml", s3_world)
    env = {**prefect_on_postgres.client_env(), "V6_HOME": str(REPO), "V6_CONFIG": str(config)}
    await client.create_work_pool(WorkPoolCreate(name=WORK_POOL, type="process"))
    deployed = subprocess.run(
        [str(BIN / "prefect"), "--no-prompt", "deploy", "--all"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr

    logs = [tmp_path / f"worker-{n}.log" for n in (1, 2)]
    worker_env = {
        **env,
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "1",
    }
    cmd = [str(BIN / "prefect"), "worker", "start", "--pool", WORK_POOL, "--name"]
    workers = [
        start([*cmd, f"w{n}"], worker_env, log, tmp_path) for n, log in ((1, logs[0]), (2, logs[1]))
    ]
    try:
        await _wait_for_workers(client, {"w1", "w2"}, logs)
        ready = doctor(env, tmp_path)
        assert ready.returncode == 0, ready.stdout + ready.stderr
        assert "deployment ready" in ready.stdout and "2 online: w1, w2" in ready.stdout

        # Refused without credentials: no run is created, the breaker is not touched.
        reset = await client.read_deployment_by_name("circuit_breaker_reset/circuit_breaker_reset")
        async with PrefectClient(prefect_on_postgres.url) as anonymous:
            with pytest.raises(httpx.HTTPStatusError, match="401"):
                await anonymous.create_flow_run_from_deployment(
                    reset.id, parameters={"reason": "not allowed", "actor": "mallory"}
                )
        async with PrefectClient(prefect_on_postgres.url, auth_string="v6-admin:wrong") as wrong:
            with pytest.raises(httpx.HTTPStatusError, match="401"):
                await wrong.create_flow_run_from_deployment(reset.id, parameters={"reason": "x"})

        runs: dict[str, FlowRun] = {}
        for name, params in (
            ("trading_cycle", {"guard": False}),
            ("position_reconciliation", {"guard": False}),
            ("maintenance", {}),
            ("circuit_breaker_reset", {"reason": "topology drill", "actor": "alice"}),
        ):
            dep = await client.read_deployment_by_name(f"{name}/{name}")
            runs[name] = await client.create_flow_run_from_deployment(dep.id, parameters=params)
        finals = {n: await _wait_final(client, r, logs) for n, r in runs.items()}
    finally:
        for w in workers:
            stop(w)

    states = {n: (r.state.type, r.state.name) for n, r in finals.items() if r.state}
    assert states["maintenance"][0] is StateType.COMPLETED, (states, tail(logs[0]))
    assert states["position_reconciliation"][0] is StateType.COMPLETED, states
    assert states["circuit_breaker_reset"][0] is StateType.COMPLETED, states
    assert states["trading_cycle"][0] is StateType.COMPLETED, states
    # The runs were picked up by the pool's workers, and they wrote to the S3 store.
    assert {r.work_pool_name for r in finals.values()} == {WORK_POOL}
    store = DeltaStore.from_settings(load_settings(config))
    breaker = Breaker(store, load_settings(config).breaker)
    assert breaker.state() is BreakerState.CLOSED
    history = store.read("risk_state").collect()
    assert "mallory" not in history.get_column("actor").to_list()
    assert "alice" in history.get_column("actor").to_list()
    assert store.read("cycle_health").collect().height >= 1
    # No secret in what the workers logged.
    for log in logs:
        text = log.read_text(errors="replace")
        for secret in (AUTH.split(":", 1)[1], s3_world.secret):
            assert secret not in text, f"{secret[:3]}... leaked into {log.name}"
    print(f"\ntopology (excluding server start): {time.monotonic() - started:.1f}s")


async def _wait_for_workers(client: PrefectClient, names: set[str], logs: list[Path]) -> None:
    deadline = time.monotonic() + WORKERS_READY_S
    while True:
        workers = await client.read_workers_for_work_pool(WORK_POOL)
        if names <= {w.name for w in workers}:
            return
        if time.monotonic() > deadline:
            pytest.fail("workers not registered:\n" + "\n".join(tail(p) for p in logs))
        await asyncio.sleep(0.5)
