"""The temporary Prefect API a command starts lives and dies with that command: a
`kill -9` of `v6 run` leaves no server behind, and a server that never comes up is one
line saying what to do."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deployments.errors import UserError
from deployments.local_api import _free_port, _wait_healthy

BIN = Path(sys.executable).parent


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, cmdline) of the live children of `pid`, from /proc."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append((int(entry.name), cmd))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _until(what: str, check: object, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.2)  # polling other processes' state; nothing here can be awaited


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")
def test_kill_9_of_v6_run_takes_its_temporary_server_with_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("V6_", "PREFECT_"))}
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    run = subprocess.Popen(
        [str(BIN / "v6"), "run", "backtest", "-p", "days=20"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        servers: list[tuple[int, str]] = []

        def server_started() -> bool:
            servers[:] = [c for c in _children(run.pid) if "uvicorn" in c[1]]
            return bool(servers) or run.poll() is not None

        _until("v6 run to start its temporary Prefect API", server_started)
        assert servers, f"v6 run ended ({run.returncode}) before its server was seen"
        server_pid = servers[0][0]
        os.kill(run.pid, signal.SIGKILL)
        run.wait(timeout=10)
        _until("the orphaned server to exit", lambda: not _alive(server_pid), timeout_s=30)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()


def test_a_server_that_never_answers_is_one_line_with_the_fix() -> None:
    silent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with pytest.raises(UserError) as err:
            _wait_healthy(silent, f"http://127.0.0.1:{_free_port()}/api", timeout_s=1.0)
    finally:
        silent.kill()
        silent.wait()
    text = str(err.value)
    assert "\n" not in text
    assert "did not answer within 1 s" in text
    assert "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" in text


def test_a_server_that_dies_at_start_says_how_it_ended() -> None:
    dead = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stderr.write('port in use\\n'); sys.exit(3)"],
        stderr=subprocess.PIPE,
    )
    dead.wait()
    with pytest.raises(UserError, match=r"exited with code 3 \(port in use\)"):
        _wait_healthy(dead, f"http://127.0.0.1:{_free_port()}/api", timeout_s=5.0)
