"""The operator's commands: run, breaker, status, serve, deploy-config, gateway-sim.

Most run `main()` in-process (exactly what the console script does) to stay fast; the
ones whose point is the real entry point or a long-lived process use a subprocess.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
import yaml
from cli_harness import v6
from prefect import flow
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Cancelled, Completed, Failed, State

import deployments.catalog as catalog
from core.config import Settings, load_settings
from core.domain.timezones import MARKET_TZ
from core.identity import os_identity
from core.risk.breaker import Breaker, BreakerState
from core.store import REGISTRY, DeltaStore
from deployments import cli
from deployments.catalog import FlowEntry
from deployments.deploy_config import prefect_yaml, render_prefect_yaml
from deployments.schedules import Cadence
from deployments.status import pnl_summary

REPO = Path(__file__).resolve().parents[2]
AS_OF = datetime(2026, 3, 31, 22, 30, tzinfo=UTC)


def v6_process(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deployments.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("V6_")}
    env.pop("PREFECT_API_URL", None)
    env.update(extra)
    return env


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture
def workdir(no_config: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty cwd, no V6_* variables, storage under it, and no Prefect server configured."""
    monkeypatch.setenv("V6_STORAGE__ROOT", str(no_config / "data"))
    monkeypatch.setenv("V6_STORAGE__REPORTS_DIR", str(no_config / "reports"))
    monkeypatch.setattr(cli.console, "width", 200)
    return no_config


@pytest.fixture
def no_server() -> Iterator[None]:
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        yield


# -- v6 run: argument errors (no Prefect needed: they fail before anything runs) -------------


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["nope"], ["unknown flow 'nope'", "valid flows:", "variance_analysis"]),
        (["variance_analysis", "-p", "sed=3"], ["unknown parameter 'sed'", "as_of, hist_run_id"]),
        (["variance_analysis", "-p", "seed=abc"], ["invalid parameters", "seed", "integer"]),
        (["variance_analysis", "-p", "seed"], ["'seed' is not KEY=VALUE", "--param seed="]),
        (["circuit_breaker_reset"], ["circuit_breaker_reset", "reason", "required"]),
    ],
)  # fmt: skip
def test_run_rejects_bad_arguments_in_one_line(
    capsys: pytest.CaptureFixture[str], workdir: Path, args: list[str], needles: list[str]
) -> None:
    code, _, err = v6(capsys, "run", *args)
    assert_one_line_error(code, err, *needles)
    assert not (workdir / "data").exists()  # nothing ran


def test_run_deployment_needs_a_server(
    capsys: pytest.CaptureFixture[str], workdir: Path, no_server: None
) -> None:
    code, _, err = v6(capsys, "run", "variance_analysis", "--deployment")
    assert_one_line_error(code, err, "no Prefect server configured", "prefect server start")


# -- v6 run: in-process runs, final state -> exit code ----------------------------------------


@flow(name="v6_test_tripped")
async def tripped_flow() -> State:
    return Failed(name="CircuitTripped", message="daily_loss: 2.50% of net liquidation")


@flow(name="v6_test_open")
async def open_flow() -> State:
    return Cancelled(name="CircuitOpen", message="breaker OPEN since 15:00Z")


@flow(name="v6_test_closed")
async def closed_flow(note: str = "") -> State:
    return Completed(name="MarketClosed", message=f"equity market closed {note}".strip())


@pytest.fixture
def test_catalog(monkeypatch: pytest.MonkeyPatch) -> None:
    entries = tuple(
        FlowEntry(name, f"{__name__}:{attr}", Cadence.AD_HOC, True, "test flow")
        for name, attr in (
            ("tripped", "tripped_flow"),
            ("open", "open_flow"),
            ("closed", "closed_flow"),
        )
    )
    monkeypatch.setattr(catalog, "CATALOG", catalog.CATALOG + entries)


