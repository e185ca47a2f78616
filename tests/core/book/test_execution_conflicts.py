"""An execId the book already has, reported with other content, is a break, not a repeat."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import polars as pl
from book_world import World

from core.domain.breaks import BreakKind, Severity
from core.reconcile import BrokerFrames, reconcile


def test_a_reused_exec_id_with_other_content_is_an_urgent_break(world: World) -> None:
    world.condor()
    first = world.broker.executions[0]
    # a restarted simulator numbers a new fill like the old one: same execId, later time
    world.broker.executions[0] = replace(first, time=first.time + timedelta(days=1), quantity=2)
    result = world.reconcile()
    conflicts = result.breaks.filter(pl.col("kind") == BreakKind.EXECUTION_CONFLICT.value)
    assert conflicts.height == 1
    row = conflicts.row(0, named=True)
    assert row["exec_id"] == first.exec_id and not row["resolved"]
    assert row["severity"] == Severity.URGENT.value
    assert result.unresolved_breaks >= 1


def test_a_plain_repeat_is_no_conflict(world: World) -> None:
    world.condor()
    result = world.reconcile()
    assert result.breaks.filter(pl.col("kind") == BreakKind.EXECUTION_CONFLICT.value).height == 0


def test_an_execution_naming_no_contract_is_an_urgent_break_with_its_fields(
    world: World,
) -> None:
    world.condor()
    odd = replace(world.broker.executions[0], exec_id="zz.01", order_ref="nobody")
    odd = replace(odd, contract=replace(odd.contract, con_id=0))
    frames = world.broker.frames()
    extra = BrokerFrames.from_domain([], [odd], []).executions
    result = reconcile(
        world.book.frames(),
        BrokerFrames(frames.positions, pl.concat([frames.executions, extra]), frames.open_orders),
        as_of=world.clock.now() + timedelta(minutes=1),
        run_id="odd",
        account=odd.account,
    )
    (row,) = result.breaks.filter(pl.col("kind") == BreakKind.UNKNOWN_CONTRACT.value).to_dicts()
    assert row["exec_id"] == "zz.01" and not row["resolved"]
    assert row["severity"] == Severity.URGENT.value
    assert "order_ref=nobody" in row["detail"] and "con_id=0" in row["detail"]
    assert result.fills.filter(pl.col("exec_id") == "zz.01").height == 0
