"""MarketSimulator: determinism, lead-lag, VIX, regimes, chains, quotes and bars."""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest
from sim_world import OPEN, make_market

from core.clock import SimClock
from core.domain import Bar, Contract, Right
from core.domain.regimes import Regime
from core.sim import MarketSimulator, RegimeSchedule
from core.sim.instruments import decode_option_id
from core.sim.volsurface import option_half_spread

DAY = date(2026, 3, 2)


def _bars_array(bars: list[Bar]) -> np.ndarray:
    return np.array([(b.time.timestamp(), b.open, b.high, b.low, b.close, b.volume) for b in bars])


def _fingerprint(seed: int) -> str:
    """Hash of every quote every 5 minutes and every minute bar of one session."""
    clk = SimClock(OPEN)
    m = MarketSimulator(clk, seed=seed, history_sessions=2, regimes=RegimeSchedule(seed=seed))
    expiries = m.expirations("SPY")[:2]
    spot = round(m.price("SPY"))
    opts = [
        Contract.option("SPY", e, k, r)
        for e in expiries
        for k in range(spot - 25, spot + 26, 5)
        for r in (Right.PUT, Right.CALL)
    ]
    contracts = [
        *(Contract.stock(s) for s in m.underlyings),
        *(m.front_future(f) for f in m.futures),
        Contract.index("VIX"),
        *opts,
    ]
    h = hashlib.sha256()
    for minute in range(0, 391, 5):
        clk.set(OPEN + timedelta(minutes=minute))
        for q in m.quotes(contracts):
            fields = (q.bid, q.ask, q.last, q.iv, q.delta, q.gamma, q.vega, q.theta)
            h.update(np.array(fields, dtype=np.float64).tobytes())
    for c in contracts[:7]:
        bars = m.bars(c, end=clk.now(), duration=timedelta(hours=24))
        h.update(_bars_array(bars).tobytes())
    return h.hexdigest()


def test_one_seeded_day_is_bit_for_bit_reproducible() -> None:
    first, second = _fingerprint(11), _fingerprint(11)
    assert first == second
    assert _fingerprint(12) != first


def test_start_prices_are_realistic(market: MarketSimulator) -> None:
    assert 600 < market.price("SPY") < 760
    assert 540 < market.price("QQQ") < 690
    assert 220 < market.price("IWM") < 280
    assert 9.9 < market.price("ES") / market.price("SPY") < 10.2
    assert 9 <= market.vix() <= 30
    assert market.regime is Regime.CALM


def _returns_by_time(m: MarketSimulator, contract: Contract, days: int) -> dict[float, float]:
    bars = m.bars(contract, end=m.clock.now(), duration=timedelta(days=days))
    closes = {b.time.timestamp(): b.close for b in bars}
    return {t: math.log(c / closes[t - 60]) for t, c in closes.items() if t - 60 in closes}


@pytest.mark.parametrize("lag", [2, 4])
def test_futures_lead_the_underlying_by_the_configured_lag(lag: int) -> None:
    clk = SimClock(datetime(2026, 3, 6, 21, 30, tzinfo=UTC))  # after Friday's close
    m = make_market(clk, futures_lead_minutes=lag)
    und = _returns_by_time(m, Contract.stock("SPY"), 5)
    fut = _returns_by_time(m, m.front_future("ES"), 5)
    corr = {}
    for k in range(-6, 7):
        pairs = [(fut[t - 60 * k], r) for t, r in und.items() if t - 60 * k in fut]
        a = np.array(pairs)
        corr[k] = float(np.corrcoef(a[:, 0], a[:, 1])[0, 1])
    assert max(corr, key=lambda k: corr[k]) == lag
    assert corr[lag] > 0.8
    assert abs(corr[0]) < 0.3


def test_vix_is_negatively_correlated_with_returns() -> None:
    clk = SimClock(datetime(2026, 3, 6, 21, 30, tzinfo=UTC))
    m = make_market(clk, regime=None)
    spy = _returns_by_time(m, Contract.stock("SPY"), 5)
    vix = _returns_by_time(m, Contract.index("VIX"), 5)
    common = sorted(set(spy) & set(vix))
    assert len(common) > 1000
    c = np.corrcoef([spy[t] for t in common], [vix[t] for t in common])[0, 1]
    assert c < -0.5


def _atm_put(m: MarketSimulator) -> Contract:
    expiry = next(e for e in m.expirations("SPY") if (e - m.trading_day()).days >= 20)
    found = m.qualify(Contract.option("SPY", expiry, round(m.price("SPY")), Right.PUT))
    assert found is not None
    return found


