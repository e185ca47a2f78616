"""Candidate construction and scoring: prices, risk, model numbers and the score formula."""

from __future__ import annotations

import math
from datetime import timedelta

import polars as pl
import pytest
from scipy.special import ndtr
from strategy_chains import NOW, expiry_for, synthetic_chain

from core.analysis.futures import InsufficientData, LeadingSignal
from core.config import Settings
from core.pricing import bs_price
from core.strategy.candidates import Candidate, EntrySignals, build_candidates, model_at_credit


def settings(**strategies: object) -> Settings:
    base = {"min_score": 0.0, "min_credit_to_width": 0.05, "wing_width": {"SPY": 5.0}}
    return Settings(strategies={**base, **strategies})


def by_type(cands: list[Candidate]) -> dict[str, Candidate]:
    return {c.strategy_type: c for c in cands}


def signal(direction: str | None, age_min: float = 1.0) -> LeadingSignal:
    return LeadingSignal(
        underlying="SPY",
        future="ES",
        ts=NOW - timedelta(minutes=age_min),
        days_of_data=20,
        best_lag_min=2,
        best_corr=0.4,
        beta=1.0,
        lead_move_pct=0.2,
        overnight_move_pct=0.1,
        futures_momentum_pct=0.3,
        underlying_momentum_pct=0.1,
        momentum_gap_pct=0.2,
        expected_move_pct=0.2,
        direction=direction,
    )


def test_three_structures_with_consistent_prices_and_risk() -> None:
    cs = build_candidates(synthetic_chain(), NOW, settings())
    got = by_type(cs.eligible)
    assert set(got) == {"iron_condor", "bull_put_spread", "bear_call_spread"}
    ic, bps, bcs = got["iron_condor"], got["bull_put_spread"], got["bear_call_spread"]
    assert ic.expiry == expiry_for(NOW, 45) and ic.dte == 45
    # an iron condor is the two verticals: same strikes, credits add, width is one wing
    assert {leg.contract.con_id for leg in ic.legs} == {
        leg.contract.con_id for leg in (*bps.legs, *bcs.legs)
    }
    assert ic.credit == pytest.approx(bps.credit + bcs.credit)
    assert ic.width == bps.width == bcs.width == 5.0
    for c in (ic, bps, bcs):
        short = [leg for leg in c.legs if leg.ratio < 0]
        long_ = [leg for leg in c.legs if leg.ratio > 0]
        assert c.credit == pytest.approx(sum(x.mid for x in short) - sum(x.mid for x in long_))
        assert c.credit_natural == pytest.approx(
            sum(x.bid for x in short) - sum(x.ask for x in long_)
        )
        assert c.max_loss == pytest.approx((c.width - c.credit) * 100)
        assert c.buying_power == c.max_loss
        assert min(abs(x.delta) for x in short) >= 0.16
        assert max(abs(x.delta) for x in short) <= 0.2
        assert c.strategy_id.split("-")[1] == "SPY"


def test_model_value_pop_and_expected_return_follow_the_documented_model() -> None:
    bps = by_type(build_candidates(synthetic_chain(), NOW, settings()).eligible)["bull_put_spread"]
    ks = next(x.contract.strike for x in bps.legs if x.ratio < 0)
    kl = next(x.contract.strike for x in bps.legs if x.ratio > 0)
    assert ks is not None and kl is not None
    F, T, s = bps.forward, bps.T, bps.model_iv
    assert s == pytest.approx(bps.atm_iv)
    value = float(bs_price(F, ks, T, 0, 0, s, False) - bs_price(F, kl, T, 0, 0, s, False))
    assert bps.model_value == pytest.approx(value)
    assert bps.expected_return_pct == pytest.approx((bps.credit - value) / bps.credit * 100)
    be = ks - bps.credit
    sd = s * math.sqrt(T)
    assert bps.pop == pytest.approx(float(ndtr((math.log(F / be) - sd * sd / 2) / sd)))
    assert bps.pop_source == "model"
    # put skew makes the wing richer than ATM vol says: selling it has positive expectation
    assert bps.expected_return_pct > 0
    # a better fill moves the prediction by exactly the price change
    pop2, ret2 = model_at_credit(bps, bps.credit + 0.10)
    assert ret2 == pytest.approx((bps.credit + 0.10 - value) / (bps.credit + 0.10) * 100)
    assert pop2 > bps.pop


