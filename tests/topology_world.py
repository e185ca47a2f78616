"""The production topology on one machine, for tests: a real PostgreSQL (Debian's
`postgresql` package) in a temp dir on a loopback port, a Prefect server on it with basic
auth, and process workers. Every piece is a separate process, as in production.

PostgreSQL refuses to run as root, so when the tests run as root (CI) its files belong to
the `postgres` system user that Debian's package creates and it runs as that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest
from processes import stop, wait_healthy
from s3_world import free_port

BIN = Path(sys.executable).parent
START_S = 120.0
PG_MIN_MAJOR = 14
AUTH = "v6-admin:topology-test-secret"


def postgres_bindir() -> Path | None:
    """The newest installed PostgreSQL >= 14 (Debian layout), or None."""
    root = Path("/usr/lib/postgresql")
    majors = sorted(
        (int(p.name) for p in root.glob("*") if p.name.isdigit() and (p / "bin/initdb").exists()),
        reverse=True,
    ) if root.exists() else []  # fmt: skip
    return root / str(majors[0]) / "bin" if majors and majors[0] >= PG_MIN_MAJOR else None


@dataclass(frozen=True)
class Postgres:
    port: int
    user: str
    password: str
    database: str

    @property
    def prefect_url(self) -> str:
        return (
            f"postgresql+asyncpg://{self.user}:{self.password}@127.0.0.1:{self.port}/"
            f"{self.database}"
        )


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="module", name="postgres")
def postgres_fixture() -> Iterator[Postgres]:
    bindir = postgres_bindir()
    if bindir is None:
        msg = f"PostgreSQL >= {PG_MIN_MAJOR} is not installed (apt-get install -y postgresql)"
        if os.environ.get("CI"):
            pytest.fail(msg + "; .ci/run installs it")
        pytest.skip(msg)
    base = Path(tempfile.mkdtemp(prefix="v6-pg-"))
    if os.geteuid() == 0:
        pg = pwd.getpwnam("postgres")
        os.chown(base, pg.pw_uid, pg.pw_gid)
    data, sock = base / "data", base
    port = free_port()
    run = _run_quiet
    run(_as_postgres([str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
                      "--auth=trust", "--encoding=UTF8", "--no-sync"]))  # fmt: skip
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {sock} -c fsync=off"
    run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "pg.log"),
                      "-o", opts, "-w", "-t", "60", "start"]))  # fmt: skip
    db = Postgres(port, "prefect", "prefect-db-secret", "prefect")
    psql = [str(bindir / "psql"), "-h", str(sock), "-p", str(port), "-U", "postgres", "-q",
            "-v", "ON_ERROR_STOP=1"]  # fmt: skip
    try:
        run(_as_postgres([*psql, "-c", f"CREATE ROLE {db.user} LOGIN PASSWORD '{db.password}'"]))
        run(_as_postgres([*psql, "-c", f"CREATE DATABASE {db.database} OWNER {db.user}"]))
        run(_as_postgres([*psql, "-d", db.database, "-c", "CREATE EXTENSION pg_trgm"]))
        yield db
    finally:
        subprocess.run(
            _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True, timeout=60,
        )  # fmt: skip
        shutil.rmtree(base, ignore_errors=True)


def _run_quiet(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(cmd[:6])} failed ({done.returncode}): {done.stderr[-2000:]}")


@dataclass
class PrefectServer:
    url: str
    env: dict[str, str]  # what a client without credentials has
    home: Path
    log: Path

    def client_env(self, auth: str | None = AUTH) -> dict[str, str]:
        env = {**self.env, "PREFECT_API_URL": self.url}
        if auth is not None:
            env["PREFECT_API_AUTH_STRING"] = auth
        return env


def clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "V6_", "AWS_"))}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW="ignore",
        PYTHONUNBUFFERED="1",
    )
    return env


def start(cmd: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    out: IO[bytes] = log.open("ab")
    try:
        return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    finally:
        out.close()


@pytest.fixture(scope="module", name="prefect_on_postgres")
def prefect_on_postgres_fixture(
    postgres: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrefectServer]:
    """`prefect server start` on PostgreSQL with basic auth, bound to loopback."""
    home = tmp_path_factory.mktemp("prefect-pg-home")
    port = free_port()
    env = clean_env(home)
    server_env = {
        **env,
        "PREFECT_API_DATABASE_CONNECTION_URL": postgres.prefect_url,
        "PREFECT_SERVER_API_AUTH_STRING": AUTH,
    }
    log = home / "server.log"
    cmd = [str(BIN / "prefect"), "server", "start", "--no-ui", "--no-scheduler",
           "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    proc = start(cmd, server_env, log, home)
    url = f"http://127.0.0.1:{port}/api"
    try:
        wait_healthy(proc, url, log, START_S)
        yield PrefectServer(url, env, home, log)
    finally:
        stop(proc)