@pytest.mark.parametrize(
    ("name", "args", "code", "line"),
    [
        ("tripped", [], 1, "tripped: CircuitTripped: daily_loss: 2.50% of net liquidation"),
        ("open", [], 1, "open: CircuitOpen: breaker OPEN since 15:00Z"),
        ("closed", ["-p", "note=today"], 0, "closed: MarketClosed: equity market closed today"),
    ],
)
def test_run_exit_code_follows_the_final_state(
    capsys: pytest.CaptureFixture[str],
    workdir: Path,
    prefect_harness: None,
    test_catalog: None,
    name: str,
    args: list[str],
    code: int,
    line: str,
) -> None:
    got, out, err = v6(capsys, "run", name, *args)
    assert got == code, out + err
    assert line in out.splitlines()


def test_run_variance_analysis_in_process_with_parameters(
    capsys: pytest.CaptureFixture[str], workdir: Path, prefect_harness: None
) -> None:
    code, out, err = v6(
        capsys, "run", "variance_analysis", "-p", f"as_of={AS_OF.isoformat()}", "-p", "seed=3"
    )
    assert code == 0, out + err
    assert "variance_analysis: Completed" in out
    assert '"run_date": "2026-03-31"' in out  # the flow's summary, from the as_of parameter
    results = DeltaStore(str(workdir / "data")).read("variance_results").collect()
    assert results.get_column("run_date").unique().to_list() == [AS_OF.date()]


def test_run_backtest_shows_a_progress_bar_fed_by_every_cycle(
    capsys: pytest.CaptureFixture[str], workdir: Path, prefect_harness: None
) -> None:
    """Issue 20: backtests showed no progress in the CLI. Two sessions at a 240-minute
    cadence are 4 cycles; the bar ends at 4/4 at the last cycle's market time."""
    code, out, err = v6(
        capsys, "run", "backtest", "-p", "days=2", "-p", "cycle_minutes=240", "-p", "seed=3"
    )
    assert code == 0, out + err
    assert "backtest: Completed" in out
    bar = [ln for ln in out.splitlines() if "cycles" in ln and ln.lstrip().startswith("backtest")]
    assert len(bar) == 1 and "4/4 cycles" in bar[0], out
    assert re.search(r"backtest \d{4}-\d\d-\d\d \d\d:\d\d NY", bar[0]), bar[0]
    assert '"cycles": 4' in out  # the flow's own count agrees with the bar


# -- v6 breaker ---------------------------------------------------------------------------------


