"""ComboExecutor against SimBroker: one combo, clean timeouts, partial-fill policies, safe
retries, bounded repricing and hard caps."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from datetime import timedelta

import polars as pl
import pytest
from exec_world import World, make_world

from core.domain import Action, OrderRequest, OrderStatus, SecType
from core.domain.order_refs import make_order_ref
from core.domain.strategies import IntentPurpose, StrategyStatus
from core.execution.combo import combo_contract
from core.execution.intents import sent_today
from core.execution.results import ExecStatus
from core.risk.limits import MAX_CONTRACTS_PER_ORDER
from core.strategy.candidates import build_candidates
from core.strategy.chain import snapshot_chain


def table(world: World, name: str) -> pl.DataFrame:
    return world.store.read(name).collect()


def strategy(world: World, sid: str) -> dict[str, object]:
    return table(world, "strategies").filter(pl.col("strategy_id") == sid).row(0, named=True)


def positions(world: World) -> dict[int, int]:
    return {p.contract.con_id: p.quantity for p in world.exchange.positions()}


def assert_intent_before_every_order(world: World) -> None:
    intents = set(table(world, "order_intents")["order_ref"].to_list())
    refs = [o.order_ref for o in world.orders()]
    assert refs and set(refs) <= intents
    assert len(refs) == len(set(refs))  # no ref ever reached the exchange twice


async def test_iron_condor_fills_as_one_combo() -> None:
    world = await make_world()
    cand = await world.candidate()
    result = await world.executor().execute_entry(cand)

    assert result.status is ExecStatus.FILLED and result.filled == 1
    filled = [o for o in world.orders() if o.status is OrderStatus.FILLED]
    assert len(filled) == 1
    bag = filled[0]
    assert bag.contract.sec_type is SecType.BAG and len(bag.contract.combo_legs) == 4
    execs = [e for e in world.exchange.executions() if e.order_ref == bag.order_ref]
    assert len(execs) == 4 and len({e.order_id for e in execs}) == 1  # one order, four legs
    assert positions(world) == {leg.contract.con_id: leg.ratio for leg in cand.legs}
    # everything before the fill was cancelled, nothing is left working
    assert world.exchange.open_orders() == []
    assert_intent_before_every_order(world)
    # the book: strategy open, 4 fills, order rows; prediction at the credit received
    s = strategy(world, cand.strategy_id)
    assert s["status"] == StrategyStatus.OPEN.value and s["quantity"] == 1
    assert table(world, "fills").height == 4
    assert set(table(world, "orders")["order_ref"]) == {o.order_ref for o in world.orders()}
    pred = table(world, "predictions").row(0, named=True)
    assert pred["strategy_id"] == cand.strategy_id
    assert pred["entry_price"] == pytest.approx(result.credit) and result.credit > 0
    assert pred["skew"] == pytest.approx(cand.skew_norm) and pred["width"] == cand.width


async def test_timeout_cancels_cleanly() -> None:
    world = await make_world()
    cand = await world.candidate()
    world.exchange.faults.delay_fills_s = 100_000  # nothing fills within the timeout
    t0 = world.clock.now()
    result = await world.executor().execute_entry(cand)

    assert result.status is ExecStatus.CANCELLED and result.filled == 0
    assert (world.clock.now() - t0).total_seconds() <= world.settings.strategies.fill_timeout_s + 1
    assert world.exchange.open_orders() == []
    assert all(o.status is OrderStatus.CANCELLED for o in world.orders())
    assert len(world.orders()) == world.settings.strategies.reprice_steps + 1
    assert positions(world) == {}
    assert strategy(world, cand.strategy_id)["status"] == StrategyStatus.CANCELLED.value
    legs = table(world, "legs")
    assert legs["status"].to_list() == ["CLOSED"] * 4
    assert set(legs["close_reason"]) == {"cancelled"}
    assert set(table(world, "orders")["status"]) == {"CANCELLED"}
    assert table(world, "predictions").is_empty()
    world.exchange.faults.delay_fills_s = 0
    world.clock.advance(timedelta(minutes=5))  # nothing fills later
    await world.broker.positions()
    assert positions(world) == {}


def arm_partial_on_natural(world: World, units: int = 1) -> None:
    """The first order sent at (or through) natural fills only `units`; the rest rests."""
    armed = {"done": False}

    def hook(order: OrderRequest) -> None:
        natural = world.broker.placed[-1][1]
        if not armed["done"] and order.limit_price is not None and order.limit_price >= natural:
            world.exchange.faults.partial_fill_next = units
            armed["done"] = True

    world.broker.before_place = hook


async def test_partial_fill_is_completed_under_the_complete_policy() -> None:
    world = await make_world(partial_fill_policy="complete")
    cand = await world.candidate(quantity=3)
    arm_partial_on_natural(world)
    result = await world.executor().execute_entry(cand)

    assert result.status is ExecStatus.FILLED and result.filled == 3
    with_fills = [o for o in world.orders() if o.filled]
    assert [o.filled for o in with_fills] == [1, 2]  # the partial, then the remainder
    assert with_fills[0].status is OrderStatus.CANCELLED  # its rest was cancelled first
    assert positions(world) == {leg.contract.con_id: 3 * leg.ratio for leg in cand.legs}
    assert strategy(world, cand.strategy_id)["quantity"] == 3
    assert_intent_before_every_order(world)


async def test_partial_fill_is_unwound_under_the_unwind_policy() -> None:
    world = await make_world(partial_fill_policy="unwind")
    cand = await world.candidate(quantity=3)
    arm_partial_on_natural(world)
    result = await world.executor().execute_entry(cand)

    assert result.status is ExecStatus.UNWOUND and result.filled == 1
    assert result.unwind is not None and result.unwind.status is ExecStatus.FILLED
    assert result.unwind.filled == 1
    assert positions(world) == {}  # no half strategy left behind
    assert strategy(world, cand.strategy_id)["status"] == StrategyStatus.CLOSED.value
    purposes = Counter(table(world, "order_intents")["purpose"].to_list())
    assert purposes[IntentPurpose.CLOSE.value] >= 1
    assert table(world, "predictions").is_empty()
    assert world.exchange.open_orders() == []


async def test_partial_fill_that_cannot_complete_keeps_what_filled_and_says_so() -> None:
    world = await make_world(partial_fill_policy="complete")
    cand = await world.candidate(quantity=3)
    arm_partial_on_natural(world)
    original = world.broker.before_place

    def hook(order: OrderRequest) -> None:
        assert original is not None
        original(order)
        if any(o.filled for o in world.orders()):  # after the partial, nothing fills
            world.exchange.faults.delay_fills_s = 100_000

    world.broker.before_place = hook
    result = await world.executor().execute_entry(cand)

    assert result.status is ExecStatus.PARTIAL and result.filled == 1
    s = strategy(world, cand.strategy_id)
    assert s["quantity"] == 1 and "1 of 3" in str(s["note"])
    assert positions(world) == {leg.contract.con_id: leg.ratio for leg in cand.legs}
    assert world.exchange.open_orders() == []
    assert table(world, "predictions").height == 1


async def test_retry_after_a_lost_acknowledgement_does_not_double_the_order() -> None:
    world = await make_world()
    cand = await world.candidate()
    world.broker.lose_ack = lambda order: order.order_ref.endswith(":0:combo")
    ex = world.executor()
    first = await ex.execute_entry(cand)
    assert first.status is ExecStatus.INTERRUPTED
    assert len(world.orders()) == 1  # it did reach the exchange
    lost_ref = world.orders()[0].order_ref

    world.broker.lose_ack = None
    await world.broker.connect()
    second = await ex.execute_entry(cand)

    assert second.status is ExecStatus.FILLED and second.filled == 1
    sent = [o.order_ref for o, _ in world.broker.placed]
    assert sent.count(lost_ref) == 1  # looked up with find_order, never placed again
    assert [o.order_ref for o in world.orders()].count(lost_ref) == 1
    assert_intent_before_every_order(world)
    assert positions(world) == {leg.contract.con_id: leg.ratio for leg in cand.legs}


async def test_retry_after_the_filling_order_lost_its_ack_places_nothing_new() -> None:
    world = await make_world(reprice_steps=1)  # mid, then natural (which fills)
    cand = await world.candidate()
    world.broker.lose_ack = lambda order: order.order_ref.endswith(":1:combo")
    ex = world.executor()
    first = await ex.execute_entry(cand)
    assert first.status is ExecStatus.INTERRUPTED
    assert positions(world) == {leg.contract.con_id: leg.ratio for leg in cand.legs}
    assert table(world, "fills").is_empty()  # the book has not seen the fill yet

    world.broker.lose_ack = None
    await world.broker.connect()
    before = len(world.broker.placed)
    again = await ex.execute_entry(cand)
    assert again.status is ExecStatus.FILLED and again.filled == 1
    assert len(world.broker.placed) == before  # found at the broker: nothing new sent
    assert table(world, "fills").height == 4
    assert strategy(world, cand.strategy_id)["status"] == StrategyStatus.OPEN.value
    assert table(world, "predictions").height == 1

    third = await ex.execute_entry(cand)
    assert third.status is ExecStatus.ALREADY_DONE
    assert len(world.broker.placed) == before
    assert_intent_before_every_order(world)


async def test_limits_never_pass_natural_and_never_flip_the_credit() -> None:
    world = await make_world(reprice_steps=6, partial_fill_policy="complete")
    cand = await world.candidate(quantity=2)
    arm_partial_on_natural(world)
    result = await world.executor().execute_entry(cand)
    assert result.status is ExecStatus.FILLED
    limits = [o.limit_price for o, _ in world.broker.placed]
    assert len(limits) >= 3
    for order, natural in world.broker.placed:
        assert order.limit_price is not None
        assert order.limit_price <= natural + 1e-9  # never beyond natural
        assert order.limit_price < 0  # still a credit
        assert order.limit_price <= -cand.width * world.settings.strategies.min_credit_to_width
    assert all(b >= a - 1e-9 for a, b in itertools.pairwise(limits))


async def test_no_order_when_mid_is_already_below_the_credit_floor() -> None:
    world = await make_world()
    cand = await world.candidate()
    floor = math.ceil(cand.credit / cand.width * 100 + 5) / 100  # above the mid credit
    result = await world.executor(min_credit_to_width=floor).execute_entry(cand)
    assert result.status is ExecStatus.NO_PRICE and "below the floor" in result.message
    assert world.orders() == [] and table(world, "order_intents").is_empty()
    assert strategy(world, cand.strategy_id)["status"] == StrategyStatus.CANCELLED.value


async def test_hard_cap_blocks_the_order_before_it_is_sent() -> None:
    world = await make_world()
    cand = await world.candidate()
    too_big = cand.with_quantity(MAX_CONTRACTS_PER_ORDER // 4 + 1)  # 4 legs: 52 contracts
    result = await world.executor().execute_entry(too_big)
    assert result.status is ExecStatus.BLOCKED
    assert result.hard_caps is not None
    assert result.hard_caps.rejections["limit"].to_list() == ["hard_contracts_per_order"]
    assert world.orders() == [] and world.broker.placed == []
    assert table(world, "order_intents").is_empty()


@pytest.mark.parametrize(
    ("net_liq_per_max_loss", "sent"),
    [(20.0, True), (5.0, False), (math.nan, False), (0.0, False)],
)
async def test_max_loss_hard_cap_scales_with_the_net_liquidation_given(
    net_liq_per_max_loss: float, sent: bool
) -> None:
    """10 % of net liquidation per order: a condor risking 5 % goes out, one risking 20 %
    (or on an account whose size is unknown) is blocked before anything is sent."""
    world = await make_world()
    cand = await world.candidate()
    world.net_liquidation = net_liq_per_max_loss * cand.max_loss
    result = await world.executor().execute_entry(cand)
    if sent:
        assert result.status is ExecStatus.FILLED
        return
    assert result.status is ExecStatus.BLOCKED
    assert result.hard_caps is not None
    assert "hard_max_loss_per_order" in result.hard_caps.rejections["limit"].to_list()
    assert world.orders() == [] and world.broker.placed == []


async def test_day_usage_counts_the_filled_entry_max_loss() -> None:
    world = await make_world()
    cand = await world.candidate(quantity=2)
    result = await world.executor().execute_entry(cand)
    assert result.status is ExecStatus.FILLED
    day = sent_today(world.store, world.clock.now())
    assert day.contracts == 4 * 2
    # a condor loses at most its wider wing less the credit it took, per unit
    assert day.max_loss == pytest.approx((cand.width + result.avg_price) * 100 * 2)
    assert 0 < day.max_loss < cand.width * 100 * 2


async def test_a_rejected_order_cancels_the_entry() -> None:
    world = await make_world()
    cand = await world.candidate()
    world.exchange.faults.reject_next = 1
    result = await world.executor().execute_entry(cand)
    assert result.status is ExecStatus.REJECTED and "201" in result.message
    assert len(world.orders()) == 1
    assert strategy(world, cand.strategy_id)["status"] == StrategyStatus.CANCELLED.value


async def test_exit_closes_the_whole_strategy_as_one_combo() -> None:
    world = await make_world()
    cand = await world.candidate(quantity=2)
    ex = world.executor()
    assert (await ex.execute_entry(cand)).status is ExecStatus.FILLED
    half = await ex.execute_exit(cand.strategy_id, quantity=1, purpose=IntentPurpose.REDUCE)
    assert half.status is ExecStatus.FILLED and half.filled == 1
    assert positions(world) == {leg.contract.con_id: leg.ratio for leg in cand.legs}
    sent = len(world.broker.placed)
    retry = await ex.execute_entry(cand)  # a late retry must not buy the reduction back
    assert retry.status is ExecStatus.ALREADY_DONE and len(world.broker.placed) == sent
    rest = await ex.execute_exit(cand.strategy_id, urgent=True)
    assert rest.status is ExecStatus.FILLED and rest.filled == 1
    assert len(rest.attempts) == 1  # urgent: straight to natural
    assert positions(world) == {}
    assert strategy(world, cand.strategy_id)["status"] == StrategyStatus.CLOSED.value
    again = await ex.execute_exit(cand.strategy_id)
    assert again.status is ExecStatus.ALREADY_DONE
    assert_intent_before_every_order(world)


async def test_roll_is_one_combo_that_closes_the_old_legs_and_opens_the_new() -> None:
    world = await make_world()
    cand = await world.candidate()
    ex = world.executor()
    assert (await ex.execute_entry(cand)).status is ExecStatus.FILLED
    later = world.settings.strategies.model_copy(update={"target_dte": 60, "dte_max": 75})
    now = world.clock.now()
    chain = await snapshot_chain(world.broker, "SPY", later, now)
    target = build_candidates(
        chain, now, world.settings.model_copy(update={"strategies": later})
    ).eligible[0]
    assert target.expiry > cand.expiry
    n_sent = len(world.broker.placed)
    credit_only = await ex.execute_roll(cand.strategy_id, target, max_debit=0.0)
    assert credit_only.status in (ExecStatus.CANCELLED, ExecStatus.NO_PRICE)
    assert all(
        o.limit_price is not None and o.limit_price <= 0 for o, _ in world.broker.placed[n_sent:]
    )
    assert positions(world) == {leg.contract.con_id: leg.ratio for leg in cand.legs}

    result = await ex.execute_roll(cand.strategy_id, target)

    assert result.status is ExecStatus.FILLED and result.filled == 1
    roll = [o for o in world.orders() if o.status is OrderStatus.FILLED][-1]
    assert len(roll.contract.combo_legs) == 8
    assert len([e for e in world.exchange.executions() if e.order_ref == roll.order_ref]) == 8
    assert positions(world) == {leg.contract.con_id: leg.ratio for leg in target.legs}
    legs = table(world, "legs").filter(pl.col("strategy_id") == cand.strategy_id)
    status = dict(zip(legs["con_id"].to_list(), legs["status"].to_list(), strict=True))
    assert all(status[leg.contract.con_id] == "CLOSED" for leg in cand.legs)
    assert all(status[leg.contract.con_id] == "OPEN" for leg in target.legs)
    assert strategy(world, cand.strategy_id)["status"] == StrategyStatus.OPEN.value


async def test_resume_pending_cancels_an_entry_that_never_reached_the_broker() -> None:
    world = await make_world()
    cand = await world.candidate()
    ex = world.executor()
    # a crash between writing the intent and sending the order
    sid = ex.book.open_strategy(cand.strategy_type, cand.underlying, cand.leg_specs(), quantity=1)
    bag, _ = combo_contract("SPY", [(leg.contract, leg.ratio) for leg in cand.legs])
    ex.book.record_intent(
        OrderRequest(bag, Action.BUY, 1, limit_price=-1.0, order_ref=make_order_ref(sid, 0, None)),
        IntentPurpose.OPEN,
    )
    results = await ex.resume_pending()
    assert [r.status for r in results] == [ExecStatus.CANCELLED]
    assert world.orders() == [] and world.broker.placed == []
    assert strategy(world, sid)["status"] == StrategyStatus.CANCELLED.value
