"""plan_entries: every limit refuses a candidate that breaches it and admits one just inside;
entries are admitted against the book including this cycle's earlier entries."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import polars as pl
import pytest
from strategy_chains import NOW, synthetic_chain

from core.config import Settings
from core.domain import AccountSummary
from core.domain.timezones import UTC_US
from core.risk.limits import (
    MAX_CONTRACTS_PER_DAY,
    Book,
    candidate_book,
    check_limits,
)
from core.strategy.candidates import Candidate
from core.strategy.pipeline import HELD_SCHEMA, EntryPlan, plan_entries

ACCOUNT = AccountSummary("DU0000001", 100_000.0, 200_000.0, 90_000.0, 0.0)
LOOSE_LIMITS: dict[str, Any] = {
    "max_portfolio_delta": 1000.0,
    "max_underlying_delta": 1000.0,
    "max_concentration_pct": 100.0,
    "max_correlated_exposure_pct": 100.0,
    "max_buying_power_pct": 100.0,
    "max_open_strategies": 500,
    "max_new_strategies_per_day": 100,
}
LIMIT_FIELDS = {
    "portfolio_delta": "max_portfolio_delta",
    "underlying_delta": "max_underlying_delta",
    "concentration": "max_concentration_pct",
    "correlated_exposure": "max_correlated_exposure_pct",
    "buying_power": "max_buying_power_pct",
    "open_strategies": "max_open_strategies",
    "new_strategies_today": "max_new_strategies_per_day",
}


def make_settings(limits: dict[str, Any] | None = None, **strategies: Any) -> Settings:
    st = {
        "min_score": 0.0,
        "min_credit_to_width": 0.05,
        "wing_width": {"SPY": 5.0, "QQQ": 5.0},
        "enabled": ["bull_put_spread"],
        **strategies,
    }
    return Settings(strategies=st, limits={**LOOSE_LIMITS, **(limits or {})})


def held_book() -> Book:
    """A short-put spread on SPY (delta +3, max loss 4,000, opened today) and one on QQQ."""
    legs = pl.DataFrame(
        {
            "strategy_id": ["old-spy", "old-qqq"],
            "underlying": ["SPY", "QQQ"],
            "quantity": [-10, -2],
            "delta": [-0.30, -0.25],
            "multiplier": [100, 100],
            "strike": [480.0, 400.0],
        }
    )
    strategies = pl.DataFrame(
        {
            "strategy_id": ["old-spy", "old-qqq"],
            "underlying": ["SPY", "QQQ"],
            "max_loss": [4_000.0, 900.0],
            "buying_power": [4_000.0, 900.0],
            "opened_at": [NOW - timedelta(hours=1), NOW - timedelta(days=3)],
        }
    ).with_columns(pl.col("opened_at").cast(UTC_US))
    return Book(legs, strategies)


def plan(
    settings: Settings,
    book: Book | None = None,
    account: AccountSummary = ACCOUNT,
    **kw: Any,
) -> EntryPlan:
    return plan_entries(
        synthetic_chain(), book or held_book(), account, settings, None, None, NOW, **kw
    )


def the_candidate() -> Candidate:
    p = plan(make_settings())
    assert len(p.accepted) == 1 and not p.rejections
    return p.accepted[0]


def measured(cand: Candidate, limit: str) -> float:
    legs, strat = cand.limit_frames(NOW)
    checks = check_limits(
        held_book(), candidate_book(legs, strat), ACCOUNT, make_settings().limits, NOW
    ).checks
    row = checks.filter(pl.col("limit") == limit).row(0, named=True)
    assert row["with_candidate"] > row["current"]  # the candidate adds to the measure
    return float(row["with_candidate"])


@pytest.mark.parametrize("limit", list(LIMIT_FIELDS))
def test_each_limit_rejects_a_breach_and_accepts_just_inside(limit: str) -> None:
    cand = the_candidate()
    value = measured(cand, limit)
    field = LIMIT_FIELDS[limit]
    integral = limit in ("open_strategies", "new_strategies_today")
    inside = int(value) if integral else value
    breach = int(value) - 1 if integral else value * (1 - 1e-6)

    ok = plan(make_settings({field: inside}))
    assert [c.strategy_id for c in ok.accepted] == [cand.strategy_id] and not ok.rejections

    refused = plan(make_settings({field: breach}))
    assert refused.accepted == []
    assert len(refused.rejections) == 1
    bad = refused.rejections[0].rejections
    assert bad["limit"].to_list() == [limit]
    assert bad["with_candidate"][0] == pytest.approx(value)
    assert bad["cap"][0] == pytest.approx(breach)


def test_correlated_exposure_counts_unmeasured_underlyings_as_correlated() -> None:
    cand = the_candidate()
    legs, strat = cand.limit_frames(NOW)
    checks = check_limits(
        held_book(), candidate_book(legs, strat), ACCOUNT, make_settings().limits, NOW
    ).checks
    conc = checks.filter(pl.col("limit") == "concentration")["with_candidate"][0]
    corr = checks.filter(pl.col("limit") == "correlated_exposure")["with_candidate"][0]
    assert corr == pytest.approx(conc + 0.9)  # + QQQ's 900 USD of 100,000


def test_hard_cap_per_order_admits_50_contracts_and_max_loss_scales_with_the_account() -> None:
    """25 units (the most `contracts_per_entry` allows) x 2 legs = 50 contracts, the
    absolute cap; their max loss fits 10 % of a 200k account but not of a 100k one."""
    big = replace(ACCOUNT, net_liquidation=200_000.0)
    ok = plan(make_settings(contracts_per_entry=25), account=big)
    assert len(ok.accepted) == 1 and ok.accepted[0].quantity == 25
    assert 10_000 < ok.accepted[0].max_loss <= 20_000
    refused = plan(make_settings(contracts_per_entry=25))
    assert refused.accepted == []
    bad = refused.rejections[0].rejections
    assert bad["limit"].to_list() == ["hard_max_loss_per_order"] and bad["hard"].all()


def test_hard_cap_per_day_counts_what_was_already_sent() -> None:
    inside = plan(make_settings(), day_contracts=MAX_CONTRACTS_PER_DAY - 2)
    assert len(inside.accepted) == 1
    refused = plan(make_settings(), day_contracts=MAX_CONTRACTS_PER_DAY - 1)
    assert refused.rejections[0].rejections["limit"].to_list() == ["hard_contracts_per_day"]


def test_entries_of_one_cycle_count_against_each_other() -> None:
    """SPY and QQQ each fit alone; with room for one more strategy, only the best goes."""
    chain = pl.concat(
        [synthetic_chain(), synthetic_chain(underlying="QQQ", spot=420.0, con_base=900_000)]
    )
    settings = make_settings({"max_open_strategies": 3})  # 2 held + 1
    p = plan_entries(chain, held_book(), ACCOUNT, settings, None, None, NOW)
    assert len(p.accepted) == 1 and len(p.rejections) == 1
    assert p.rejections[0].rejections["limit"].to_list() == ["open_strategies"]
    scores = {c.underlying: c.score for c in p.candidates.eligible}
    assert p.accepted[0].underlying == max(scores, key=lambda u: scores[u])
    both = plan_entries(chain, held_book(), ACCOUNT, make_settings(), None, None, NOW)
    assert {c.underlying for c in both.accepted} == {"SPY", "QQQ"}


def test_one_entry_per_underlying_per_cycle() -> None:
    p = plan(make_settings(enabled=["iron_condor", "bull_put_spread", "bear_call_spread"]))
    assert len(p.accepted) == 1 and p.accepted[0].score == max(
        c.score for c in p.candidates.eligible
    )
    assert p.skipped["reason"].str.contains("already has an entry this cycle").sum() == 2


def test_held_structures_are_not_doubled_and_reused_ids_get_a_nonce() -> None:
    cand = the_candidate()
    held = pl.DataFrame(
        {
            "strategy_id": [cand.strategy_id],
            "underlying": ["SPY"],
            "strategy_type": ["bull_put_spread"],
            "expiry": [cand.expiry],
            "status": ["OPEN"],
        },
        schema=HELD_SCHEMA,
    )
    p = plan(make_settings(), held=held)
    assert p.accepted == [] and "already held or pending" in p.skipped["reason"][0]
    closed = held.with_columns(status=pl.lit("CLOSED"))
    again = plan(make_settings(), held=closed)
    assert len(again.accepted) == 1
    assert again.accepted[0].nonce == 1 and again.accepted[0].strategy_id != cand.strategy_id


def test_empty_chain_plans_nothing() -> None:
    p = plan_entries(pl.DataFrame(), held_book(), ACCOUNT, make_settings(), None, None, NOW)
    assert p.accepted == [] and p.rejections == [] and p.skipped.is_empty()