def test_score_is_the_documented_weighted_sum_times_the_strategy_weight() -> None:
    st = settings()
    sig = EntrySignals(
        regimes={"SPY": "range_bound"}, iv_rank={"SPY": 70.0}, lead={"SPY": signal("up")}
    )
    got = by_type(build_candidates(synthetic_chain(), NOW, st, sig, {"iron_condor": 0.7}).eligible)
    w = st.strategies.score_weights
    total = sum(w.values())
    for name, c in got.items():
        comp = {
            "credit_to_width": min(c.credit / c.width / st.strategies.credit_to_width_full, 1.0),
            "prob_profit": c.pop,
            "iv_rank": 0.7,
            "regime": st.strategies.regime_fit[name]["range_bound"],
            "lead": st.strategies.lead_fit[name]["up"],
        }
        assert dict(c.components) == pytest.approx(comp)
        raw = sum(w[k] * comp[k] for k in w) / total
        assert c.score_raw == pytest.approx(raw)
        weight = 0.7 if name == "iron_condor" else 1.0
        assert c.weight == weight and c.score == pytest.approx(raw * weight)
        assert c.regime == "range_bound" and c.lead_direction == "up" and c.iv_rank == 70.0
    assert got["bull_put_spread"].components["lead"] == 1.0
    assert got["bear_call_spread"].components["lead"] == 0.0


def test_strategy_weights_are_bounded() -> None:
    st = settings()
    got = by_type(
        build_candidates(
            synthetic_chain(), NOW, st, None, {"iron_condor": 5.0, "bull_put_spread": 0.01}
        ).eligible
    )
    assert got["iron_condor"].weight == st.analysis.weight_max
    assert got["bull_put_spread"].weight == st.analysis.weight_min
    assert got["bear_call_spread"].weight == 1.0  # no weight yet: default


def test_unknown_inputs_score_neutral_and_are_noted() -> None:
    stale = EntrySignals(lead={"SPY": signal("up", age_min=120)})
    c = by_type(build_candidates(synthetic_chain(), NOW, settings(), stale).eligible)[
        "bull_put_spread"
    ]
    assert c.lead_direction == "unknown" and c.components["lead"] == 0.5
    assert c.components["iv_rank"] == 0.5 and c.iv_rank is None and c.regime == "unknown"
    assert any("stale" in n for n in c.notes) and any("iv_rank" in n for n in c.notes)
    short = EntrySignals(lead={"SPY": InsufficientData("SPY", 7, 3)})
    c2 = build_candidates(synthetic_chain(), NOW, settings(), short).eligible[0]
    assert any("have 3" in n for n in c2.notes)


def test_ineligible_candidates_stay_in_the_frame_with_the_reason() -> None:
    crash = EntrySignals(regimes={"SPY": "crash"})
    cs = build_candidates(synthetic_chain(), NOW, settings(), crash)
    assert cs.eligible == []
    assert cs.frame["status"].str.contains("regime crash vetoes").all()
    cs2 = build_candidates(synthetic_chain(), NOW, settings(min_credit_to_width=0.9))
    assert cs2.eligible == [] and cs2.frame["status"].str.starts_with("credit/width").all()
    cs3 = build_candidates(synthetic_chain(), NOW, settings(min_score=0.99))
    assert cs3.eligible == [] and cs3.frame["status"].str.starts_with("score").all()


def test_expiry_nearest_target_within_the_window_and_disabled_structures() -> None:
    chain = pl.concat(
        [synthetic_chain(dte=d, con_base=100_000 * (i + 1)) for i, d in enumerate((30, 42, 50, 70))]
    )
    cs = build_candidates(chain, NOW, settings(enabled=["bull_put_spread"]))
    assert {c.strategy_type for c in cs.eligible} == {"bull_put_spread"}
    assert {c.dte for c in cs.eligible} == {42}  # |42-45| < |50-45|; 30 and 70 outside 35..60
    none = build_candidates(synthetic_chain(dte=80), NOW, settings())
    assert none.eligible == [] and none.frame.is_empty()


def test_skew_numbers_are_recorded_on_the_candidate() -> None:
    c = build_candidates(synthetic_chain(), NOW, settings()).eligible[0]
    assert c.skew_source == "fit" and c.skew_reason == ""
    assert c.skew_norm is not None and c.rr25 is not None and c.put_call_ratio is not None
    assert c.put_target_delta == pytest.approx(0.18 + max(c.lean, 0.0) * 0.04)
    assert c.call_target_delta == pytest.approx(0.18 + max(-c.lean, 0.0) * 0.04)
    missing_iv = synthetic_chain(quote_iv=False).with_columns(
        bid=pl.lit(math.nan), ask=pl.lit(math.nan)
    )
    cs = build_candidates(missing_iv, NOW, settings())
    assert cs.eligible == []  # no prices: nothing to sell
    assert cs.skew["skew_source"].to_list() == ["neutral"]
