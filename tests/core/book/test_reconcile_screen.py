"""Reconciliation never books an absurd broker report, and never adopts a large unknown
position (or closes a vanished one) until a person acknowledges it."""

from __future__ import annotations

import math

import polars as pl
import pytest
from book_world import World, opt

from core.reconcile import ReconcileResult, ReportBounds

NET_LIQ = 100_000.0


def kinds(result: ReconcileResult) -> list[tuple[str, str, bool]]:
    return sorted(result.breaks.select("kind", "resolution", "resolved").iter_rows())


def assert_nothing_booked(world: World, result: ReconcileResult) -> None:
    assert result.fills.is_empty() and result.strategies.is_empty() and result.legs.is_empty()
    assert result.orders.is_empty() and result.snapshot.is_empty()
    assert world.book.fills().is_empty() or world.exec_ids_unique()
    assert set(result.breaks.get_column("kind")) == {"absurd_report"}
    assert not result.breaks.get_column("resolved").any()
    assert set(result.breaks.get_column("severity")) == {"urgent"}
    assert result.suspect_reports == result.breaks.height == result.unresolved_breaks


def test_a_position_of_1e15_contracts_at_avg_cost_1e300_books_nothing(world: World) -> None:
    world.condor()
    fills_before = world.book.fills()
    world.broker.extra_positions[900] = (opt(450, "P", 900), 10**15, 1e298)
    result = world.reconcile()
    assert_nothing_booked(world, result)
    assert result.breaks.height == 1
    brk = result.breaks.row(0, named=True)
    assert brk["con_id"] == 900 and brk["broker_quantity"] == 10**15
    assert "beyond" in brk["detail"] and "nothing booked" in brk["detail"]
    assert world.book.fills().equals(fills_before)
    assert world.book.strategies().filter(pl.col("origin") == "external").is_empty()
    # re-running on the same report finds the same break (insert-only: recorded once)
    again = world.reconcile()
    assert again.breaks.get_column("break_id").to_list() == [brk["break_id"]]


@pytest.mark.parametrize(
    ("price", "commission", "reason"),
    [
        (math.inf, 0.0, "fill price inf"),
        (math.nan, 0.0, "fill price NaN"),
        (-1.0, 0.0, "fill price -1"),
        (1.0, math.inf, "commission inf"),
    ],
)
def test_a_fill_with_a_non_finite_number_books_nothing_at_all(
    world: World, price: float, commission: float, reason: str
) -> None:
    world.condor(record=False)  # V6's own fills, not yet recorded: even they wait
    world.broker.execute(opt(450, "P", 900), 1, price, "", commission=commission)
    result = world.reconcile()
    assert_nothing_booked(world, result)
    assert world.book.fills().is_empty()
    assert any(reason in d for d in result.breaks.get_column("detail").to_list())


def test_quantities_are_bounded_by_what_v6_holds(world: World) -> None:
    world.condor(quantity=10)
    bounds = ReportBounds(quantity_multiple=5, quantity_floor=20)
    world.broker.execute(opt(455, "P", 901), 51, 0.5, "")  # beyond 5 x the largest holding
    result = world.reconcile(bounds=bounds)
    assert_nothing_booked(world, result)
    details = sorted(result.breaks.get_column("detail").to_list())  # the fill and its position
    assert "fill of 51 is outside 1..50 units" in details[0]
    assert "position of 51 is beyond 50 units" in details[1]
    world.broker.executions.pop()  # the gateway corrected its report
    world.broker.execute(opt(450, "P", 900), 50, 0.5, "")  # 5 x the largest holding: fine
    assert kinds(world.reconcile(bounds=bounds)) == [("external_fill", "adopted_external", True)]


def test_cost_beyond_a_multiple_of_the_account_is_absurd(world: World) -> None:
    bounds = ReportBounds(net_liq=NET_LIQ, cost_multiple=20)
    # 10 contracts at 1e5 USD each: 1e8 USD of premium in a 1e5 USD account
    world.broker.extra_positions[900] = (opt(450, "P", 900), 10, 100_000.0)
    result = world.reconcile(bounds=bounds)
    assert_nothing_booked(world, result)
    assert "over 20 x net liquidation" in result.breaks.item(0, "detail")


