"""Prefect's API for one command, bound to that command's life.

`v6 run` and `v6 demo` need a Prefect API. Without PREFECT_API_URL, Prefect itself would
start a temporary server in a subprocess and stop it at exit, but a `kill -9` of the
command skips every exit hook and leaves that server running forever. V6 starts the same
server (Prefect's app under uvicorn, UI off, as Prefect does) itself, with the kernel told
to stop it when its parent dies (Linux `PR_SET_PDEATHSIG`), and waits for it as long as
PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS allows (at least 60 s: a loaded machine
needs longer than Prefect's default), failing with one line that says what to do.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from deployments.errors import UserError

MIN_START_TIMEOUT_S = 60.0
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: SIGTERM when the parent dies (Linux)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_timeout_s() -> float:
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

    return max(MIN_START_TIMEOUT_S, float(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()))


def _start(port: int) -> subprocess.Popen[bytes]:
    import prefect

    uvicorn = [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent)]
    app = ["--factory", "prefect.server.api.server:create_app"]
    where = ["--host", "127.0.0.1", "--port", str(port), "--log-level", "error"]
    return subprocess.Popen(
        [*uvicorn, *app, *where, "--lifespan", "on"],
        env={
            **os.environ,
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=_die_with_parent,  # the CLI starts it before any thread of its own
    )


def _wait_healthy(proc: subprocess.Popen[bytes], url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                err = (proc.stderr.read() if proc.stderr else b"").decode(errors="replace")
                last = (err.strip().splitlines() or ["no output"])[-1]
                raise UserError(
                    f"Prefect's temporary API exited with code {proc.returncode} ({last}); "
                    "start `prefect server start` and set PREFECT_API_URL instead"
                )
            try:
                if client.get(f"{url}/health").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)  # polling a server process that is still starting
    raise UserError(
        f"Prefect's temporary API did not answer within {timeout_s:.0f} s (is the machine "
        "busy?); raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, or run "
        "`prefect server start` and set PREFECT_API_URL"
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_temporary_url: str | None = None  # the API `prefect_api` started, while it runs


def temporary_api_url() -> str | None:
    """The URL of the temporary API this command started (None: a configured server, or
    none yet): it dies with the command, so nothing should send a user there later."""
    return _temporary_url


@contextmanager
def prefect_api() -> Iterator[str]:
    """The configured Prefect API, or a temporary one for this command's life."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments.serve import configured_api_url

    configured = configured_api_url()
    if configured is not None:
        yield configured
        return
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    global _temporary_url
    proc = _start(port)
    try:
        _wait_healthy(proc, url, start_timeout_s())
        os.environ["PREFECT_API_URL"] = url  # flow-run subprocesses inherit it
        _temporary_url = url
        try:
            with temporary_settings({PREFECT_API_URL: url}):
                yield url
        finally:
            _drain_prefect_services()
            os.environ.pop("PREFECT_API_URL", None)
            _temporary_url = None
    finally:
        _stop(proc)


def _drain_prefect_services() -> None:
    """Send the run logs and events still queued to the API before it stops."""
    from prefect._internal.concurrency.services import QueueService

    QueueService.drain_all(timeout=10)
