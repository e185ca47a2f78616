"""`v6 chaos`: the chaos soak with a progress bar and the report on the terminal."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from core.chaos.soak import ChaosReport, run_chaos
from core.config import Settings
from core.domain.timezones import MARKET_TZ


def run_chaos_cli(
    settings: Settings,
    console: Console,
    *,
    days: int,
    seed: int,
    cycle_minutes: int,
    rate: float,
    keep: Path | None,
) -> ChaosReport:
    """Soak, showing progress; returns the report (the caller decides the exit code)."""
    # Faults make ib_async and the cycle log errors by design; the report says what mattered.
    for name in ("ib_async", "v6"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} cycles"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        bar = progress.add_task(f"chaos seed {seed}", total=None)

        def step(done: int, total: int, at: datetime, label: str) -> None:
            progress.update(
                bar,
                total=total,
                completed=done,
                description=f"seed {seed} {at.astimezone(MARKET_TZ):%a %m-%d %H:%M} {label}"[:70],
            )

        report = asyncio.run(
            run_chaos(
                settings,
                days=days,
                seed=seed,
                cycle_minutes=cycle_minutes,
                rate=rate,
                root=keep,
                progress=step,
            )
        )
    for line in report.lines():
        console.print(line, markup=False, highlight=False)
    return report
