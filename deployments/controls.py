"""`v6 halt`, `v6 cancel-all`, `v6 flatten`: a person's emergency controls from a shell.

They call `core` directly, with no Prefect server in the way (an emergency must not wait
for one); the same controls are ad hoc deployments (`halt`, `cancel_all`, `flatten`) for
the Prefect UI. Cancel-all and flatten reach the broker the trading cycles use, so they
need `broker.kind = "ib"` (IB's gateway, or `v6 gateway-sim`): the in-process simulator's
world lives inside one process and a new process would see an empty one.
"""

from __future__ import annotations

import asyncio

from rich.console import Console
from rich.markup import escape

from core.config import BrokerKind, Settings
from core.controls import CancelAllReport, FlattenReport, cancel_all, flatten_all
from core.identity import os_identity
from core.risk.breaker import Breaker, BreakerUnavailable, IllegalTransition, Transition
from core.runtime import Runtime
from core.store import DeltaStore
from deployments.errors import UserError
from deployments.status import default_actor
from tasks.controls import control_wait


def _reason(command: str, reason: str | None) -> str:
    if reason is None or not reason.strip():
        raise UserError(
            f'{command}: --reason is required (it is audited); e.g. {command} --reason "news"'
        )
    return reason.strip()


def _runtime(settings: Settings, command: str) -> Runtime:
    if settings.broker.kind is not BrokerKind.IB:
        raise UserError(
            f'{command} needs broker.kind = "ib" (IB gateway or `v6 gateway-sim`), got '
            f'"{settings.broker.kind.value}": the in-process simulator holds no orders between '
            "processes; set broker.kind in v6.toml or V6_BROKER__KIND"
        )
    return Runtime(settings, DeltaStore.from_settings(settings))


def halt(
    settings: Settings, console: Console, reason: str | None, actor: str | None, exits: bool
) -> Transition:
    why = _reason("v6 halt", reason)
    breaker = Breaker(DeltaStore.from_settings(settings), settings.breaker)
    try:
        t = breaker.halt(why, actor or default_actor(), exits=exits, run_by=f"cli {os_identity()}")
    except BreakerUnavailable as exc:
        raise UserError(f"halt not recorded: {exc}") from None
    except ValueError as exc:
        raise UserError(str(exc)) from None
    what = "exits still run" if exits else "nothing trades, exits included"
    console.print(
        f"breaker {t.from_state.value} -> [bold white on red]{t.to_state.value}[/] by "
        f"{escape(t.actor)}: {escape(t.reason)}; no entries, {what}, until a person runs "
        "`v6 breaker reset`",
        soft_wrap=True,
    )
    _announce(settings, console, f"V6 HALTED by {t.actor}", f"{t.reason}; {what}")
    return t


def _announce(settings: Settings, console: Console, subject: str, body: str) -> None:
    """Send the alert when blocks and a Prefect server are configured; say what happened."""
    if not settings.alerts.blocks:
        return
    from deployments.serve import configured_api_url, server_problem
    from tasks.alerts import send_alert

    url = configured_api_url()
    problem = "PREFECT_API_URL is unset" if url is None else server_problem(url)
    if problem is not None:
        console.print(
            f"[yellow]alert not sent[/yellow]: the blocks live on the Prefect server ({problem})"
        )
        return
    sent = asyncio.run(send_alert(subject, body, settings))
    console.print(f"alert sent to {sent} of {len(settings.alerts.blocks)} notification block(s)")


def run_cancel_all(settings: Settings, console: Console) -> CancelAllReport:
    rt = _runtime(settings, "v6 cancel-all")

    async def go() -> CancelAllReport:
        broker = rt.new_broker()
        await broker.connect()
        try:
            return await cancel_all(broker, wait=control_wait(rt))
        finally:
            await broker.disconnect()

    report = asyncio.run(go())
    for line in report.lines():
        console.print(escape(line), soft_wrap=True)
    return report


def run_flatten(
    settings: Settings, console: Console, reason: str | None, actor: str | None, confirm: bool
) -> FlattenReport:
    if not confirm:
        raise UserError(
            "v6 flatten closes every open strategy at up to the natural price and halts "
            "trading; run it again with --confirm to go ahead"
        )
    why = _reason("v6 flatten", reason)
    rt = _runtime(settings, "v6 flatten")
    who, run_by = actor or default_actor(), f"cli {os_identity()}"
    try:
        report = asyncio.run(
            flatten_all(rt, reason=why, actor=who, run_by=run_by, wait=control_wait(rt))
        )
    except (BreakerUnavailable, IllegalTransition) as exc:
        raise UserError(f"flatten not started: {exc}") from None
    for line in report.lines():
        console.print(escape(line), soft_wrap=True)
    return report
