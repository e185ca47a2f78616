"""The `v6` command as a user meets it: output, exit codes, one-line errors."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest


def v6(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    import os

    full_env = {k: v for k, v in os.environ.items() if not k.startswith("V6_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "deployments.cli", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,  # the demo runs a simulated day through every flow
    )


def test_config_check_prints_effective_config(tmp_path: Path) -> None:
    (tmp_path / "v6.toml").write_text("[breaker]\ncooldown_minutes = 45\n")
    result = v6("config", "check", cwd=tmp_path, env={"V6_BROKER__PORT": "4111", "COLUMNS": "120"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"config file: {(tmp_path / 'v6.toml').resolve()}"
    assert re.search(r"^broker\.port\s+4111\s+V6_BROKER__PORT\s*$", result.stdout, re.M)
    assert re.search(r"^breaker\.cooldown_minutes\s+45\s+file\s*$", result.stdout, re.M)
    assert "other setting(s) at their defaults" in result.stdout
    assert len(lines) < 12  # compact: only what differs from the defaults
    assert "configuration OK" in result.stdout
    everything = v6("config", "check", "--all", cwd=tmp_path, env={"COLUMNS": "120"})
    assert re.search(r"^broker\.host\s+127\.0\.0\.1\s+default\s*$", everything.stdout, re.M)
    as_json = v6("config", "check", "--json", cwd=tmp_path, env={"V6_BROKER__PORT": "4111"})
    assert '"port": 4111' in as_json.stdout


def test_config_check_masks_secrets(tmp_path: Path) -> None:
    (tmp_path / "v6.toml").write_text(
        "[storage]\nstorage_options = {AWS_SECRET_ACCESS_KEY = 's3cr3t'}\n"
    )
    result = v6("config", "check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "s3cr3t" not in result.stdout


def test_config_check_live_banner_first_and_account_masked(tmp_path: Path) -> None:
    live = "[broker]\nkind = 'ib'\nport = 4001\naccount = 'U7654321'\n"
    (tmp_path / "v6.toml").write_text(live)
    refused = v6("config", "check", cwd=tmp_path, env={"V6_BROKER__LIVE_TRADING_ENABLED": "1"})
    assert refused.returncode == 2
    assert "V6_BROKER__LIVE_TRADING_ENABLED" in refused.stderr
    assert "[broker] section of the config file" in refused.stderr
    assert "configuration OK" not in refused.stdout
    (tmp_path / "v6.toml").write_text(live + "live_trading_enabled = true\n")
    result = v6("config", "check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    first = result.stdout.strip().splitlines()[:3]
    assert any("LIVE TRADING" in line and "REAL MONEY" in line for line in first), first
    assert "7654321" not in result.stdout
    assert "U7****21" in result.stdout
    assert "configuration OK (LIVE)" in result.stdout


def test_bad_config_is_one_clear_error_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "v6.toml").write_text("[broker]\nport = 70000\n")
    result = v6("config", "check", cwd=tmp_path)
    assert result.returncode == 2
    assert "broker.port" in result.stderr and "70000" in result.stderr
    assert "Traceback" not in result.stderr


def test_tables_lists_every_table_before_anything_is_written(tmp_path: Path) -> None:
    from core.store import REGISTRY

    result = v6("tables", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for name in REGISTRY:
        assert name in result.stdout
    assert "not created" in result.stdout


@pytest.mark.slow
def test_demo_runs_a_simulated_day_through_the_flows(tmp_path: Path) -> None:
    env = {"PREFECT_HOME": str(tmp_path / "prefect")}
    result = v6("demo", "--days", "1", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "flow runs by final state" in result.stdout
    assert "Failed" not in result.stdout and "Crashed" not in result.stdout
    # the historical side's backtest has its own progress row, run to its end
    assert re.search(r"backtest \d{4}-\d\d-\d\d \d\d:\d\d NY.*\b(\d+)/\1 cycles", result.stdout)
    listing = v6("tables", cwd=tmp_path, env=env)
    assert "not created" not in listing.stdout
    from core.store import DeltaStore

    store = DeltaStore(tmp_path / "data")
    assert store.read("futures_bars").collect().height > 0  # collected through IBBroker
    assert store.read("underlying_bars").collect().height > 0
    # trading cycles traded, and the breaker drill tripped it and a probe closed it again
    assert "CircuitTripped" in result.stdout and "HalfOpenProbe" in result.stdout
    assert "ExitsOnly" in result.stdout  # the cycle inside the cool-down: exits only
    assert store.read("strategies").collect().height > 0
    moves = store.read("risk_state").collect().sort("seq")
    assert [(a, b) for a, b in moves.select("from_state", "to_state").iter_rows()] == [
        ("CLOSED", "OPEN"),
        ("OPEN", "HALF_OPEN"),
        ("HALF_OPEN", "CLOSED"),
    ]
    # the historical side (a backtest of the sessions before) and the nightly report
    assert store.read("backtest_predictions").collect().height > 0
    assert list((tmp_path / "reports").glob("variance-*.html"))
    assert " INFO " not in result.stderr  # Prefect's run logs stay in the UI, not the terminal
    assert "telemetry" not in result.stderr  # the temporary server phones nowhere


def test_config_example_matches_shipped_file(tmp_path: Path) -> None:
    result = v6("config", "example", cwd=tmp_path)
    shipped = (Path(__file__).resolve().parents[1] / "v6.example.toml").read_text()
    assert result.stdout == shipped


@pytest.mark.gateway
def test_chaos_runs_a_seeded_soak_and_prints_its_report(tmp_path: Path) -> None:
    """`v6 chaos` as a user runs it: one session, a fixed seed, the report on stdout, exit 0
    when clean; the kept tables hold the soak's cycles."""
    keep = tmp_path / "soak"
    result = v6(
        "chaos", "--days", "1", "--seed", "4", "--cycle-minutes", "60", "--keep", str(keep),
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "chaos seed=4 days=1" in result.stdout
    assert "result: CLEAN" in result.stdout
    assert "faults (planned/fired/handled):" in result.stdout
    assert "per simulated day" in result.stdout
    from core.store import DeltaStore

    # 09:35..15:35 hourly = 7 cycles; each records its health, except one killed mid-cycle
    # and those that never reached the broker (a corrupt store, another cycle's lease, the
    # gateway down inside the planned outage window)
    unrecorded = sum(
        int(m.group(1))
        for name in ("Killed", "StoreCorrupt", "Skipped", "BrokerUnavailable")
        if (m := re.search(rf"{name}=(\d+)", result.stdout))
    )
    health = DeltaStore(keep).read("cycle_health").collect()
    assert health.height == 7 - unrecorded


def test_chaos_refuses_bad_arguments_in_one_line(tmp_path: Path) -> None:
    result = v6("chaos", "--days", "0", cwd=tmp_path)
    assert result.returncode == 2
    assert "--days" in result.stderr
