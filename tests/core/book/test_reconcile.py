"""Reconciliation: after one run the book equals the broker, every difference is a break
with its resolution, and no fill is ever booked twice."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
from book_world import ACCOUNT, World, opt, order_state, stock

from core.domain import OrderStatus
from core.domain.order_refs import make_order_ref
from core.domain.strategies import StrategyType
from core.reconcile import BookFrames, BrokerFrames, ReportBounds, position_stats, reconcile


def kinds(result) -> list[tuple[str, str, bool]]:
    return sorted(result.breaks.select("kind", "resolution", "resolved").iter_rows())


def strategy(world: World, sid: str) -> dict:
    return world.book.strategies().filter(pl.col("strategy_id") == sid).row(0, named=True)


def test_agreeing_book_produces_no_break(world: World) -> None:
    world.condor()
    result = world.reconcile()
    assert result.breaks.is_empty() and result.fills.is_empty()
    assert result.in_agreement and result.snapshot.height == 4


def test_crash_between_submit_and_record_books_fills_once(world: World) -> None:
    sid, ref, _ = world.condor(record=False)
    first = world.reconcile()
    assert kinds(first) == [("missing_fill", "recorded_fill", True)] * 4
    assert set(first.fills.get_column("strategy_id")) == {sid}
    assert world.book_equals_broker()
    assert strategy(world, sid)["status"] == "OPEN"
    order = world.book.store.read("orders").collect().row(0, named=True)
    assert (order["order_ref"], order["status"], order["filled"]) == (ref, "FILLED", 1)
    again = world.reconcile()
    assert again.breaks.is_empty() and again.fills.is_empty()
    assert world.book.fills().height == 4 and world.exec_ids_unique()


def test_duplicated_execution_reports_are_booked_once(world: World) -> None:
    world.condor(record=False)
    world.broker.executions += world.broker.executions[:2]  # the gateway repeats two reports
    result = world.reconcile()
    assert result.duplicate_reports == 2
    assert result.fills.height == 4
    assert world.book_equals_broker() and world.exec_ids_unique()


def test_v6_ref_without_intent_books_on_the_named_strategy(world: World) -> None:
    sid, _, legs = world.condor()
    # a closing order whose intent write was lost: the ref still names the strategy and leg
    ref = make_order_ref(sid, 5, 1)
    world.broker.execute(legs[1].contract, 1, 0.40, ref, world.clock.now())
    result = world.reconcile()
    assert kinds(result) == [("missing_fill", "recorded_fill", True)]
    assert result.fills.row(0, named=True)["leg_id"] == f"{sid}:L1"
    assert world.book_equals_broker()


def test_external_trade_is_adopted_and_not_managed(world: World) -> None:
    world.condor()
    world.broker.execute(opt(450, "P", 900), -2, 0.80, "", world.clock.now())
    result = world.reconcile()
    assert kinds(result) == [("external_fill", "adopted_external", True)]
    ext = world.book.strategies().filter(pl.col("origin") == "external").row(0, named=True)
    assert (ext["strategy_type"], ext["managed"], ext["status"]) == ("external", False, "OPEN")
    legs = world.book.leg_positions().filter(pl.col("strategy_id") == ext["strategy_id"])
    assert legs.select("con_id", "quantity").rows() == [(900, -2)]
    assert world.book_equals_broker()
    # a person tags it: now the rules may trade it
    world.book.tag_external(ext["strategy_id"], strategy_type=StrategyType.SINGLE, tagged_by="ana")
    tagged = strategy(world, ext["strategy_id"])
    assert tagged["managed"] and tagged["tagged_by"] == "ana"


def test_position_without_execution_is_adopted_at_broker_cost(world: World) -> None:
    world.broker.extra_positions[901] = (opt(600, "C", 901), 3, 2.5)
    result = world.reconcile()
    assert kinds(result) == [("external_position", "adopted_external", True)]
    fill = result.fills.row(0, named=True)
    assert (fill["quantity"], fill["price"], fill["source"]) == (3, 2.5, "reconciliation")
    assert fill["exec_id"] == "recon-" + result.breaks.row(0, named=True)["break_id"]
    assert world.book_equals_broker()


def test_external_close_of_a_v6_leg_closes_it_with_that_reason(world: World) -> None:
    sid, _, legs = world.condor()
    world.broker.execute(legs[1].contract, 1, 0.3, "", world.clock.now())  # closed in TWS
    result = world.reconcile()
    assert kinds(result) == [("external_fill", "closed_externally", True)]
    leg = world.book.legs(sid).filter(pl.col("leg_index") == 1).row(0, named=True)
    assert (leg["status"], leg["close_reason"]) == ("CLOSED", "closed_externally")
    assert world.book_equals_broker()
    assert not world.book.strategies().filter(pl.col("origin") == "external").height


def test_leg_gone_without_execution_waits_for_a_person_then_closes_externally(
    world: World,
) -> None:
    sid, _, legs = world.condor()
    world.broker.extra_positions[legs[2].contract.con_id] = (legs[2].contract, 1, 0.0)
    book_before = world.book.positions().sort("con_id")
    result = world.reconcile()
    # a dropped position report looks exactly like this: never booked as a silent close
    assert kinds(result) == [("missing_position", "awaiting_ack", False)]
    assert result.fills.is_empty() and result.suspect_reports == 1
    brk = result.breaks.row(0, named=True)
    assert brk["severity"] == "urgent" and brk["quantity_delta"] == 0
    assert f"v6 breaks ack {brk['break_id']}" in brk["detail"]
    assert world.book.positions().sort("con_id").equals(book_before)
    assert not world.book_equals_broker()
    # the same state next run: the same break, still not booked
    again = world.reconcile()
    assert again.breaks.get_column("break_id").to_list() == [brk["break_id"]]
    assert again.fills.is_empty()
    # a person acknowledged it: the next run books the close
    acked = world.reconcile(bounds=ReportBounds(acknowledged=frozenset({brk["break_id"]})))
    assert kinds(acked) == [("missing_position", "closed_externally", True)]
    assert acked.suspect_reports == 0 and "acknowledged" in acked.breaks.item(0, "detail")
    assert world.book_equals_broker()
    leg = world.book.legs(sid).filter(pl.col("leg_index") == 2).row(0, named=True)
    assert leg["close_reason"] == "closed_externally"


def test_expiry_closes_legs_and_strategy(world: World) -> None:
    sid, _, legs = world.condor()
    for leg in legs:  # the broker drops expired options
        world.broker.extra_positions[leg.contract.con_id] = (leg.contract, -leg.ratio, 0.0)
    world.clock.advance(timedelta(days=46))
    result = world.reconcile()
    assert kinds(result) == [("missing_position", "closed_expired", True)] * 4
    assert set(result.fills.get_column("price")) == {0.0}
    s = strategy(world, sid)
    assert (s["status"], s["close_reason"]) == ("CLOSED", "expired")
    assert world.book_equals_broker()


def test_options_gone_before_expiry_are_not_called_expired(world: World) -> None:
    _, _, legs = world.condor()
    for leg in legs:
        world.broker.extra_positions[leg.contract.con_id] = (leg.contract, -leg.ratio, 0.0)
    result = world.reconcile()
    assert {k for k, _, _ in kinds(result)} == {"missing_position"}
    assert {r for _, r, _ in kinds(result)} == {"awaiting_ack"}


def test_assignment_books_stock_into_the_strategy_and_is_urgent(world: World) -> None:
    sid, _, legs = world.condor()
    short_put = legs[1].contract
    world.clock.advance(timedelta(days=46))
    for leg in legs:  # at expiry: short put assigned (+100 SPY at 480), the rest expire
        world.broker.extra_positions[leg.contract.con_id] = (leg.contract, -leg.ratio, 0.0)
    world.broker.extra_positions[555] = (stock("SPY", 555), 100, 480.0)
    result = world.reconcile(advance=timedelta(0))
    assert kinds(result) == sorted(
        [("assignment", "closed_assigned", True)]
        + [("missing_position", "closed_expired", True)] * 3
    )
    urgent = result.breaks.filter(pl.col("severity") == "urgent").row(0, named=True)
    assert urgent["con_id"] == short_put.con_id and urgent["strategy_id"] == sid
    stock_leg = world.book.leg_positions().filter(pl.col("con_id") == 555).row(0, named=True)
    assert (stock_leg["strategy_id"], stock_leg["quantity"], stock_leg["avg_price"]) == (
        sid,
        100,
        480.0,
    )
    put_leg = world.book.legs(sid).filter(pl.col("con_id") == short_put.con_id).row(0, named=True)
    assert put_leg["close_reason"] == "assigned"
    assert world.book_equals_broker()


def test_early_partial_assignment(world: World) -> None:
    _, _, legs = world.condor(quantity=2)
    call = legs[2].contract  # short 2 calls, one assigned early: -100 SPY
    world.broker.extra_positions[call.con_id] = (call, 1, 0.0)
    world.broker.extra_positions[556] = (stock("SPY", 556), -100, 520.0)
    result = world.reconcile()
    assert kinds(result) == [("assignment", "closed_assigned", True)]
    assert world.book_equals_broker()
    held = dict(world.book.leg_positions().select("con_id", "quantity").iter_rows())
    assert held[call.con_id] == -1 and held[556] == -100


def test_quantity_beyond_intended_size_goes_external(world: World) -> None:
    sid, _, legs = world.condor()
    c = legs[1].contract
    world.broker.extra_positions[c.con_id] = (c, -1, 2.0)  # someone sold one more
    result = world.reconcile()
    assert kinds(result) == [("quantity_mismatch", "adopted_external", True)]
    assert world.book_equals_broker()
    v6_leg = world.book.leg_positions().filter(pl.col("leg_id") == f"{sid}:L1").row(0, named=True)
    assert v6_leg["quantity"] == -1


def test_lost_fill_within_intended_size_completes_the_v6_leg(world: World) -> None:
    # a 2-lot condor: the book recorded the first fill of each leg, the second fills are
    # no longer in the broker's execution list (rolled over) but are in its positions
    sid, ref, legs = world.condor(quantity=1)
    for i, leg in enumerate(legs):  # at the same prices as the first fills
        world.broker.execute(leg.contract, leg.ratio, 1.0 + i, ref)
    world.book.store.merge(
        "strategies",
        world.book.strategies().with_columns(quantity=pl.lit(2, dtype=pl.Int64)),
    )
    world.broker.forget_executions()
    result = world.reconcile()
    assert kinds(result) == [("quantity_mismatch", "adjusted", True)] * 4
    assert set(result.fills.get_column("strategy_id")) == {sid}
    assert world.book_equals_broker()


def test_average_price_mismatch_is_adjusted_without_pnl(world: World) -> None:
    _, _, legs = world.condor()
    c = legs[0].contract
    world.broker.forget_executions()
    world.broker.extra_positions[c.con_id] = (c, 1, 1.50)  # the broker says 1.50, book 1.00
    result = world.reconcile()
    assert kinds(result) == [("price_mismatch", "adjusted", True)]
    assert sorted(result.fills.get_column("quantity").to_list()) == [-1, 1]
    after = world.book.positions().filter(pl.col("con_id") == c.con_id).row(0, named=True)
    assert abs(after["avg_price"] - 1.50) < 1e-9 and after["quantity"] == 1
    assert world.reconcile().breaks.is_empty()


def test_commission_inside_broker_average_is_not_a_mismatch(world: World) -> None:
    world.condor()
    world.broker.forget_executions()
    world.broker.extra_positions = {  # IB's avgCost carries $0.65 commission per contract
        k: (c, q, px + 0.0065 * (1 if q > 0 else -1))
        for k, (c, q, px) in world.broker.extra_positions.items()
    }
    assert world.reconcile().breaks.is_empty()


def test_opposite_sides_are_unresolved(world: World) -> None:
    _, _, legs = world.condor()
    c = legs[0].contract
    world.broker.extra_positions[c.con_id] = (c, -2, 1.0)  # book long 1, broker short 1
    result = world.reconcile()
    unresolved = result.breaks.filter(~pl.col("resolved"))
    assert unresolved.height >= 1 and set(unresolved.get_column("con_id")) == {c.con_id}
    assert set(unresolved.get_column("severity")) == {"urgent"}
    assert world.book_equals_broker()


def test_v6_ref_naming_no_strategy_is_unresolved_but_booked(world: World) -> None:
    world.broker.execute(opt(470, "P", 950), 1, 1.0, "v6:ic-SPY-20990101-deadbeef00:0:L0")
    result = world.reconcile()
    assert kinds(result) == [("unknown_v6_ref", "adopted_external", False)]
    assert result.unresolved_breaks == 1 and result.urgent_breaks == 1
    assert world.book_equals_broker()


def test_orders_missing_stale_and_external(world: World) -> None:
    sid, ref, legs = world.condor()
    # a stale order: the book says working, the broker has nothing open
    world.book.record_order(
        order_state(ref, legs[0].contract, 1, OrderStatus.SUBMITTED, order_id=5)
    )
    # a V6 close order working at the broker the book never recorded
    close_ref = make_order_ref(sid, 1, None)
    world.broker.open_orders = [
        order_state(close_ref, legs[0].contract, 1, OrderStatus.SUBMITTED, order_id=8),
        order_state("manual", opt(400, "P", 990), 1, OrderStatus.SUBMITTED, order_id=9),
    ]
    result = world.reconcile()
    assert kinds(result) == [
        ("external_order", "noted", True),
        ("missing_order", "recorded_order", True),
        ("stale_order", "order_updated", True),
    ]
    orders = {
        r["order_ref"]: r["status"]
        for r in world.book.store.read("orders").collect().iter_rows(named=True)
    }
    assert orders == {ref: "FILLED", close_ref: "SUBMITTED"}
    # recorded once: a second run adds nothing new but the external order's note is not repeated
    again = world.reconcile()
    assert (
        again.breaks.get_column("break_id").to_list()
        == result.breaks.filter(pl.col("kind") == "external_order").get_column("break_id").to_list()
    )


def test_replay_after_crash_between_table_writes_doubles_nothing(world: World) -> None:
    world.condor(record=False)
    world.broker.execute(opt(450, "P", 900), -2, 0.80, "", world.clock.now())
    world.broker.extra_positions[901] = (opt(600, "C", 901), 3, 2.5)
    first = world.reconcile(apply=False)
    # crash after the breaks and legs were written, before the fills
    world.store.merge("reconciliation_breaks", first.breaks, update=False)
    world.store.merge("legs", first.legs)
    again = reconcile(
        world.book.frames(),
        world.broker.frames(),
        as_of=first.as_of,
        run_id="replay",
        account=ACCOUNT,
    )
    assert sorted(again.breaks.get_column("break_id")) == sorted(
        first.breaks.get_column("break_id")
    )
    assert sorted(again.fills.get_column("exec_id")) == sorted(first.fills.get_column("exec_id"))
    assert sorted(again.strategies.get_column("strategy_id")) == sorted(
        first.strategies.get_column("strategy_id")
    )
    world.book.apply(again)
    assert world.book_equals_broker() and world.exec_ids_unique()
    assert world.store.tables["reconciliation_breaks"].height == first.breaks.height


def test_record_fills_is_exactly_once_and_ignores_external(world: World) -> None:
    world.condor(record=False)
    execs = list(world.broker.executions)
    ext = world.broker.execute(opt(450, "P", 900), -1, 0.8)
    first = world.book.record_fills([*execs, ext])
    assert first.height == 4
    assert world.book.record_fills(execs).height == 0
    assert world.book.fills().height == 4


def test_position_stats_average_cost_resets_when_flat_or_flipped() -> None:
    from datetime import UTC, datetime

    t = [datetime(2026, 3, 2, 15, i, tzinfo=UTC) for i in range(6)]
    fills = pl.DataFrame(
        {
            "k": [1, 1, 1, 1, 2, 2],
            "exec_id": [f"e{i}" for i in range(6)],
            "time": t,
            "quantity": [2, 2, -4, 3, 1, -3],  # k=1: flat then reopened at 9; k=2 flips
            "price": [1.0, 2.0, 5.0, 9.0, 4.0, 6.0],
            "commission": [None] * 6,
        },
        schema_overrides={"commission": pl.Float64},
    )
    stats = {r["k"]: r for r in position_stats(fills, "k").iter_rows(named=True)}
    assert (stats[1]["quantity"], stats[1]["avg_price"]) == (3, 9.0)
    assert (stats[2]["quantity"], stats[2]["avg_price"], stats[2]["open_qty"]) == (-2, 6.0, 2)


def test_empty_inputs() -> None:
    from datetime import UTC, datetime

    result = reconcile(
        BookFrames.empty(), BrokerFrames.empty(), as_of=datetime(2026, 3, 2, tzinfo=UTC), run_id="r"
    )
    assert result.breaks.is_empty() and result.snapshot.is_empty() and result.in_agreement


def test_offsetting_legs_on_an_expired_contract_both_close(world: World) -> None:
    from datetime import date

    from core.domain import Action, OrderRequest
    from core.domain.strategies import IntentPurpose, LegSpec

    c = opt(455, "P", 960, expiry=date(2026, 3, 6))
    for n, qty in enumerate((1, -1)):  # one strategy long the put, another short it
        sid = world.book.open_strategy(
            StrategyType.SINGLE, "SPY", [LegSpec(c, qty)], quantity=1, nonce=n
        )
        ref = make_order_ref(sid, 0, 0)
        side = Action.BUY if qty > 0 else Action.SELL
        world.book.record_intent(
            OrderRequest(c, side, 1, limit_price=1.0, order_ref=ref), IntentPurpose.OPEN
        )
        world.book.record_fills([world.broker.execute(c, qty, 1.0, ref)])
    assert world.reconcile().breaks.is_empty()  # the broker nets them to nothing
    world.clock.advance(timedelta(days=5))  # past the expiry: both legs are gone
    result = world.reconcile()
    assert kinds(result) == [("missing_position", "closed_expired", True)] * 2
    statuses = set(world.book.strategies().get_column("status"))
    assert statuses == {"CLOSED"} and world.book_equals_broker()
