"""`v6 doctor` on half-configured deployments: each problem is one FAIL line naming the fix,
checks that depend on it are skipped, and the command exits 2. The Prefect checks against
a server with authentication are in test_topology.py (they need that server)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from s3_world import S3World, free_port, s3_world_fixture  # noqa: F401  (fixture)

from core.config import Settings
from deployments.doctor import PrefectTarget, clock_check, report, run_checks


def s3_config(path: Path, world: S3World, **override: str) -> Path:
    options = ", ".join(f'{k} = "{v}"' for k, v in world.options(**override).items())
    path.write_text(
        f'[storage]\nroot = "{world.root("doctor")}"\nstorage_options = {{ {options} }}\n'
    )
    return path


def by_name(checks: list) -> dict:
    return {c.name: c for c in checks}


def test_no_api_url_and_wrong_storage_credentials_are_one_line_each(
    tmp_path: Path, s3_world: S3World
) -> None:
    config = s3_config(tmp_path / "v6.toml", s3_world, aws_secret_access_key="not-the-key")
    checks = by_name(run_checks(config, PrefectTarget(None, None)))
    assert checks["config"].ok
    assert (
        not checks["prefect api"].ok and "PREFECT_API_URL is not set" in checks["prefect api"].line
    )
    assert all(checks[n].skipped for n in ("work pool", "workers", "deployments"))
    storage = checks["storage"]
    assert not storage.ok and not storage.skipped
    assert "the storage credentials were refused" in storage.line
    assert "aws_secret_access_key" in storage.line and "not-the-key" not in storage.line
    lines: list[str] = []
    assert report(list(checks.values()), lines.append) == 2
    assert all("\n" not in ln for ln in lines)
    assert [ln.split()[1] for ln in lines if ln.startswith("FAIL")] == ["prefect", "storage"]


def test_right_storage_credentials_pass_the_round_trip(tmp_path: Path, s3_world: S3World) -> None:
    checks = by_name(
        run_checks(s3_config(tmp_path / "v6.toml", s3_world), PrefectTarget(None, None))
    )
    assert checks["storage"].ok, checks["storage"].line
    assert s3_world.secret not in checks["config"].line


def test_unreachable_api_is_one_line_and_exit_2(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/api"
    done = subprocess.run(
        [sys.executable, "-m", "deployments.cli", "doctor"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "PREFECT_API_URL": url, "PREFECT_HOME": str(tmp_path),
             "COLUMNS": "300"},
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    fails = [ln for ln in done.stdout.splitlines() if ln.startswith("FAIL")]
    assert fails == [
        f"FAIL prefect api  Prefect API at {url} is unreachable (ConnectError); start the server "
        "(prefect server start) or fix PREFECT_API_URL"
    ]


def test_a_bad_config_is_reported_and_nothing_else_runs(tmp_path: Path) -> None:
    bad = tmp_path / "v6.toml"
    bad.write_text('[storage]\nroot = "gs://bucket/book"\n')
    checks = run_checks(bad, PrefectTarget("http://127.0.0.1:9/api", None))
    assert [c.name for c in checks] == ["config"]
    assert "scheme gs:// is not supported" in checks[0].line


def test_clock_skew_beyond_five_seconds_fails() -> None:
    now = datetime(2026, 3, 2, 15, tzinfo=UTC)
    assert clock_check(now, now + timedelta(seconds=2)).ok
    skewed = clock_check(now, now + timedelta(seconds=9))
    assert not skewed.ok and "+9.0s off the broker's" in skewed.line and "NTP" in skewed.line


def test_the_simulated_broker_needs_no_account(tmp_path: Path) -> None:
    config = tmp_path / "v6.toml"
    config.write_text(f'[storage]\nroot = "{tmp_path / "data"}"\n')
    checks = by_name(run_checks(config, PrefectTarget(None, None)))
    assert checks["broker"].ok and checks["storage"].ok
    assert Settings().broker.kind.value == "sim"


def test_an_unreachable_gateway_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "v6.toml"
    port = free_port()
    config.write_text(f'[broker]\nkind = "ib"\nport = {port}\n[storage]\nroot = "{tmp_path}"\n')
    checks = by_name(run_checks(config, PrefectTarget(None, None)))
    broker = checks["broker"]
    assert not broker.ok and not broker.skipped and "\n" not in broker.line
    assert f"127.0.0.1:{port}" in broker.line and "gateway" in broker.line
    assert checks["clock"].skipped
