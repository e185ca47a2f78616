"""risk_book: the limits' view of a real ledger after entries, pending orders and exits."""

from __future__ import annotations

import math

import polars as pl
import pytest
from exec_world import make_world

from core.config import LimitSettings
from core.domain import AccountSummary
from core.execution.results import ExecStatus
from core.risk.limits import candidate_book, check_limits
from core.strategy.pipeline import held_structures, risk_book


async def test_risk_book_reflects_fills_pending_entries_and_closes() -> None:
    world = await make_world()
    cand = await world.candidate(quantity=2)
    ex = world.executor()
    entry = await ex.execute_entry(cand)
    assert entry.status is ExecStatus.FILLED
    puts = [
        leg
        for leg in cand.legs
        if leg.contract.right is not None and leg.contract.right.value == "P"
    ]
    pending = ex.book.open_strategy(
        "bull_put_spread",
        "SPY",
        [
            spec
            for spec in cand.leg_specs()
            if spec.contract.right and spec.contract.right.value == "P"
        ],
        quantity=3,
        nonce=7,
    )
    held = held_structures(ex.book.strategies(), ex.book.legs())
    assert held.filter(pl.col("strategy_id") == cand.strategy_id).row(0, named=True) == {
        "strategy_id": cand.strategy_id,
        "underlying": "SPY",
        "strategy_type": "iron_condor",
        "expiry": cand.expiry,
        "status": "OPEN",
    }
    quotes = await world.broker.quotes([leg.contract for leg in cand.legs])
    deltas = {q.contract.con_id: q.delta for q in quotes}
    now = world.clock.now()

    rb = risk_book(ex.book.leg_positions(open_only=False), ex.book.strategies(), deltas, now)
    s = {r["strategy_id"]: r for r in rb.strategies.iter_rows(named=True)}
    # the filled condor: worst case is one wing's width less the credit received
    assert s[cand.strategy_id]["max_loss"] == pytest.approx((cand.width - entry.credit) * 200)
    assert s[cand.strategy_id]["buying_power"] == s[cand.strategy_id]["max_loss"]
    # the pending spread counts at full intended size and without premium
    assert s[pending]["max_loss"] == pytest.approx(cand.width * 300)
    legs = rb.legs.sort("strategy_id", "strike")
    held_legs = legs.filter(pl.col("strategy_id") == cand.strategy_id)
    assert sorted(held_legs["quantity"].to_list()) == sorted(2 * leg.ratio for leg in cand.legs)
    assert held_legs["delta"].to_list() == [
        deltas[c]
        for c in held_legs.join(
            ex.book.legs(cand.strategy_id).select("strike", "con_id"), on="strike"
        )["con_id"].to_list()
    ]
    pend = legs.filter(pl.col("strategy_id") == pending)
    assert sorted(pend["quantity"].to_list()) == sorted(3 * leg.ratio for leg in puts)

    # after closing, the condor still counts toward today's new strategies, not exposure
    assert (await ex.execute_exit(cand.strategy_id)).status is ExecStatus.FILLED
    rb2 = risk_book(ex.book.leg_positions(open_only=False), ex.book.strategies(), deltas, now)
    closed = rb2.strategies.filter(pl.col("strategy_id") == cand.strategy_id)
    assert closed["closed_at"].is_not_null().all()
    assert cand.strategy_id not in rb2.open_strategies["strategy_id"].to_list()
    assert cand.strategy_id not in rb2.open_legs["strategy_id"].to_list()


async def test_only_entries_that_filled_count_toward_new_strategies_per_day() -> None:
    """An entry that never filled (cancelled) is not a new strategy; one that filled counts
    for the day even after it closed."""
    world = await make_world()
    cand = await world.candidate()
    filled = await world.executor().execute_entry(cand)
    assert filled.status is ExecStatus.FILLED
    assert (await world.executor().execute_exit(cand.strategy_id)).status is ExecStatus.FILLED
    other = (await world.candidate()).with_nonce(1, world.clock.now().date())
    floor = math.ceil(other.credit / other.width * 100 + 5) / 100  # above the mid: no order
    unfilled = await world.executor(min_credit_to_width=floor).execute_entry(other)
    assert unfilled.status is ExecStatus.NO_PRICE
    ex = world.executor()
    status = dict(ex.book.strategies().select("strategy_id", "status").iter_rows())
    assert status == {cand.strategy_id: "CLOSED", other.strategy_id: "CANCELLED"}

    now = world.clock.now()
    rb = risk_book(ex.book.leg_positions(open_only=False), ex.book.strategies(), {}, now)
    assert rb.strategies["strategy_id"].to_list() == [cand.strategy_id]
    legs, strat = (await world.candidate()).with_nonce(2, now.date()).limit_frames(now)
    result = check_limits(
        rb,
        candidate_book(legs, strat),
        AccountSummary("DU0000001", 100_000.0, 200_000.0, 100_000.0, 0.0),
        LimitSettings(max_new_strategies_per_day=2),
        now,
    )
    day = result.checks.filter(pl.col("limit") == "new_strategies_today").row(0, named=True)
    assert (day["current"], day["with_candidate"], day["ok"]) == (1.0, 2.0, True)
