"""Progress bars on the terminal for simulated runs, fed by core's plain `CycleProgress`.

Core only calls a function after each simulated cycle; drawing it is the CLI's business.
One bar a backtest: cycles done of planned, the market time reached, time left."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from core.domain.timezones import MARKET_TZ
from core.runtime import CycleProgress


def bar_columns() -> tuple[TextColumn | BarColumn | TimeElapsedColumn | TimeRemainingColumn, ...]:
    """Description, bar, `done/total unit`, elapsed, remaining: the units differ per row
    (flow runs, cycles), so each task carries its own `unit` field."""
    return (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} {task.fields[unit]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )


def cycle_bar(progress: Progress, label: str) -> CycleProgress:
    """A `CycleProgress` drawing one row on `progress`, added at the first cycle (when
    the total is known)."""
    row: list[TaskID] = []

    def update(done: int, total: int, at: datetime) -> None:
        if not row:
            row.append(progress.add_task(label, total=total, unit="cycles"))
        when = at.astimezone(MARKET_TZ)
        progress.update(
            row[0], completed=done, total=total, description=f"{label} {when:%Y-%m-%d %H:%M} NY"
        )

    return update


@contextmanager
def backtest_bar(console: Console) -> Iterator[CycleProgress]:
    """One bar for one backtest on `console`; its last state stays on screen (or in the
    captured output) after the run."""
    with Progress(*bar_columns(), console=console) as progress:
        yield cycle_bar(progress, "backtest")
