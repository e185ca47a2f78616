"""Alerts to the owner through Prefect notification blocks (`[alerts] blocks`).

Sent from the runs themselves, so they need nothing but the blocks: a halt (the `halt`
and `flatten` flows, `v6 halt` when a Prefect server is configured), and every V6 flow
run that ends Failed or Crashed, which covers a breaker trip (`CircuitTripped`), a run
that failed, and a reconciliation left with unresolved breaks. The maintenance flow
sends the daily summary after the close.

An alert that cannot be sent is a warning in the run's log (and the next one is tried):
a broken webhook must never change what a run did or how it ended.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any
from zoneinfo import ZoneInfo

from prefect.blocks.abstract import NotificationBlock
from prefect.blocks.core import Block

from core.config import Settings
from core.risk.breaker import Breaker
from core.runtime import Runtime, current_runtime
from core.views import open_strategies
from core.views.equity import equity_by_date

log = logging.getLogger(f"v6.{__name__}")


async def send_alert(subject: str, body: str, settings: Settings | None = None) -> int:
    """Send to every configured block; returns how many accepted it."""
    names = (settings or current_runtime().settings).alerts.blocks
    sent = 0
    for name in names:
        try:
            block = await Block.aload(name)
            if not isinstance(block, NotificationBlock):
                raise TypeError(f"{name} is a {type(block).__name__}, not a notification block")
            anotify = getattr(block, "anotify", None)
            result = anotify(body, subject) if anotify else block.notify(body, subject)
            if inspect.isawaitable(result):
                await result
            sent += 1
        except Exception as exc:
            log.warning("alert %r not sent to %s: %s: %s", subject, name, type(exc).__name__, exc)
    return sent


async def alert_on_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """Flow hook (`on_failure`, `on_crashed`): say which V6 run ended how, and why."""
    try:
        settings = current_runtime().settings
    except Exception as exc:  # no settings, no blocks to send to: the run log says why
        log.warning("failure alert not sent: settings unavailable: %s", exc)
        return
    subject = f"V6 {flow.name}: {state.name}"
    body = (
        f"flow run '{flow_run.name}' ({flow_run.id}) of {flow.name} ended {state.type.value} "
        f"{state.name}: {state.message or 'no message'}\nhome: {current_runtime().store.root}"
    )
    await send_alert(subject, body, settings)


def daily_summary(rt: Runtime) -> tuple[str, str]:
    """(subject, body) of the after-the-close summary: breaker, open book, the day's P&L."""
    tz = ZoneInfo(rt.settings.schedules.timezone)
    state = Breaker(rt.store, rt.settings.breaker, rt.clock).status()
    book = open_strategies(rt.store)
    equity = equity_by_date(rt.store, tz)
    day = rt.clock.now().astimezone(tz).date()
    lines = [f"breaker: {state.state.value} ({state.reason})"]
    unrealised = book.get_column("unrealised_usd").sum() if book.height else 0.0
    lines.append(f"open strategies: {book.height}, unrealised {unrealised:+,.2f} USD (last cycle)")
    if equity.height:
        last = equity.row(equity.height - 1, named=True)
        pnl = "-" if last["day_pnl"] is None else f"{last['day_pnl']:+,.2f}"
        lines.append(
            f"{last['date']}: net liquidation {last['net_liq']:,.2f} USD, day P&L {pnl} USD"
        )
    lines.append(f"home: {rt.store.root}")
    return f"V6 daily summary {day}", "\n".join(lines)
