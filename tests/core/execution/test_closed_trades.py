"""Closed strategies become `trades` rows valued from their own fills."""

from __future__ import annotations

import pytest
from exec_world import make_world

from core.book.trades import record_closed_trades
from core.execution.results import ExecStatus


async def test_closed_condor_becomes_one_trade_valued_from_its_fills() -> None:
    world = await make_world()
    cand = await world.candidate(quantity=2)
    ex = world.executor()
    assert (await ex.execute_entry(cand)).status is ExecStatus.FILLED
    assert record_closed_trades(world.store) == 0  # still open: no trade yet
    assert (await ex.execute_exit(cand.strategy_id, urgent=True)).status is ExecStatus.FILLED

    assert record_closed_trades(world.store) == 1
    assert record_closed_trades(world.store) == 0  # idempotent
    trade = world.store.read("trades").collect().row(0, named=True)

    execs = world.exchange.executions()
    cash = sum(-e.signed_quantity * e.price * e.contract.multiplier for e in execs)
    commissions = sum(e.commission for e in execs)
    assert trade["strategy_id"] == cand.strategy_id
    assert trade["quantity"] == 2
    assert trade["pnl"] == pytest.approx(cash - commissions)
    assert trade["entry_credit"] > 0  # an iron condor is sold for a credit
    basis = trade["entry_credit"] * 100 * 2
    assert trade["pnl_pct"] == pytest.approx(trade["pnl"] / basis * 100)
    assert trade["exit_reason"] == "closed"  # no rule decision recorded in this test
    assert trade["regime"] != ""
    assert trade["holding_days"] >= 0
