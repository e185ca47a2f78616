"""The what-if margin limit on entries: asked once, for the exact first order, before it
is sent; over the limit or unknown refuses the entry with its reason; exits never ask."""

from __future__ import annotations

from dataclasses import replace

import pytest
from exec_world import World, make_world

from core.broker.base import BrokerError, ErrorClass
from core.domain import MarginImpact
from core.domain.strategies import StrategyStatus
from core.execution.results import ExecStatus
from core.strategy.candidates import Candidate


def with_margin_pct(world: World, pct: float) -> None:
    limits = world.settings.limits.model_copy(update={"max_margin_pct": pct})
    world.settings = world.settings.model_copy(update={"limits": limits})


def condor_margin(cand: Candidate) -> float:
    """Reg-T for an iron condor: one side's width x multiplier x quantity."""
    return cand.width * 100 * cand.quantity


def assert_refused_before_sending(world: World, cand: Candidate, needle: str) -> None:
    """Nothing sent, no intent written, the strategy cancelled with the reason as its note."""
    assert world.broker.placed == [] and world.orders() == []
    assert world.store.read("order_intents").collect().is_empty()
    row = world.store.read("strategies").collect().row(0, named=True)
    assert row["strategy_id"] == cand.strategy_id
    assert row["status"] == StrategyStatus.CANCELLED.value
    assert needle in row["note"] and "BLOCKED" in row["note"]


async def test_entry_asks_what_if_for_its_exact_first_order_then_sends_it() -> None:
    world = await make_world()
    cand = await world.candidate(quantity=2)
    result = await world.executor().execute_entry(cand)
    assert result.status is ExecStatus.FILLED
    first, _ = world.broker.placed[0]
    (asked,) = world.broker.what_ifs  # once per call, however many ladder steps
    assert asked.what_if and replace(asked, what_if=False) == first


async def test_entry_over_the_margin_limit_is_refused_with_its_reason() -> None:
    world = await make_world()
    cand = await world.candidate()
    post = condor_margin(cand)  # the account is flat: post-trade = this order's margin
    with_margin_pct(world, 0.9 * post / world.net_liquidation * 100)
    result = await world.executor().execute_entry(cand)
    assert result.status is ExecStatus.BLOCKED
    assert "limits.max_margin_pct" in result.message
    assert f"post-trade initial margin {post:,.2f}" in result.message
    assert_refused_before_sending(world, cand, "margin")

    # the same entry at a limit just above its margin goes out
    world2 = await make_world()
    cand2 = await world2.candidate()
    with_margin_pct(world2, 1.1 * condor_margin(cand2) / world2.net_liquidation * 100)
    assert (await world2.executor().execute_entry(cand2)).status is ExecStatus.FILLED


@pytest.mark.parametrize(
    ("answer", "needle"),
    [
        (MarginImpact(None, 500.0, None, None, None, None, None, None, None), "unknown"),
        (MarginImpact(0.0, None, None, None, None, None, None, None, None), "unknown"),
        (BrokerError("what-if refused", ErrorClass.REJECTION, 201), "what-if failed"),
        (BrokerError("no answer", ErrorClass.DATA), "what-if failed"),
    ],
)
async def test_unknown_or_failed_what_if_refuses_the_entry(
    answer: MarginImpact | BrokerError, needle: str
) -> None:
    world = await make_world()
    cand = await world.candidate()
    world.broker.what_if_answer = answer
    result = await world.executor().execute_entry(cand)
    assert result.status is ExecStatus.BLOCKED and needle in result.message
    assert_refused_before_sending(world, cand, needle)


async def test_unknown_net_liquidation_refuses_even_a_known_margin() -> None:
    world = await make_world()
    cand = await world.candidate()
    world.broker.what_if_answer = MarginImpact(0.0, 500.0, 500.0, *([None] * 6))
    world.net_liquidation = float("nan")
    result = await world.executor().execute_entry(cand)
    assert result.status is ExecStatus.BLOCKED  # the hard caps or the margin check
    assert world.broker.placed == []


async def test_connection_lost_during_what_if_interrupts_the_entry() -> None:
    world = await make_world()
    cand = await world.candidate()
    world.broker.what_if_answer = BrokerError("socket closed", ErrorClass.CONNECTIVITY)
    result = await world.executor().execute_entry(cand)
    assert result.status is ExecStatus.INTERRUPTED and world.broker.placed == []


async def test_exits_never_ask_for_margin() -> None:
    world = await make_world()
    cand = await world.candidate()
    assert (await world.executor().execute_entry(cand)).status is ExecStatus.FILLED
    asked = len(world.broker.what_ifs)
    # even a broker whose what-if would refuse everything cannot keep an exit from going out
    world.broker.what_if_answer = BrokerError("what-if refused", ErrorClass.REJECTION)
    with_margin_pct(world, 0.001)
    result = await world.executor().execute_exit(cand.strategy_id)
    assert result.status is ExecStatus.FILLED
    assert len(world.broker.what_ifs) == asked
