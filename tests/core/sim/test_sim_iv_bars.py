"""Historical bars by whatToShow: the simulator's OPTION_IMPLIED_VOLATILITY bars are the
ATM 30-day IV of the same surface its option quotes come from."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import numpy as np
import pytest
from sim_world import OPEN, make_market

from core.clock import SimClock
from core.domain import Contract
from core.sim import MarketSimulator, SimExchange
from core.sim.exchange import SimExchangeError
from core.sim.market import IMPLIED_VOL
from core.sim.volsurface import RISK_FREE, implied_vol

THIRTY_DAYS = 30.0 / 365.0


def _quoted_atm_30d_iv(market: MarketSimulator, symbol: str) -> float:
    """What the option surface quotes for a 30-day option struck at the forward, now."""
    j = market.underlyings.index(symbol)
    spot = market.price(symbol)
    q = market.u_profiles[j].dividend_yield
    forward = spot * math.exp((RISK_FREE - q) * THIRTY_DAYS)
    iv = implied_vol(
        np.array([spot]), np.array([forward]), np.array([THIRTY_DAYS]), RISK_FREE,
        np.array([q]), np.array([market.vix()]), np.array([market.u_profiles[j].iv_beta]),
    )  # fmt: skip
    return float(iv[0])


@pytest.mark.parametrize("symbol", ["SPY", "IWM"])
def test_iv_bar_close_is_the_quoted_30_day_atm_iv(
    market: MarketSimulator, clock: SimClock, symbol: str
) -> None:
    clock.set(OPEN + timedelta(minutes=47))
    stock = Contract.stock(symbol)
    bars = market.bars(stock, end=clock.now(), duration=timedelta(minutes=30), what=IMPLIED_VOL)
    assert len(bars) == 30 and bars[-1].time == clock.now() - timedelta(minutes=1)
    assert bars[-1].close == pytest.approx(_quoted_atm_30d_iv(market, symbol), rel=1e-12)
    assert all(0.03 < b.low <= min(b.open, b.close) <= max(b.open, b.close) <= b.high < 3.0
               for b in bars)  # fmt: skip
    assert all(b.volume == 0 for b in bars)
    # consecutive minutes chain: each bar opens where the previous one closed
    assert all(a.close == b.open for a, b in pairwise(bars))
    # VIX (as quoted, to the cent) times the underlying's IV beta
    j = market.underlyings.index(symbol)
    assert bars[-1].close == pytest.approx(market.vix() / 100 * market.u_profiles[j].iv_beta)


def test_daily_iv_bars_cover_history_sessions_and_close_at_the_close(clock: SimClock) -> None:
    market = make_market(clock, regime=None, history=10)
    spy = Contract.stock("SPY")
    daily = market.bars(
        spy, end=clock.now(), duration=timedelta(days=30), bar_size="1 day", what=IMPLIED_VOL
    )
    assert len(daily) == 10  # every history session, none for today (still trading)
    assert daily[-1].time == datetime(2026, 2, 27, 14, 30, tzinfo=UTC)  # Friday's open
    minutes = market.bars(
        spy, end=datetime(2026, 2, 27, 21, 0, tzinfo=UTC), duration=timedelta(hours=8),
        what=IMPLIED_VOL,
    )  # fmt: skip
    assert daily[-1].open == minutes[0].open and daily[-1].close == minutes[-1].close
    assert daily[-1].high == max(b.high for b in minutes)
    assert daily[-1].low == min(b.low for b in minutes)
    # deterministic for a seed: a second simulator gives the same numbers
    again = make_market(SimClock(clock.now()), regime=None, history=10).bars(
        spy, end=clock.now(), duration=timedelta(days=30), bar_size="1 day", what=IMPLIED_VOL
    )
    assert again == daily


def test_midpoint_equals_trades_and_bad_requests_are_named(
    market: MarketSimulator, exchange: SimExchange, clock: SimClock
) -> None:
    clock.set(OPEN + timedelta(minutes=20))
    spy = Contract.stock("SPY")
    end, dur = clock.now(), timedelta(minutes=15)
    assert market.bars(spy, end=end, duration=dur, what="MIDPOINT") == market.bars(
        spy, end=end, duration=dur
    )
    with pytest.raises(ValueError, match="whatToShow 'BID_ASK' is not supported"):
        market.bars(spy, end=end, duration=dur, what="BID_ASK")
    with pytest.raises(ValueError, match="needs an optionable underlying"):
        market.bars(Contract.index("VIX"), end=end, duration=dur, what=IMPLIED_VOL)
    with pytest.raises(SimExchangeError) as bad:
        exchange.bars(market.front_future("ES"), end=end, duration=dur, what=IMPLIED_VOL)
    assert bad.value.code == 321
    got = exchange.bars(spy, end=end, duration=dur, what=IMPLIED_VOL)
    assert got == market.bars(spy, end=end, duration=dur, what=IMPLIED_VOL) and len(got) == 15
