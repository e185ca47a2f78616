"""`v6 halt`, `v6 cancel-all`, `v6 flatten` from a shell: output, exit codes, bad arguments,
and the halt staying on across cool-downs and a new process; cancel-all and flatten reach
a gateway simulator (`v6 gateway-sim`, its own process) over TCP."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cli_harness import one_line_error, v6

from core.config import load_settings
from core.risk.breaker import Breaker, BreakerState, GateMode
from core.store import DeltaStore
from deployments import cli


@pytest.fixture
def home(no_config: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("V6_STORAGE__ROOT", str(no_config / "data"))
    monkeypatch.setenv("V6_STORAGE__REPORTS_DIR", str(no_config / "reports"))
    monkeypatch.setenv("USER", "carol")
    monkeypatch.setattr(cli.console, "width", 200)
    return no_config


def breaker() -> Breaker:
    settings = load_settings()
    return Breaker(DeltaStore.from_settings(settings), settings.breaker)


def test_halt_is_sticky_until_a_person_resets(
    capsys: pytest.CaptureFixture[str], home: Path
) -> None:
    code, _, err = v6(capsys, "halt")
    one_line_error(code, err, "v6 halt: --reason is required")
    code, out, _ = v6(capsys, "halt", "--reason", "fed surprise")
    assert code == 0, out
    assert "CLOSED -> HALTED by carol: fed surprise" in out and "exits still run" in out
    code, out, _ = v6(capsys, "breaker", "status")
    assert code == 0 and "HALTED since" in out and "only `v6 breaker reset`" in out
    code, _, err = v6(capsys, "breaker", "trip", "--reason", "again")
    one_line_error(code, err, "breaker trip not recorded", "HALTED")
    # a week later (every cool-down long past), read by a fresh process: still halted
    later = datetime.now(UTC) + timedelta(days=7)
    gate = breaker().gate(later, run_id="cycle-later")
    assert gate.state is BreakerState.HALTED and gate.mode is GateMode.EXITS_ONLY
    code, out, _ = v6(capsys, "halt", "--reason", "exits too", "--no-exits")
    assert code == 0 and "HALTED -> HALTED" in out and "nothing trades, exits included" in out
    assert breaker().gate(later).mode is GateMode.OPEN_BLOCKED
    code, out, _ = v6(capsys, "breaker", "reset", "--reason", "all clear")
    assert code == 0 and "HALTED -> CLOSED by carol: all clear" in out
    assert breaker().gate(later).mode is GateMode.NORMAL


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["cancel-all"], ['needs broker.kind = "ib"', "V6_BROKER__KIND"]),
        (["flatten", "--reason", "x"], ["run it again with --confirm"]),
        (["flatten", "--confirm"], ["v6 flatten: --reason is required"]),
        (["flatten", "--confirm", "-r", "x"], ['needs broker.kind = "ib"']),
    ],
)
def test_bad_arguments_are_one_line_errors(
    capsys: pytest.CaptureFixture[str], home: Path, args: list[str], needles: list[str]
) -> None:
    code, _, err = v6(capsys, *args)
    one_line_error(code, err, *needles)
    assert breaker().state() is BreakerState.CLOSED  # nothing recorded on a refused command


@pytest.fixture
def gateway_port(tmp_path: Path) -> Iterator[int]:
    """`v6 gateway-sim` in its own process (the CLI runs its own event loop)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("V6_")}
    env.update(PYTHONUNBUFFERED="1", COLUMNS="300")
    proc = subprocess.Popen(
        [sys.executable, "-m", "deployments.cli", "gateway-sim", "--port", "0", "--speed", "60"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "gateway simulator listening on 127.0.0.1:" in line, line
        yield int(line.split("127.0.0.1:")[1].split()[0])
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_cancel_all_and_flatten_reach_the_gateway(
    capsys: pytest.CaptureFixture[str],
    home: Path,
    gateway_port: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("V6_BROKER__KIND", "ib")
    monkeypatch.setenv("V6_BROKER__PORT", str(gateway_port))
    code, out, err = v6(capsys, "cancel-all")
    assert code == 0 and "no open V6 orders at the broker" in out, (out, err)
    code, out, err = v6(capsys, "flatten", "--confirm", "--reason", "drill")
    assert code == 0, (out, err)
    assert "halted (exits allowed) by carol: flatten: drill" in out
    assert "no open strategies in the book" in out
    assert breaker().state() is BreakerState.HALTED


def test_halt_says_when_its_alert_cannot_be_sent(
    capsys: pytest.CaptureFixture[str], home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.setenv("V6_ALERTS__BLOCKS", '["custom-webhook/desk"]')
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        code, out, _ = v6(capsys, "halt", "--reason", "drill")
    assert code == 0 and "CLOSED -> HALTED" in out
    assert "alert not sent" in out and "PREFECT_API_URL is unset" in out
    assert breaker().state() is BreakerState.HALTED  # the halt never waits on an alert
