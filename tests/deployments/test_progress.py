"""Backtest progress on the terminal: core's plain callback drives a rich bar."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

from rich.console import Console
from rich.progress import Progress

from deployments.progress import backtest_bar, bar_columns, cycle_bar

START = datetime(2026, 3, 3, 14, 35, tzinfo=UTC)  # 09:35 New York


def test_cycle_bar_adds_its_row_at_the_first_cycle_and_follows_market_time() -> None:
    console = Console(file=io.StringIO(), width=120, force_terminal=False)
    with Progress(*bar_columns(), console=console) as progress:
        update = cycle_bar(progress, "backtest")
        assert progress.tasks == []  # the total is not known before the first cycle
        for done in range(1, 7):
            update(done, 6, START + timedelta(hours=done))
        (row,) = progress.tasks
        assert (row.completed, row.total, row.fields["unit"]) == (6, 6, "cycles")
        assert row.description == "backtest 2026-03-03 15:35 NY"  # 20:35Z in New York


def test_backtest_bar_leaves_the_final_line_in_the_output() -> None:
    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=False)
    with backtest_bar(console) as update:
        for done in range(1, 4):
            update(done, 3, START + timedelta(days=done))
    text = out.getvalue()
    assert "backtest 2026-03-06 09:35 NY" in text and "3/3 cycles" in text
