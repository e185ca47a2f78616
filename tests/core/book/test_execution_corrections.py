"""A correction (same execId up to the final period, higher version) replaces the fill it
corrects in the book: never both counted."""

from __future__ import annotations

from dataclasses import replace

import polars as pl
from book_world import World

from core.domain.breaks import BreakKind


def _versioned(world: World) -> None:
    """Give the broker's executions IB-style execIds, version 01."""
    world.broker.executions = [
        replace(e, exec_id=f"0000e0d5.6a6a4ab4.{i:02d}.01")
        for i, e in enumerate(world.broker.executions, start=1)
    ]


def test_a_later_correction_replaces_the_booked_fill(world: World) -> None:
    sid, _, _ = world.condor(record=False, quantity=2)
    _versioned(world)
    world.book.record_fills(world.broker.executions)
    first = world.broker.executions[0]
    fixed = replace(first, exec_id=first.exec_id[:-2] + "02", quantity=1, price=first.price + 0.01)
    world.broker.executions[0] = fixed  # the broker's positions follow the correction
    world.book.record_fills([first, fixed])  # both versions reported again
    leg = world.book.leg_positions().filter(pl.col("con_id") == first.contract.con_id)
    assert leg.get_column("quantity").item() == fixed.signed_quantity
    result = world.reconcile()
    assert world.book_equals_broker() and world.exec_ids_unique()
    assert result.unresolved_breaks == 0
    assert world.book.fills(sid).filter(pl.col("exec_id") == fixed.exec_id).height == 1


def test_an_older_version_after_the_correction_changes_nothing(world: World) -> None:
    world.condor(record=False)
    _versioned(world)
    first = world.broker.executions[0]
    fixed = replace(first, exec_id=first.exec_id[:-2] + "02", price=first.price + 0.01)
    world.broker.executions[0] = fixed
    world.book.record_fills(world.broker.executions)
    assert world.book.record_fills([first]).height == 0  # the stale version: not booked
    result = world.reconcile()
    assert world.book_equals_broker()
    kinds = set(result.breaks.get_column("kind"))
    assert BreakKind.EXECUTION_CORRECTION.value not in kinds


def test_reconciliation_records_the_correction(world: World) -> None:
    world.condor(record=False)
    _versioned(world)
    world.reconcile()
    first = world.broker.executions[0]
    fixed = replace(first, exec_id=first.exec_id[:-2] + "02", price=first.price + 0.02)
    world.broker.executions[0] = fixed
    result = world.reconcile()
    corr = result.breaks.filter(pl.col("kind") == BreakKind.EXECUTION_CORRECTION.value)
    assert corr.height == 1 and corr.get_column("exec_id").item() == first.exec_id
    assert world.book_equals_broker() and result.unresolved_breaks == 0