def test_crash_day_drops_more_than_3_percent_with_an_iv_spike() -> None:
    crash = date(2026, 3, 4)
    clk = SimClock(datetime(2026, 3, 4, 14, 45, tzinfo=UTC))  # 09:45 ET
    m = make_market(clk, regimes=RegimeSchedule.fixed(Regime.CALM, {crash: Regime.CRASH}))
    assert m.regime is Regime.CRASH
    put = _atm_put(m)
    iv_early, vix_early = m.quote(put).iv, m.vix()
    clk.set(datetime(2026, 3, 4, 21, 15, tzinfo=UTC))  # 16:15 ET, after the close
    daily = m.bars(Contract.stock("SPY"), end=clk.now(), duration=timedelta(days=1),
                   bar_size="1 day")  # fmt: skip
    assert len(daily) == 1
    assert daily[0].close / daily[0].open - 1 < -0.03
    clk.set(datetime(2026, 3, 4, 21, 30, tzinfo=UTC))
    assert m.quote(put).iv > 1.3 * iv_early
    assert m.vix() > 1.3 * vix_early
    # the next day is calm by schedule: VIX decays but stays elevated at the open
    clk.set(datetime(2026, 3, 5, 14, 31, tzinfo=UTC))
    assert m.regime is Regime.CALM
    assert m.vix() > vix_early


def test_regimes_change_realised_vol() -> None:
    def day_range(regime: Regime) -> float:
        clk = SimClock(datetime(2026, 3, 6, 21, 30, tzinfo=UTC))
        m = make_market(clk, regime=regime.value)
        rets = list(_returns_by_time(m, Contract.stock("SPY"), 4).values())
        return float(np.std(rets))

    assert day_range(Regime.HIGH_VOL) > 1.8 * day_range(Regime.CALM)


def test_futures_trade_overnight_underlyings_do_not(
    clock: SimClock, market: MarketSimulator
) -> None:
    clock.set(datetime(2026, 3, 2, 21, 30, tzinfo=UTC))  # 16:30 ET, after the close
    spy_close, es_close = market.price("SPY"), market.price("ES")
    clock.set(datetime(2026, 3, 3, 4, 0, tzinfo=UTC))  # 23:00 ET, Globex open
    assert market.price("SPY") == spy_close
    assert market.price("ES") != es_close
    assert market.is_open(market.front_future("ES"))
    assert not market.is_open(Contract.stock("SPY"))
    es_bars = market.bars(market.front_future("ES"), end=datetime(2026, 3, 2, 23, 0, tzinfo=UTC),
                          duration=timedelta(hours=30))  # fmt: skip
    assert len(es_bars) == 1380  # one full 23-hour Globex session
    spy_bars = market.bars(Contract.stock("SPY"), end=clock.now(), duration=timedelta(hours=30))
    assert len(spy_bars) == 390


def test_chain_follows_the_calendar_and_strike_grid() -> None:
    clk = SimClock(datetime(2026, 3, 30, 13, 31, tzinfo=UTC))
    m = make_market(clk)
    (chain,) = m.option_chains("SPY")
    assert date(2026, 4, 2) in chain.expirations
    assert date(2026, 4, 3) not in chain.expirations
    assert {date(2026, 4, 17), date(2026, 5, 15), date(2026, 6, 18)} <= set(chain.expirations)
    assert chain.multiplier == 100 and chain.trading_class == "SPY"
    strikes = np.array(chain.strikes)
    ref = m.price("SPY")
    near = strikes[np.abs(strikes / ref - 1) < 0.1]
    far = strikes[np.abs(strikes / ref - 1) > 0.15]
    assert set(np.diff(near)) == {1.0}
    assert len(far) > 10 and np.all(far % 5 == 0)
    iwm = np.array(m.option_chains("IWM")[0].strikes)
    assert set(np.diff(iwm)) == {1.0}
    assert m.option_chains("NOPE") == []


def test_qualify_and_con_ids(market: MarketSimulator) -> None:
    exp = market.expirations("SPY")[3]
    k = float(round(market.price("SPY")))
    c = market.qualify(Contract.option("SPY", exp, k, "C"))
    assert c is not None and c.con_id > 0 and c.multiplier == 100
    assert c.local_symbol.startswith("SPY   ")
    assert market.contract_by_id(c.con_id) == c
    decoded = decode_option_id(c.con_id)
    assert decoded is not None and decoded[2] is Right.CALL and decoded[3] == k
    put = market.qualify(Contract.option("SPY", exp, k, "P"))
    assert put is not None and put.con_id != c.con_id
    assert market.qualify(Contract.option("SPY", exp, k + 0.5, "C")) is None  # off grid
    assert market.qualify(Contract.option("SPY", exp, k * 3, "C")) is None  # not listed
    assert market.qualify(Contract.option("SPY", date(2026, 3, 4), k, "C")) is None  # no expiry
    assert market.qualify(Contract.option("XYZ", exp, k, "C")) is None
    fut = market.qualify(Contract.future("ES", date(2026, 6, 1), 50))
    assert fut is not None and fut.expiry == date(2026, 6, 18) and fut.local_symbol == "ESM6"
    assert market.contract_by_id(fut.con_id) == fut
    spy = market.qualify(Contract.stock("SPY"))
    assert spy is not None and spy.con_id == 756733
    vix = market.qualify(Contract.index("VIX"))
    assert vix is not None and market.contract_by_id(vix.con_id) == vix
    assert market.contract_by_id(123) is None