def test_an_unknown_account_size_is_itself_absurd(world: World) -> None:
    world.broker.extra_positions[900] = (opt(450, "P", 900), 1, 1.0)
    result = world.reconcile(bounds=ReportBounds(net_liq=math.nan))
    assert_nothing_booked(world, result)
    brk = result.breaks.row(0, named=True)
    assert brk["con_id"] is None and "net liquidation" in brk["detail"]


def test_small_unknown_position_is_adopted_large_one_waits_for_an_ack(world: World) -> None:
    bounds = ReportBounds(net_liq=NET_LIQ, adopt_max_pct=10)
    world.broker.extra_positions[900] = (opt(450, "P", 900), 3, 2.5)  # 750 USD: 0.75%
    world.broker.extra_positions[901] = (opt(600, "C", 901), 40, 5.0)  # 20,000 USD: 20%
    result = world.reconcile(bounds=bounds)
    assert kinds(result) == [
        ("external_position", "adopted_external", True),
        ("external_position", "awaiting_ack", False),
    ]
    assert result.suspect_reports == 0  # a real position, just large: not a data failure
    held = result.breaks.filter(pl.col("resolution") == "awaiting_ack").row(0, named=True)
    assert held["con_id"] == 901 and held["strategy_id"] is None and held["severity"] == "urgent"
    assert "20.0% of net liquidation" in held["detail"]
    assert world.book.positions().select("con_id", "quantity").rows() == [(900, 3)]

    # an ack of the break lets the next run adopt it, as an unmanaged EXTERNAL strategy
    acked = ReportBounds(
        net_liq=NET_LIQ, adopt_max_pct=10, acknowledged=frozenset({held["break_id"]})
    )
    after = world.reconcile(bounds=acked)
    assert kinds(after) == [("external_position", "adopted_external", True)]
    assert after.breaks.item(0, "break_id") == f"{held['break_id']}-acked"
    assert world.book_equals_broker()
    ext = world.book.strategies().filter(pl.col("origin") == "external")
    assert ext.height == 2 and not ext.get_column("managed").any()


def test_an_acknowledgement_does_not_cover_a_position_that_changed_since(world: World) -> None:
    bounds = ReportBounds(net_liq=NET_LIQ, adopt_max_pct=10)
    world.broker.extra_positions[901] = (opt(600, "C", 901), 40, 5.0)
    first = world.reconcile(bounds=bounds).breaks.item(0, "break_id")
    world.broker.extra_positions[901] = (opt(600, "C", 901), 80, 5.0)  # it grew meanwhile
    acked = ReportBounds(net_liq=NET_LIQ, adopt_max_pct=10, acknowledged=frozenset({first}))
    result = world.reconcile(bounds=acked)
    assert kinds(result) == [("external_position", "awaiting_ack", False)]
    assert result.breaks.item(0, "break_id") != first
    assert world.book.positions().is_empty()


def test_a_large_external_fill_waits_for_an_ack_too(world: World) -> None:
    bounds = ReportBounds(net_liq=NET_LIQ, adopt_max_pct=10)
    ex = world.broker.execute(opt(600, "C", 901), 40, 5.0, "tws-1")
    result = world.reconcile(bounds=bounds)
    assert kinds(result) == [("external_fill", "awaiting_ack", False)]
    assert result.breaks.item(0, "break_id") == f"ex-{ex.exec_id}"
    assert world.book.fills().is_empty()
    acked = ReportBounds(
        net_liq=NET_LIQ, adopt_max_pct=10, acknowledged=frozenset({f"ex-{ex.exec_id}"})
    )
    assert kinds(world.reconcile(bounds=acked)) == [("external_fill", "adopted_external", True)]
    assert world.book_equals_broker()
