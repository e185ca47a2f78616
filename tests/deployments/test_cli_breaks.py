"""`v6 breaks ack`: a position that vanished with nothing to explain it waits, unbooked, until
a person acknowledges its break; the acknowledgement is audited and the next reconciliation
books it. Driven through the real entry points: `reconcile_against_broker` over a SimBroker
on a Delta store, and the `v6` console entry point."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from cli_harness import one_line_error, v6
from reconcile_world import SimWorld, rich_settings

from core.book.against_broker import Reconciliation, reconcile_against_broker
from core.book.ledger import Book
from core.broker.sim import SimBroker
from core.domain import Action, Execution
from core.store import DeltaStore


@pytest.fixture
def world(no_config: Path, monkeypatch: pytest.MonkeyPatch) -> SimWorld:
    root = no_config / "data"
    monkeypatch.setenv("V6_STORAGE__ROOT", str(root))
    monkeypatch.setenv("USER", "ana")
    return SimWorld(store=DeltaStore(str(root)))


async def reconcile(world: SimWorld, run_id: str) -> Reconciliation:
    broker = SimBroker(world.exchange)
    await broker.connect()
    return await reconcile_against_broker(
        Book(world.store, world.clock), broker, rich_settings(), run_id
    )


async def test_vanished_position_waits_for_an_ack_then_books(
    world: SimWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    option = world.pool[1]
    world.book.record_fills(world.submit(world.v6_single(option, -2)))
    assert (await reconcile(world, "r1")).result.breaks.is_empty()
    # the position goes without an execution (as a position message ib_async dropped would)
    world.exchange._apply(
        Execution("GONE.1", 0, "", option, Action.BUY, 2, 0.0, world.clock.now(), "", 0.0)
    )
    first = (await reconcile(world, "r2")).result
    brk = first.breaks.row(0, named=True)
    assert (brk["kind"], brk["resolution"], brk["resolved"]) == (
        "missing_position",
        "awaiting_ack",
        False,
    )
    assert first.fills.is_empty() and first.suspect_reports == 1
    assert world.book_positions() == {option.con_id: -2}  # still held in the book

    code, _, err = v6(capsys, "breaks", "ack", brk["break_id"])
    one_line_error(code, err, "a reason is required")
    code, _, err = v6(capsys, "breaks", "ack", "qm-nosuchbreak", "--reason", "x")
    one_line_error(code, err, "no break 'qm-nosuchbreak'")

    code, out, err = v6(capsys, "breaks", "ack", brk["break_id"], "-r", "closed in TWS, checked")
    assert code == 0, out + err
    assert f"break {brk['break_id']}" in out and "acknowledged by ana" in out
    ack = world.store.read("break_acks").collect().row(0, named=True)
    assert (ack["break_id"], ack["acknowledged_by"], ack["reason"]) == (
        brk["break_id"],
        "ana",
        "closed in TWS, checked",
    )
    assert ack["acknowledged_at"] <= datetime.now(UTC) and ack["con_id"] == option.con_id
    code, _, err = v6(capsys, "breaks", "ack", brk["break_id"], "-r", "again")
    one_line_error(code, err, "was acknowledged by ana")

    booked = (await reconcile(world, "r3")).result
    assert booked.breaks.select("break_id", "resolution", "resolved").rows() == [
        (f"{brk['break_id']}-acked", "closed_externally", True)
    ]
    assert world.book_equals_broker() and booked.unresolved_breaks == 0
    leg = world.book.legs().filter(pl.col("con_id") == option.con_id).row(0, named=True)
    assert (leg["status"], leg["close_reason"]) == ("CLOSED", "closed_externally")
    # both rows stay: what waited, and what booked it; a booked break is no ack's business
    stored = world.store.read("reconciliation_breaks").collect().sort("run_id")
    assert stored.select("resolution", "resolved").rows() == [
        ("awaiting_ack", False),
        ("closed_externally", True),
    ]
    code, _, err = v6(capsys, "breaks", "ack", f"{brk['break_id']}-acked", "-r", "x")
    one_line_error(code, err, "not awaiting an acknowledgement")