def test_option_quotes_have_skew_term_structure_and_sane_greeks(market: MarketSimulator) -> None:
    s = market.price("SPY")
    exps = market.expirations("SPY")
    near = next(e for e in exps if (e - DAY).days >= 25)
    far = next(e for e in exps if (e - DAY).days >= 120)

    def q(e: date, k: float, r: str):
        c = market.qualify(Contract.option("SPY", e, k, r))
        assert c is not None
        return market.quote(c)

    atm = q(near, round(s), "P")
    otm_put, otm_call = q(near, round(s * 0.9), "P"), q(near, round(s * 1.1 / 5) * 5, "C")
    assert otm_put.iv > atm.iv > otm_call.iv  # put skew
    assert q(far, round(s), "P").iv > atm.iv  # calm: upward-sloping term structure
    call = q(near, round(s), "C")
    assert 0 < call.delta < 1 and -1 < atm.delta < 0
    assert call.gamma > 0 and call.vega > 0 and call.theta < 0
    assert atm.bid < atm.ask and atm.bid > 0 and atm.underlying_price == s
    assert call.bid_size > 0 and not atm.stale and atm.has_greeks


def test_spreads_widen_with_vol_and_moneyness() -> None:
    mid = np.full(4, 2.0)
    iv = np.array([0.12, 0.24, 0.12, 0.12])
    m_sd = np.array([0.0, 0.0, 1.0, 3.0])
    half = option_half_spread(mid, iv, m_sd)
    assert half[1] > half[0] and half[3] > half[2] > half[0]

    def atm_spread(regime: str) -> float:
        clk = SimClock(OPEN + timedelta(hours=3))
        m = make_market(clk, regime=regime)
        quote = m.quote(_atm_put(m))
        return (quote.ask - quote.bid) / quote.mid

    assert atm_spread("high_vol") > atm_spread("calm")


def test_bars_never_peek_and_aggregate_consistently(
    clock: SimClock, market: MarketSimulator
) -> None:
    clock.set(OPEN + timedelta(minutes=47, seconds=30))
    spy = Contract.stock("SPY")
    bars = market.bars(spy, end=OPEN + timedelta(hours=5), duration=timedelta(hours=6))
    assert len(bars) == 47 and bars[-1].time == OPEN + timedelta(minutes=46)
    assert all(b.low <= min(b.open, b.close) <= max(b.open, b.close) <= b.high for b in bars)
    assert bars[-1].close == market.price("SPY")
    five = market.bars(spy, end=clock.now(), duration=timedelta(hours=1), bar_size="5 mins")
    assert len(five) == 9  # the 09:30..09:45 bucket is complete, 10:15 is not
    assert five[0].open == bars[0].open and five[0].close == bars[4].close
    assert five[0].high == max(b.high for b in bars[:5])
    assert five[0].volume == sum(b.volume for b in bars[:5])
    opt = _atm_put(market)
    opt_bars = market.bars(opt, end=clock.now(), duration=timedelta(minutes=10))
    assert len(opt_bars) == 9 and all(b.close > 0 for b in opt_bars)  # 10:08..10:16
    assert market.bars(spy, end=OPEN - timedelta(days=60), duration=timedelta(days=1)) == []


def test_bad_inputs_give_clear_errors(market: MarketSimulator) -> None:
    with pytest.raises(ValueError, match="unknown symbol 'XYZ'"):
        market.price("XYZ")
    with pytest.raises(ValueError, match="bar_size '7 weeks'"):
        market.bars(
            Contract.stock("SPY"), end=OPEN, duration=timedelta(hours=1), bar_size="7 weeks"
        )
    with pytest.raises(ValueError, match="duration must be positive"):
        market.bars(Contract.stock("SPY"), end=OPEN, duration=timedelta(0))
    with pytest.raises(ValueError, match="no security definition"):
        market.quote(Contract.option("SPY", date(2026, 3, 4), 600, "P"))
    with pytest.raises(ValueError, match="tz-aware"):
        market.price("SPY", at=datetime(2026, 3, 2, 15, 0))
    with pytest.raises(ValueError, match="strike must be > 0"):
        Contract.option("SPY", date(2026, 3, 20), -5, "P")
    with pytest.raises(ValueError, match="leading_future maps to futures not simulated"):
        MarketSimulator(market.clock, leading_future={"SPY": "ZZ"})
    with pytest.raises(ValueError, match="is not a regime"):
        RegimeSchedule(overrides={DAY: "meltup"})


def test_paths_do_not_depend_on_access_order_or_cache_size() -> None:
    target = datetime(2026, 3, 13, 21, 30, tzinfo=UTC)
    jump = SimClock(target)
    direct = make_market(jump, regime=None, cache_sessions=2)
    walk_clock = SimClock(OPEN)
    walked = make_market(walk_clock, regime=None)
    while walk_clock.now() + timedelta(hours=6) < target:
        walked.price("SPY")
        walk_clock.advance(timedelta(hours=6))
    walk_clock.set(target)
    for c in (Contract.stock("QQQ"), walked.front_future("NQ"), Contract.index("VIX")):
        a = direct.bars(c, end=target, duration=timedelta(days=12))
        b = walked.bars(c, end=target, duration=timedelta(days=12))
        assert len(a) > 3000 and a == b
