"""`v6 doctor`: is this deployment ready to trade? One check per moving part, in the order
they depend on each other: the config, the Prefect API (reachable, accepting our
credentials), the work pool, its workers and V6's deployments, the Delta store (a write
and read-back), the broker (reachable, paper or live as configured) and the clock against
the broker's.

Each check is one line: what was found, or what is wrong and the fix. A check whose
prerequisite failed is skipped (it could only repeat the same failure). Nothing here
prints a secret: the API is named by URL, the account masked, credentials never.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from core.config import BrokerKind, ConfigError, Settings, load_settings
from core.domain.accounts import mask_account
from core.store.location import round_trip, storage_error
from deployments.deploy_config import WORK_POOL

# The trading flows must be deployed for the topology to trade; the rest are nightly/ad hoc.
REQUIRED_DEPLOYMENTS = ("trading_cycle", "position_reconciliation", "maintenance")
# Beyond this the host clock disagrees with IB's enough to misjudge sessions and stale runs.
MAX_CLOCK_SKEW_S = 5.0
HTTP_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    line: str  # what was found, or what is wrong and how to fix it
    skipped: bool = False


@dataclass(frozen=True)
class PrefectTarget:
    """Where the Prefect API is and the credentials a client sends (from Prefect's settings:
    PREFECT_API_URL / PREFECT_API_AUTH_STRING, environment or profile)."""

    url: str | None
    auth_string: str | None

    @classmethod
    def from_prefect_settings(cls) -> PrefectTarget:
        from prefect.settings import get_current_settings

        api = get_current_settings().api
        auth = api.auth_string.get_secret_value() if api.auth_string is not None else None
        return cls(api.url, auth or None)

    def headers(self) -> dict[str, str]:
        if not self.auth_string:
            return {}
        token = base64.b64encode(self.auth_string.encode()).decode()
        return {"Authorization": f"Basic {token}"}


def run_checks(config: Path | None, target: PrefectTarget, *, pool: str = WORK_POOL) -> list[Check]:
    """Every check, in dependency order."""
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        first = exc.problems[0] if exc.problems else str(exc)
        return [Check("config", False, f"{exc.source}: {first}; fix it (see v6.example.toml)")]
    checks = [Check("config", True, _config_line(settings))]
    checks += _prefect_checks(target, pool)
    checks.append(_storage_check(settings))
    checks += asyncio.run(_broker_checks(settings))
    return checks


def _config_line(settings: Settings) -> str:
    mode = "LIVE" if settings.broker.is_live else "paper/simulated"
    return f"valid ({mode}; broker {settings.broker.kind.value}, storage {settings.storage.root})"


def _prefect_checks(target: PrefectTarget, pool: str) -> list[Check]:
    names = ("prefect api", "work pool", "workers", "deployments")
    if not target.url:
        return [
            Check("prefect api", False, "PREFECT_API_URL is not set; set it to the server's API, "
                  "e.g. export PREFECT_API_URL=http://127.0.0.1:4200/api"),
            *_skipped(names[1:], "no Prefect API"),
        ]  # fmt: skip
    url = target.url.rstrip("/")
    with httpx.Client(base_url=url, headers=target.headers(), timeout=HTTP_TIMEOUT_S) as http:
        try:
            http.get("/health").raise_for_status()
        except httpx.HTTPError as exc:
            return [
                Check("prefect api", False, f"Prefect API at {url} is unreachable "
                      f"({type(exc).__name__}); start the server (prefect server start) or "
                      "fix PREFECT_API_URL"),
                *_skipped(names[1:], "Prefect API unreachable"),
            ]  # fmt: skip
        got = http.get(f"/work_pools/{pool}")
        if got.status_code == 401:
            return [
                Check("prefect api", False, refused_line(url, target)),
                *_skipped(names[1:], "not authenticated"),
            ]
        auth = "authenticated" if target.auth_string else "no authentication (server has none)"
        checks = [Check("prefect api", True, f"{url} reachable, {auth}")]
        if got.status_code == 404:
            return [
                *checks,
                Check("work pool", False, f"work pool '{pool}' does not exist at {url}; create "
                      f"it: prefect work-pool create {pool} --type process"),
                *_skipped(names[2:], "no work pool"),
            ]  # fmt: skip
        if not got.is_success:
            return [
                *checks,
                Check("work pool", False, f"Prefect API at {url} answered HTTP {got.status_code} "
                      f"for work pool '{pool}'; see the server's log"),
                *_skipped(names[2:], "work pool unreadable"),
            ]  # fmt: skip
        checks.append(Check("work pool", True, f"'{pool}' ({got.json().get('type')})"))
        checks.append(_workers_check(http, pool))
        checks.append(_deployments_check(http, pool, url))
    return checks


def refused_line(url: str, target: PrefectTarget) -> str:
    """The one line for a 401 from the API at `url`."""
    why = (
        "refused PREFECT_API_AUTH_STRING"
        if target.auth_string
        else "requires credentials and PREFECT_API_AUTH_STRING is not set"
    )
    return (
        f"Prefect API at {url} {why}; set PREFECT_API_AUTH_STRING to the server's "
        "PREFECT_SERVER_API_AUTH_STRING (user:password)"
    )


def auth_problem(url: str, target: PrefectTarget) -> str | None:
    """`refused_line` when the (healthy) API at `url` refuses this client's credentials.

    The health check is open to probes, so only an authenticated call can tell."""
    got = httpx.post(
        f"{url.rstrip('/')}/flows/filter",
        json={"limit": 1},
        headers=target.headers(),
        timeout=HTTP_TIMEOUT_S,
    )
    return refused_line(url.rstrip("/"), target) if got.status_code == 401 else None


def _workers_check(http: httpx.Client, pool: str) -> Check:
    workers = http.post(f"/work_pools/{pool}/workers/filter", json={}).json()
    online = sorted(w["name"] for w in workers if w.get("status") == "ONLINE")
    if not online:
        return Check("workers", False, f"no worker is polling '{pool}'; start one on each worker "
                     f"machine: prefect worker start --pool {pool}")  # fmt: skip
    return Check("workers", True, f"{len(online)} online: {', '.join(online)}")


def _deployments_check(http: httpx.Client, pool: str, url: str) -> Check:
    missing, elsewhere = [], []
    for name in REQUIRED_DEPLOYMENTS:
        got = http.get(f"/deployments/name/{name}/{name}")
        if got.status_code == 404:
            missing.append(name)
        elif got.json().get("work_pool_name") != pool:
            elsewhere.append(name)
    if missing:
        return Check("deployments", False, f"{', '.join(missing)} not deployed at {url}; from "
                     "the checkout: V6_HOME=$PWD prefect deploy --all")  # fmt: skip
    if elsewhere:
        return Check("deployments", False, f"{', '.join(elsewhere)} not on pool '{pool}' (served "
                     "by `v6 serve`?); deploy them: V6_HOME=$PWD prefect deploy --all")  # fmt: skip
    return Check("deployments", True, f"{', '.join(REQUIRED_DEPLOYMENTS)} on '{pool}'")


def _storage_check(settings: Settings) -> Check:
    root = settings.storage.root
    try:
        round_trip(root, settings.storage.plain_storage_options())
    except Exception as exc:  # every storage failure becomes the one line below
        return Check("storage", False, storage_error(root, exc))
    return Check("storage", True, f"{root} writable (wrote and read back a probe)")


async def _broker_checks(settings: Settings) -> list[Check]:
    b = settings.broker
    if b.kind is BrokerKind.SIM:
        return [
            Check("broker", True, "simulated in process (broker.kind = sim): no account"),
            Check("clock", True, "simulated broker: nothing to compare"),
        ]
    from core.broker.base import BrokerError
    from core.broker.ib import IBBroker

    broker = IBBroker(b)
    try:
        await asyncio.wait_for(broker.connect(), b.connect_timeout_s + 5)
    except BrokerError as exc:  # its message names the address and the fix
        return [Check("broker", False, _first_line(exc)), *_skipped(("clock",), "no broker")]
    except (OSError, TimeoutError) as exc:
        return [
            Check("broker", False, f"IB at {b.host}:{b.port}: {_first_line(exc)}; start IB "
                  "Gateway/TWS with the API enabled, or fix broker.host / broker.port"),
            *_skipped(("clock",), "no broker"),
        ]  # fmt: skip
    try:
        account = broker.account or ""
        kind = "paper" if account.startswith("D") else "LIVE"
        line = f"IB at {b.host}:{b.port}, clientId {broker.client_id}, {kind} account "
        broker_now = await broker.current_time()
    finally:
        await broker.disconnect()
    checks = [Check("broker", True, line + mask_account(account))]
    checks.append(clock_check(broker_now, datetime.now(UTC)))
    return checks


def clock_check(broker_now: datetime, host_now: datetime) -> Check:
    skew = (host_now - broker_now).total_seconds()
    if abs(skew) > MAX_CLOCK_SKEW_S:
        return Check("clock", False, f"host clock is {skew:+.1f}s off the broker's (more than "
                     f"{MAX_CLOCK_SKEW_S:g}s); sync it with NTP (e.g. chrony)")  # fmt: skip
    return Check("clock", True, f"{skew:+.1f}s vs the broker")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _skipped(names: tuple[str, ...], why: str) -> list[Check]:
    return [Check(n, False, f"not checked: {why}", skipped=True) for n in names]


def report(checks: list[Check], echo: Callable[[str], None]) -> int:
    """Print one line per check; the exit code: 0 all good, 2 something to fix."""
    for c in checks:
        mark = "ok  " if c.ok else ("skip" if c.skipped else "FAIL")
        echo(f"{mark} {c.name:<12} {c.line}")
    failed = [c for c in checks if not c.ok and not c.skipped]
    if failed:
        echo(f"{len(failed)} problem(s): fix the FAIL lines above, then run v6 doctor again")
        return 2
    echo("deployment ready")
    return 0
