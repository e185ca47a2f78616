"""Random fault sequences against the simulated exchange; after one reconciliation the book
equals the broker and every exec_id is booked exactly once."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reconcile_world import SimWorld, make_exchange

from core.domain import Contract
from core.reconcile import ReportBounds


def fresh_world() -> SimWorld:
    """A new exchange and an empty book per example (about half a second)."""
    return SimWorld(make_exchange())


qty = st.integers(min_value=-3, max_value=3).filter(lambda q: q != 0)
leg = st.integers(min_value=0, max_value=11)
step = st.one_of(
    st.tuples(st.just("v6"), leg, qty, st.booleans()),  # booleans: recorded or crashed before
    st.tuples(st.just("vertical"), leg, st.integers(1, 2), st.booleans()),
    st.tuples(st.just("duplicate")),
    st.tuples(st.just("partial")),
    st.tuples(st.just("disconnected_fill"), leg, qty),  # fills while V6 is not listening
    st.tuples(st.just("external"), leg, qty),
    st.tuples(st.just("assign")),
    st.tuples(st.just("reconcile")),
    st.tuples(st.just("expiry")),
)


def run(world: SimWorld, steps: list[tuple]) -> None:
    pool = world.pool
    expired = False
    stock = world.exchange.qualify(Contract.stock("SPY"))
    assert stock is not None
    for s in steps:
        kind = s[0]
        live = pool[6:] if expired else pool  # after the first expiry only later ones trade
        if kind == "v6":
            c = live[s[1] % len(live)]
            order = world.v6_single(c, s[2])
            execs = world.submit(order)
            if s[3]:
                world.book.record_fills(execs)
        elif kind == "vertical":
            puts = [c for c in live if c.right is not None and c.right.value == "P"]
            i = s[1] % (len(puts) - 1)
            order = world.v6_vertical(puts[i + 1], puts[i], s[2])
            execs = world.submit(order)
            if s[3]:
                world.book.record_fills(execs)
        elif kind == "duplicate":
            world.exchange.faults.duplicate_next_execution = True
        elif kind == "partial":
            world.exchange.faults.partial_fill_next = 1
            world.exchange.faults.partial_hold_s = 60.0
        elif kind == "disconnected_fill":
            world.exchange.faults.delay_fills_s = 30.0
            order = world.v6_single(live[s[1] % len(live)], s[2])
            world.exchange.place_order(order)
            world.exchange.faults.delay_fills_s = 0.0
            world.advance(timedelta(minutes=2))  # fills happen; nobody records them
        elif kind == "external":
            world.external(live[s[1] % len(live)], s[2])
        elif kind == "assign":
            shorts = [
                p
                for p in world.exchange.positions()
                if p.quantity < 0 and p.contract.sec_type.value == "OPT"
            ]
            if shorts:
                world.assign(shorts[0].contract, 1, stock)
        elif kind == "reconcile":
            world.reconcile()
        elif kind == "expiry" and not expired:
            expired = True
            world.advance(timedelta(days=7))  # past the nearest weekly's close: settled
            world.advance(timedelta(minutes=1))
    world.advance(timedelta(minutes=2))  # let partial fills complete or rest


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step, min_size=1, max_size=10))
def test_any_fault_sequence_reconciles_to_the_broker(steps: list[tuple]) -> None:
    world = fresh_world()
    run(world, steps)
    result = world.reconcile()
    # a position gone with nothing to explain it (two assignments whose stock nets out) is
    # never closed silently: it waits for a person, whose ack the next run books
    waiting = result.breaks.filter(pl.col("resolution") == "awaiting_ack")
    assert set(waiting.get_column("kind")) <= {"missing_position"}, waiting
    assert (waiting.get_column("broker_quantity") == 0).all()
    if waiting.height:
        assert not result.in_agreement
        acks = frozenset(waiting.get_column("break_id"))
        result = world.reconcile(bounds=ReportBounds(acknowledged=acks))
        booked = {f"{a}-acked" for a in acks}  # the same ids, booked
        assert booked <= set(result.breaks.get_column("break_id"))
    assert result.in_agreement
    assert world.book_equals_broker(), (world.book_positions(), world.exchange.positions())
    assert world.exec_ids_unique()
    broker_ids = {e.exec_id for e in world.exchange.executions()}
    booked = set(world.book.fills().get_column("exec_id"))
    assert broker_ids <= booked  # every real execution booked (synthetic ones are extra)
    assert result.unresolved_breaks == 0, result.breaks
    again = world.reconcile()
    assert again.fills.is_empty() and again.unresolved_breaks == 0
