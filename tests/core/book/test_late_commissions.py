"""A commission report that comes after its execution fills in the booked fill's cost."""

from __future__ import annotations

import math
from dataclasses import replace

from book_world import World


def test_a_late_commission_updates_the_fill(world: World) -> None:
    sid, _, _ = world.condor(record=False)
    first = world.broker.executions[0]
    early = [replace(e, commission=math.nan) for e in world.broker.executions]
    world.book.record_fills(early)
    assert world.book.fills(sid).get_column("commission").null_count() == 4
    world.broker.executions[0] = replace(first, commission=1.3)
    assert world.book.record_fills([world.broker.executions[0]]).height == 0
    fills = world.book.fills(sid)
    assert fills.height == 4  # an update, not a second fill
    row = fills.filter(fills["exec_id"] == first.exec_id)
    assert row.get_column("commission").item() == 1.3


def test_the_broker_s_later_commissions_fill_in_the_book(world: World) -> None:
    sid, _, _ = world.condor(record=False)
    world.book.record_fills([replace(e, commission=math.nan) for e in world.broker.executions])
    world.broker.executions = [replace(e, commission=0.65) for e in world.broker.executions]
    world.reconcile()  # books nothing new: the fills are known
    assert world.book.fill_in_commissions(world.broker.frames().executions) == 4
    assert world.book.fill_in_commissions(world.broker.frames().executions) == 0
    assert world.book.fills(sid).get_column("commission").to_list() == [0.65] * 4
    assert world.exec_ids_unique() and world.book_equals_broker()
