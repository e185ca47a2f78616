"""`reconcile_against_broker`, the one composition behind the cycle's reconcile step and the
position_reconciliation flow: which account it reconciles, and that a repeat books nothing."""

from __future__ import annotations

import pytest
from reconcile_world import SimWorld, rich_settings

from core.book.against_broker import reconcile_against_broker
from core.book.ledger import Book
from core.broker.sim import SimBroker
from core.config import BrokerSettings


@pytest.fixture
async def world() -> SimWorld:
    w = SimWorld()
    w.external(w.pool[0], 2)  # a TWS trade: one position, one execution on the sim account
    return w


async def broker_of(world: SimWorld) -> SimBroker:
    broker = SimBroker(world.exchange)
    await broker.connect()
    return broker


async def test_books_what_the_broker_reports_once(world: SimWorld) -> None:
    broker, book = await broker_of(world), Book(world.store, world.clock)
    first = await reconcile_against_broker(book, broker, rich_settings(), "r1")
    assert world.book_equals_broker() and first.written["fills"] == 1
    assert first.before.fills.is_empty() and first.since is None
    assert first.result.as_of == world.clock.now()
    again = await reconcile_against_broker(book, broker, rich_settings(), "r2")
    assert again.result.breaks.is_empty() and again.written["fills"] == 0
    assert again.since is not None and again.before.fills.height == 1


async def test_account_is_settings_then_the_named_one_then_the_single_reported(
    world: SimWorld,
) -> None:
    broker, book = await broker_of(world), Book(world.store, world.clock)
    single = await reconcile_against_broker(book, broker, rich_settings(), "r1")
    assert single.account == world.exchange.account
    named = await reconcile_against_broker(book, broker, rich_settings(), "r2", account="DU-X")
    assert named.account == "DU-X"
    pinned = rich_settings(broker=BrokerSettings(account="DU-PIN"))
    pin = await reconcile_against_broker(book, broker, pinned, "r3", account="DU-X")
    assert pin.account == "DU-PIN"


async def test_no_single_account_when_the_broker_reports_nothing() -> None:
    world = SimWorld()
    rec = await reconcile_against_broker(
        Book(world.store, world.clock), await broker_of(world), rich_settings(), "r1"
    )
    assert rec.account is None and rec.result.breaks.is_empty()