def test_breaker_trip_status_reset_are_audited(
    capsys: pytest.CaptureFixture[str], workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("USER", "carol")
    code, out, _ = v6(capsys, "breaker", "status")
    assert code == 0 and "CLOSED (never tripped)" in out

    code, _, err = v6(capsys, "breaker", "trip")
    assert_one_line_error(code, err, "--reason is required")

    code, out, _ = v6(capsys, "breaker", "trip", "--reason", "fat-finger check")
    assert code == 0 and "CLOSED -> OPEN by carol: fat-finger check" in out

    code, out, _ = v6(capsys, "breaker", "status")
    assert code == 0
    assert "OPEN since" in out and "fat-finger check (by carol)" in out
    assert "manual_trip" in out

    code, out, _ = v6(capsys, "breaker", "reset", "-r", "checked", "--actor", "dave")
    assert code == 0 and "OPEN -> CLOSED by dave: checked" in out

    settings = load_settings()
    status = Breaker(DeltaStore.from_settings(settings), settings.breaker).status()
    assert status.state is BreakerState.CLOSED
    assert [(t.trigger, t.actor, t.reason) for t in status.transitions] == [
        ("manual_trip", "carol", "fat-finger check"),
        ("manual_reset", "dave", "checked"),
    ]
    # $USER and --actor are claims; the real OS account is recorded beside them and shown.
    assert [t.run_by for t in status.transitions] == [f"cli {os_identity()}"] * 2
    code, out, _ = v6(capsys, "breaker", "status")
    assert f"dave (cli {os_identity()})" in out.replace("\n", "")


def test_unreadable_breaker_is_one_line_and_status_still_reports(
    capsys: pytest.CaptureFixture[str], workdir: Path, no_server: None
) -> None:
    broken = workdir / "data" / "risk_state"
    broken.mkdir(parents=True)
    (broken / "part-0.parquet").write_bytes(b"not a delta table")
    code, _, err = v6(capsys, "breaker", "status")
    assert_one_line_error(code, err, "breaker state unavailable", "restore it from backup")

    code, out, _ = v6(capsys, "status")
    assert code == 0
    assert "UNAVAILABLE" in out and "nothing trades" in out
    assert "no positions recorded yet" in out


# -- v6 status ----------------------------------------------------------------------------------


def seed_book(root: Path, trades: list[tuple[str, datetime, float]]) -> DeltaStore:
    """The example strategy/leg/fill (one open short put), closed trades (id, closed_at,
    pnl) and one trading cycle that saw a daily loss."""
    store = DeltaStore(str(root))
    for name in ("strategies", "legs", "fills"):
        store.merge(name, REGISTRY[name].example())
    ex = REGISTRY["trades"].example()
    ts = ex["closed_at"].dtype
    frame = pl.concat(
        ex.with_columns(
            trade_id=pl.lit(tid),
            closed_at=pl.lit(at).cast(ts),
            opened_at=pl.lit(at - timedelta(days=5)).cast(ts),
            pnl=pl.lit(pnl),
        )
        for tid, at, pnl in trades
    )
    store.merge("trades", frame)
    health = (
        REGISTRY["cycle_health"]
        .example()
        .with_columns(daily_pnl=pl.lit(-350.0), net_liq=pl.lit(100_000.0))
    )
    store.append("cycle_health", health)
    return store


def test_status_says_none_open_once_every_strategy_is_closed(
    capsys: pytest.CaptureFixture[str], workdir: Path, no_server: None
) -> None:
    store = DeltaStore(str(workdir / "data"))
    closed = REGISTRY["strategies"].example().with_columns(status=pl.lit("CLOSED"))
    store.merge("strategies", closed)
    code, out, _ = v6(capsys, "status")
    assert code == 0
    assert "none open (1 strategy on record" in out
    assert "no positions recorded yet" not in out


def test_status_shows_positions_pnl_breaker_and_no_server(
    capsys: pytest.CaptureFixture[str], workdir: Path, no_server: None
) -> None:
    code, out, _ = v6(capsys, "status")
    assert code == 0
    assert "no positions recorded yet" in out
    assert "no P&L recorded yet" in out
    assert "Prefect server not configured" in out

    now = datetime.now(UTC)
    seed_book(
        workdir / "data",
        [
            ("T-1", now - timedelta(seconds=1), 120.5),
            ("T-2", now - timedelta(days=10), -20.0),
            ("T-3", now - timedelta(days=60), 1000.0),
        ],
    )
    code, out, _ = v6(capsys, "status")
    assert code == 0
    assert "ic-SPY-20260302-0123456789" in out and "SPY 2026-04-17 480.0 P" in out
    assert "-350.00 USD of net liquidation 100,000.00 USD" in out
    assert "all 3 trades +1,100.50 USD" in out
    assert "CLOSED (never tripped)" in out


def test_pnl_summary_counts_today_in_market_time(tmp_path: Path) -> None:
    now = datetime(2026, 3, 31, 3, 30, tzinfo=UTC)  # 23:30 on 30 March in New York
    store = seed_book(
        tmp_path,
        [
            ("T-1", datetime(2026, 3, 31, 3, 29, tzinfo=UTC), 120.5),  # NY 30 Mar 23:29
            ("T-2", datetime(2026, 3, 30, 23, 0, tzinfo=UTC), 7.0),  # NY 30 Mar 19:00
            ("T-3", datetime(2026, 3, 30, 3, 0, tzinfo=UTC), 1000.0),  # NY 29 Mar 23:00
            ("T-4", datetime(2026, 2, 1, 15, 0, tzinfo=UTC), -50.0),  # outside 30 days
        ],
    )
    pnl = pnl_summary(store, now, MARKET_TZ)
    assert pnl.trades_total == 4
    assert pnl.realised_today == 127.5  # a UTC day would give 120.5
    assert pnl.realised_30d == 1127.5
    assert pnl.realised_total == 1077.5
    assert (pnl.daily_pnl, pnl.net_liq) == (-350.0, 100_000.0)


# -- v6 serve -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_without_a_server_says_how_to_start_one(tmp_path: Path) -> None:
    done = v6_process("serve", cwd=tmp_path, env=clean_env())
    assert_one_line_error(
        done.returncode,
        done.stderr,
        "no Prefect server configured",
        "prefect server start",
        "export PREFECT_API_URL=http://127.0.0.1:4200/api",
    )


def test_serve_with_an_unreachable_server_says_so(
    capsys: pytest.CaptureFixture[str], workdir: Path
) -> None:
    url = f"http://127.0.0.1:{_free_port()}/api"
    with temporary_settings({PREFECT_API_URL: url}):
        code, _, err = v6(capsys, "serve")
    assert_one_line_error(code, err, f"Prefect server at {url} is unreachable", "ConnectError")


# -- prefect.yaml -------------------------------------------------------------------------------


def test_deploy_config_matches_shipped_prefect_yaml(tmp_path: Path) -> None:
    done = v6_process("deploy-config", cwd=tmp_path, env=clean_env())
    assert done.returncode == 0, done.stderr
    assert done.stdout == (REPO / "prefect.yaml").read_text(), (
        "prefect.yaml is stale: regenerate it with `v6 deploy-config > prefect.yaml`"
    )


def test_prefect_yaml_is_valid_for_prefect_deploy() -> None:
    from prefect.cli.deploy._models import PrefectYamlModel, RawScheduleConfig
    from prefect.flows import load_flow_from_entrypoint

    settings = Settings()
    parsed = yaml.safe_load(render_prefect_yaml(settings))
    assert parsed == prefect_yaml(settings)
    model = PrefectYamlModel.model_validate(parsed)
    assert [d.name for d in model.deployments] == [e.name for e in catalog.CATALOG]
    for raw, dep, item in zip(
        parsed["deployments"], model.deployments, catalog.CATALOG, strict=True
    ):
        assert dep.work_pool is not None and dep.work_pool.name == "v6-process"
        assert dep.entrypoint is not None
        assert load_flow_from_entrypoint(str(REPO / dep.entrypoint)).name == item.name
        schedules = [RawScheduleConfig.model_validate(s) for s in raw["schedules"]]
        assert all(s.timezone == "America/New_York" and s.cron for s in schedules)
        assert (item.cadence is Cadence.AD_HOC) == (not schedules)
        limit = dep.concurrency_limit
        got = (
            limit.model_dump(exclude_none=True)
            if limit is not None and not isinstance(limit, int)
            else limit
        )
        want = {"limit": 1, "collision_strategy": "CANCEL_NEW"} if item.one_at_a_time else None
        assert got == want


# -- v6 gateway-sim -----------------------------------------------------------------------------


def test_gateway_sim_listens_and_refuses_a_busy_port(tmp_path: Path) -> None:
    env = clean_env(PYTHONUNBUFFERED="1", COLUMNS="300")
    proc = subprocess.Popen(
        [sys.executable, "-m", "deployments.cli", "gateway-sim", "--port", "0"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until ready (or EOF if it died)
        assert "gateway simulator listening on 127.0.0.1:" in line, (line, proc.stderr)
        port = int(line.split("127.0.0.1:")[1].split()[0])
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            pass
        busy = v6_process("gateway-sim", "--port", str(port), cwd=tmp_path, env=env)
        assert_one_line_error(busy.returncode, busy.stderr, f"cannot listen on 127.0.0.1:{port}")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
