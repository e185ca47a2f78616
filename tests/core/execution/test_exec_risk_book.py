"""risk_book: the limits' view of a real ledger after entries, pending orders and exits."""

from __future__ import annotations

import polars as pl
import pytest
from exec_world import make_world

from core.execution.results import ExecStatus
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
