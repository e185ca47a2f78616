"""`MarketSimulator`: prices, bars, quotes and reference data for the simulated world.

One object answers every market question the broker layer can ask, at the time of its
injected clock: the traded price of SPY, the ES front month, VIX, a quote with greeks for
any listed option, a BAG's net quote, minute bars over any window. Paths are generated
lazily one session at a time (see `paths.py`) and cached, so a backtest over a year costs
a few hundred vectorised passes, and the same seed + clock times give bit-identical
numbers in every run.

Time conventions: point k of a session grid is `t0 + 60 k` seconds; the price "at" a time
is the value at the last whole minute. Underlyings, options and VIX trade in regular
hours only (outside them they show the last regular-hours value); futures trade the
Globex session. Bars are returned only once complete (no peeking past the clock).
"""

from __future__ import annotations

import logging
import math
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Final

import numpy as np
from numpy.typing import NDArray

from core.clock import Clock
from core.config import Settings, SimSettings
from core.domain import Bar, ComboLeg, Contract, OptionChain, Quote, Right, SecType
from core.domain.regimes import Regime
from core.sim.calendar import (
    QUARTER_MONTHS,
    MarketCalendar,
    from_epoch,
    futures_local_symbol,
    option_local_symbol,
    to_epoch,
)
from core.sim.chains import listed_expiries, on_grid, strike_grid
from core.sim.instruments import (
    FutureProfile,
    UnderlyingProfile,
    decode_future_id,
    decode_option_id,
    future_con_id,
    future_profile,
    index_con_id,
    option_con_id,
    underlying_profile,
)
from core.sim.paths import DayPaths, DayState, PathModel, generate_day, initial_state
from core.sim.regimes import REGIME_SPECS, RegimeSchedule
from core.sim.volsurface import (
    OPTION_TICK,
    TERM_DAYS,
    atm_vol,
    moneyness_sd,
    option_half_spread,
    price_options,
    round_bid_ask,
)

log = logging.getLogger(f"v6.{__name__}")

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

YEAR_SECONDS: Final = 365.0 * 86400.0
FUTURES_CARRY: Final = 0.028  # r - q for equity-index futures (fair basis)
FUTURES_LISTED: Final = 5
OPTION_MULTIPLIER: Final = 100
DEFAULT_LEADS: Final = {"SPY": "ES", "QQQ": "NQ", "IWM": "RTY"}
_BAR_RE: Final = re.compile(r"^\s*(\d+)\s*(min|mins|hour|hours|day|days)\s*$")
IMPLIED_VOL: Final = "OPTION_IMPLIED_VOLATILITY"
WHAT_TO_SHOW: Final = ("TRADES", "MIDPOINT", IMPLIED_VOL)


def parse_bar_size(bar_size: str) -> int:
    """Bar length in seconds (0 means one bar per session), from IB's spelling."""
    m = _BAR_RE.match(bar_size)
    if not m or int(m.group(1)) <= 0:
        raise ValueError(
            f"bar_size {bar_size!r} is not supported; use e.g. '1 min', '5 mins', "
            "'1 hour' or '1 day'"
        )
    n, unit = int(m.group(1)), m.group(2)
    if unit.startswith("day"):
        if n != 1:
            raise ValueError(f"bar_size {bar_size!r}: only '1 day' is supported for daily bars")
        return 0
    return n * (60 if unit.startswith("min") else 3600)


@dataclass(frozen=True, slots=True)
class _Series:
    """Minute bars of one instrument over some sessions, as flat arrays."""

    time: IntArray
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: IntArray
    session: IntArray


class MarketSimulator:
    """The simulated market: deterministic for a seed, driven by an injected clock."""

    def __init__(
        self,
        clock: Clock,
        *,
        seed: int = 7,
        start: date | str = "2026-03-02",
        underlyings: Sequence[str] = ("SPY", "QQQ", "IWM"),
        futures: Sequence[str] = ("ES", "NQ", "RTY"),
        leading_future: Mapping[str, str] | None = None,
        volatility_index: str = "VIX",
        futures_lead_minutes: int = 2,
        regimes: RegimeSchedule | None = None,
        history_sessions: int = 60,
        weekly_expiries: int = 8,
        monthly_expiries: int = 12,
        cache_sessions: int = 40,
    ) -> None:
        self.clock = clock
        self.seed = int(seed)
        self.calendar = MarketCalendar()
        start_day = date.fromisoformat(start) if isinstance(start, str) else start
        self.start = self.calendar.next_session(start_day)
        self.underlyings: tuple[str, ...] = tuple(s.upper() for s in underlyings)
        self.futures: tuple[str, ...] = tuple(s.upper() for s in futures)
        self.volatility_index = volatility_index.upper()
        if not self.underlyings:
            raise ValueError("MarketSimulator needs at least one underlying")
        if len(self.underlyings) > 11:
            raise ValueError(f"at most 11 optionable underlyings, got {len(self.underlyings)}")
        if (
            len(set(self.underlyings + self.futures + (self.volatility_index,)))
            != len(self.underlyings) + len(self.futures) + 1
        ):
            raise ValueError(
                f"symbols must be unique across underlyings {self.underlyings}, futures "
                f"{self.futures} and the volatility index {self.volatility_index!r}"
            )
        if futures_lead_minutes < 0:
            raise ValueError(f"futures_lead_minutes must be >= 0, got {futures_lead_minutes}")
        if history_sessions < 0:
            raise ValueError(f"history_sessions must be >= 0, got {history_sessions}")
        self.lead_minutes = int(futures_lead_minutes)
        leads = dict(leading_future) if leading_future is not None else dict(DEFAULT_LEADS)
        leads = {u.upper(): f.upper() for u, f in leads.items()}
        bad = {u: f for u, f in leads.items() if u in self.underlyings and f not in self.futures}
        if bad:
            raise ValueError(
                f"leading_future maps to futures not simulated: {bad}; simulated futures are "
                f"{self.futures}"
            )
        self.leading_future = {u: leads[u] for u in self.underlyings if u in leads}
        self.regimes = regimes if regimes is not None else RegimeSchedule(seed=self.seed)
        self._weeklies = weekly_expiries
        self._monthlies = monthly_expiries
        self._cache_size = max(2, cache_sessions)

        self.u_profiles = tuple(underlying_profile(s, i) for i, s in enumerate(self.underlyings))
        self.f_profiles = tuple(future_profile(s) for s in self.futures)
        self._u_index = {s: i for i, s in enumerate(self.underlyings)}
        self._f_index = {s: i for i, s in enumerate(self.futures)}
        self._stock_ids = {p.con_id: i for i, p in enumerate(self.u_profiles)}
        self._vix_id = index_con_id(self.volatility_index, 0)

        # drivers: one per future, plus one synthetic per underlying without a leader
        betas = [p.vol_beta for p in self.f_profiles]
        starts = [p.start_price for p in self.f_profiles]
        volumes = [float(p.daily_volume) for p in self.f_profiles]
        u_driver = []
        for p in self.u_profiles:
            fut = self.leading_future.get(p.symbol)
            if fut is not None:
                u_driver.append(self._f_index[fut])
            else:
                u_driver.append(len(betas))
                betas.append(p.vol_beta)
                starts.append(p.start_price)
                volumes.append(0.0)
        self._model = PathModel(
            seed=self.seed,
            driver_betas=np.array(betas),
            driver_volumes=np.array(volumes),
            underlying_driver=np.array(u_driver, dtype=np.int64),
            underlying_volumes=np.array([float(p.daily_volume) for p in self.u_profiles]),
            lead_minutes=self.lead_minutes,
        )
        tab = self.calendar.table
        self._tab = tab
        start_idx = self.calendar.index(self.start)
        self._epoch = max(0, start_idx - history_sessions)
        first_regime = self.regimes.regime_on(tab.days[self._epoch])
        self._states: dict[int, DayState] = {
            self._epoch - 1: initial_state(
                self._model,
                np.array(starts),
                np.array([p.start_price for p in self.u_profiles]),
                REGIME_SPECS[first_regime].vix_target,
                first_regime,
            )
        }
        self._days: OrderedDict[int, DayPaths] = OrderedDict()
        if start_idx > self._epoch:
            self._anchor(start_idx, np.log(np.array(starts)))
        self._u_div = np.array([p.dividend_yield for p in self.u_profiles])
        self._u_ivb = np.array([p.iv_beta for p in self.u_profiles])
        self._close_cache: dict[date, int] = {}
        self._futures_cache: dict[tuple[int, str], tuple[Contract, ...]] = {}
        self._qual_cache: dict[tuple[object, ...], Contract | None] = {}
        self._listing_cache: dict[tuple[int, str], tuple[tuple[date, ...], FloatArray]] = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_settings(
        cls, settings: Settings, clock: Clock, *, regimes: RegimeSchedule | None = None
    ) -> MarketSimulator:
        """Build from a `core.config.Settings` (its `sim` and `universe` sections)."""
        sim = settings.sim
        uni = settings.universe
        if regimes is None:
            regimes = _schedule_from_settings(sim)
        return cls(
            clock,
            seed=sim.seed,
            start=sim.start,
            underlyings=uni.underlyings,
            futures=uni.futures,
            leading_future=uni.leading_future,
            volatility_index=uni.volatility_index,
            futures_lead_minutes=sim.futures_lead_minutes,
            regimes=regimes,
        )

    # ------------------------------------------------------------------ paths & time
    @property
    def symbols(self) -> tuple[str, ...]:
        return (*self.underlyings, *self.futures, self.volatility_index)

    @property
    def first_session(self) -> date:
        """The earliest simulated session (history starts here)."""
        return self._tab.days[self._epoch]

    def _now(self, at: datetime | None) -> int:
        return to_epoch(self.clock.now() if at is None else at)

    def day_paths(self, day: date) -> DayPaths:
        """The (cached) minute grid of one session; generates earlier sessions if needed."""
        return self._day(self.calendar.index(day))

    def _day(self, i: int) -> DayPaths:
        hit = self._days.get(i)
        if hit is not None:
            self._days.move_to_end(i)
            return hit
        if i < self._epoch:
            raise ValueError(
                f"session {self._tab.days[i]} is before the simulated history, which starts "
                f"{self.first_session}; raise history_sessions or move sim.start"
            )
        j = i - 1
        while j not in self._states:
            j -= 1
        paths: DayPaths | None = None
        for k in range(j + 1, i + 1):
            paths = self._generate(k)
        assert paths is not None
        return paths

    def _anchor(self, start_idx: int, start_log: FloatArray) -> None:
        """Shift the history so the drivers close at their profile prices on the session
        before `start`: the demo opens at familiar levels, with history behind it.

        The model is translation-invariant in log price, so shifting the initial state
        shifts every later point by the same constant and changes no return."""
        self._day(start_idx - 1)
        delta = start_log - self._states[start_idx - 1].driver_log
        init = self._states[self._epoch - 1]
        self._states = {
            self._epoch - 1: replace(
                init,
                driver_log=init.driver_log + delta,
                driver_tail=init.driver_tail + delta[:, None],
            )
        }
        self._days.clear()

    def _generate(self, i: int) -> DayPaths:
        tab = self._tab
        t0 = int(tab.fut_open[i])
        n = int(tab.fut_close[i] - t0) // 60
        lo = int(tab.rth_open[i] - t0) // 60
        hi = int(tab.rth_close[i] - t0) // 60
        day = tab.days[i]
        paths = generate_day(
            self._model, day, self.regimes.regime_on(day), t0, n, lo, hi, self._states[i - 1]
        )
        self._states[i] = paths.end
        self._days[i] = paths
        self._days.move_to_end(i)
        while len(self._days) > self._cache_size:
            self._days.popitem(last=False)
        return paths

    def _futures_point(self, ts: int) -> tuple[DayPaths, int]:
        """(session, grid point) holding the Globex value at `ts`."""
        tab = self._tab
        i = int(np.searchsorted(tab.fut_close, ts, side="left"))
        if i >= len(tab):
            raise ValueError(f"{from_epoch(ts)} is beyond the simulator calendar")
        if i < self._epoch:
            return self._day(self._epoch), 0
        if ts < tab.fut_open[i]:
            if i - 1 < self._epoch:
                return self._day(self._epoch), 0
            prev = self._day(i - 1)
            return prev, prev.n
        d = self._day(i)
        return d, min((ts - d.t0) // 60, d.n)

    def _rth_point(self, ts: int) -> tuple[DayPaths, int]:
        """(session, grid point) holding the regular-hours value at `ts` (clamped)."""
        tab = self._tab
        i = int(np.searchsorted(tab.rth_close, ts, side="left"))
        if i >= len(tab):
            raise ValueError(f"{from_epoch(ts)} is beyond the simulator calendar")
        if i < self._epoch:
            d = self._day(self._epoch)
            return d, d.rth_lo
        if ts < tab.rth_open[i]:
            if i - 1 < self._epoch:
                d = self._day(self._epoch)
                return d, d.rth_lo
            prev = self._day(i - 1)
            return prev, prev.rth_hi
        d = self._day(i)
        return d, max(d.rth_lo, min((ts - d.t0) // 60, d.rth_hi))

    def trading_day(self, at: datetime | None = None) -> date:
        """The session a trader at `at` is trading (after the close: the next one)."""
        return self.calendar.trading_day(self.clock.now() if at is None else at)

    @property
    def regime(self) -> Regime:
        """Regime of the current trading day."""
        return self.regimes.regime_on(self.trading_day())

    def regime_on(self, day: date) -> Regime:
        return self.regimes.regime_on(day)

    def is_open(self, contract: Contract | str, at: datetime | None = None) -> bool:
        """Whether the contract trades at `at`: Globex hours for futures, else regular hours."""
        ts = self._now(at)
        is_future = (
            contract.sec_type is SecType.FUT
            if isinstance(contract, Contract)
            else contract.upper() in self._f_index
        )
        tab = self._tab
        if is_future:
            i = int(np.searchsorted(tab.fut_close, ts, side="right"))
            return i < len(tab) and ts >= tab.fut_open[i]
        i = int(np.searchsorted(tab.rth_close, ts, side="right"))
        return i < len(tab) and ts >= tab.rth_open[i]

    # ------------------------------------------------------------------ prices
    def _underlying_price(self, j: int, ts: int) -> float:
        d, k = self._rth_point(ts)
        tick = self.u_profiles[j].tick
        return _round_tick(math.exp(d.underlying_log[j, k]), tick)

    def _vix_at(self, ts: int) -> float:
        d, k = self._rth_point(ts)
        return round(math.exp(d.vix_log[k]), 2)

    def _future_price(self, j: int, expiry: date, ts: int) -> float:
        d, k = self._futures_point(ts)
        tau = max(0.0, (self._expiry_close(expiry) - ts) / YEAR_SECONDS)
        value = math.exp(d.driver_log[j, k] + FUTURES_CARRY * tau)
        return _round_tick(value, self.f_profiles[j].tick)

    def _expiry_close(self, expiry: date) -> int:
        hit = self._close_cache.get(expiry)
        if hit is None:
            hit = self._close_cache[expiry] = int(self._tab.rth_close[self.calendar.index(expiry)])
        return hit

    def price(self, symbol: str, at: datetime | None = None) -> float:
        """Last traded price: underlyings (regular hours), futures (front month), VIX."""
        ts = self._now(at)
        s = symbol.upper()
        if s in self._u_index:
            return self._underlying_price(self._u_index[s], ts)
        if s in self._f_index:
            front = self.front_future(s, at)
            assert front.expiry is not None
            return self._future_price(self._f_index[s], front.expiry, ts)
        if s == self.volatility_index:
            return self._vix_at(ts)
        raise ValueError(f"unknown symbol {symbol!r}; the simulator trades {self.symbols}")

    def vix(self, at: datetime | None = None) -> float:
        return self._vix_at(self._now(at))

    def settlement_price(self, contract: Contract, day: date) -> float:
        """Official close used to settle an expiring contract: the regular-hours close of
        the underlying (options) or of the future's final session (tau = 0)."""
        i = self.calendar.index(day)
        d = self._day(i)
        if contract.sec_type is SecType.FUT:
            j = self._f_index[contract.symbol]
            return _round_tick(math.exp(d.driver_log[j, d.rth_hi]), self.f_profiles[j].tick)
        j = self._u_index[contract.symbol]
        return _round_tick(math.exp(d.underlying_log[j, d.rth_hi]), self.u_profiles[j].tick)

    # ------------------------------------------------------------------ reference data
    def _reference_price(self, j: int, day: date) -> float:
        """Previous session's close: the anchor of the day's strike grid."""
        i = self.calendar.index(day)
        if i - 1 < self._epoch:
            return self.u_profiles[j].start_price
        d = self._day(i - 1)
        return _round_tick(math.exp(d.underlying_log[j, d.rth_hi]), self.u_profiles[j].tick)

    def _listing(self, symbol: str, day: date) -> tuple[tuple[date, ...], FloatArray]:
        key = (day.toordinal(), symbol)
        hit = self._listing_cache.get(key)
        if hit is None:
            j = self._u_index[symbol]
            expiries = listed_expiries(self.calendar, day, self._weeklies, self._monthlies)
            strikes = strike_grid(self.u_profiles[j], self._reference_price(j, day))
            hit = (expiries, strikes)
            if len(self._listing_cache) > 64:
                self._listing_cache.clear()
            self._listing_cache[key] = hit
        return hit

    def expirations(self, underlying: str, at: datetime | None = None) -> tuple[date, ...]:
        s = self._require_underlying(underlying)
        return self._listing(s, self.trading_day(at))[0]

    def strikes(self, underlying: str, at: datetime | None = None) -> tuple[float, ...]:
        s = self._require_underlying(underlying)
        return tuple(float(k) for k in self._listing(s, self.trading_day(at))[1])

    def option_chains(self, underlying: str) -> list[OptionChain]:
        """IB secDefOptParams equivalent: one SMART chain, or [] for an unknown symbol."""
        s = underlying.upper()
        if s not in self._u_index:
            return []
        expiries, strikes = self._listing(s, self.trading_day())
        p = self.u_profiles[self._u_index[s]]
        return [
            OptionChain(
                underlying=s,
                underlying_con_id=p.con_id,
                exchange="SMART",
                trading_class=s,
                multiplier=OPTION_MULTIPLIER,
                expirations=expiries,
                strikes=tuple(float(k) for k in strikes),
            )
        ]

    def futures_contracts(self, symbol: str, at: datetime | None = None) -> list[Contract]:
        """Listed quarterly contracts (H/M/U/Z), nearest first."""
        s = symbol.upper()
        if s not in self._f_index:
            raise ValueError(f"unknown future {symbol!r}; simulated futures are {self.futures}")
        day = self.trading_day(at)
        key = (day.toordinal(), s)
        hit = self._futures_cache.get(key)
        if hit is None:
            j = self._f_index[s]
            expiries = self.calendar.quarterly_expiries(day, FUTURES_LISTED)
            hit = tuple(self._future_contract(j, e) for e in expiries)
            if len(self._futures_cache) > 64:
                self._futures_cache.clear()
            self._futures_cache[key] = hit
        return list(hit)

    def front_future(self, symbol: str, at: datetime | None = None) -> Contract:
        return self.futures_contracts(symbol, at)[0]

    def _require_underlying(self, symbol: str) -> str:
        s = symbol.upper()
        if s not in self._u_index:
            raise ValueError(
                f"unknown underlying {symbol!r}; optionable symbols are {self.underlyings}"
            )
        return s

    def _stock_contract(self, j: int) -> Contract:
        p = self.u_profiles[j]
        return Contract(
            symbol=p.symbol,
            sec_type=SecType.STK,
            exchange="SMART",
            con_id=p.con_id,
            local_symbol=p.symbol,
            trading_class=p.symbol,
        )

    def _index_contract(self) -> Contract:
        return Contract(
            symbol=self.volatility_index,
            sec_type=SecType.IND,
            exchange="CBOE",
            con_id=self._vix_id,
            local_symbol=self.volatility_index,
        )

    def _future_contract(self, j: int, expiry: date) -> Contract:
        p: FutureProfile = self.f_profiles[j]
        return Contract(
            symbol=p.symbol,
            sec_type=SecType.FUT,
            expiry=expiry,
            multiplier=p.multiplier,
            exchange=p.exchange,
            con_id=future_con_id(j, expiry),
            local_symbol=futures_local_symbol(p.symbol, expiry),
            trading_class=p.symbol,
        )

    def _option_contract(
        self, j: int, expiry: date, strike: float, right: Right
    ) -> Contract | None:
        con_id = option_con_id(j, expiry, right, strike)
        if con_id is None:
            return None
        s = self.underlyings[j]
        return Contract(
            symbol=s,
            sec_type=SecType.OPT,
            expiry=expiry,
            strike=float(strike),
            right=right,
            multiplier=OPTION_MULTIPLIER,
            exchange="SMART",
            con_id=con_id,
            local_symbol=option_local_symbol(s, expiry, right.value, strike),
            trading_class=s,
        )

    def contract_by_id(self, con_id: int) -> Contract | None:
        """Decode a con_id (also of expired contracts, which positions may still name)."""
        if con_id in self._stock_ids:
            return self._stock_contract(self._stock_ids[con_id])
        if con_id == self._vix_id:
            return self._index_contract()
        fut = decode_future_id(con_id)
        if fut is not None:
            j, year, month = fut
            if j >= len(self.futures) or month not in QUARTER_MONTHS:
                return None
            return self._future_contract(j, self.calendar.third_friday_expiry(year, month))
        opt = decode_option_id(con_id)
        if opt is not None:
            j, monday, right, strike = opt
            if j >= len(self.underlyings):
                return None
            prof: UnderlyingProfile = self.u_profiles[j]
            if abs(strike / prof.fine_step - round(strike / prof.fine_step)) > 1e-6:
                return None
            expiry = self.calendar.weekly_expiry(monday)
            if expiry is None:
                return None
            return self._option_contract(j, expiry, strike, right)
        return None

    def qualify(self, contract: Contract, at: datetime | None = None) -> Contract | None:
        """The contract with con_id, multiplier, local symbol, trading class filled in, or
        None when no such contract is listed (IB error 200). BAGs are returned unchanged
        when every leg's con_id is known."""
        return self._qualify_on(contract, self.trading_day(at))

    def qualify_many(
        self, contracts: Sequence[Contract], at: datetime | None = None
    ) -> list[Contract | None]:
        """`qualify` for a batch (one calendar look-up for all of them)."""
        day = self.trading_day(at)
        return [self._qualify_on(c, day) for c in contracts]

    def _qualify_on(self, contract: Contract, day: date) -> Contract | None:
        # a contract that already carries a con_id is keyed by it (cheap to hash)
        key: tuple[object, ...] = (
            (day.toordinal(), contract.con_id, contract.symbol, contract.sec_type)
            if contract.con_id and contract.sec_type is not SecType.BAG
            else (day.toordinal(), contract)
        )
        if key in self._qual_cache:
            return self._qual_cache[key]
        result = self._qualify(contract, day)
        if len(self._qual_cache) > 20_000:
            self._qual_cache.clear()
        self._qual_cache[key] = result
        return result

    def _qualify(self, c: Contract, day: date) -> Contract | None:
        if c.sec_type is SecType.BAG:
            legs_ok = all(self.contract_by_id(leg.con_id) is not None for leg in c.combo_legs)
            return c if legs_ok else None
        if c.con_id:
            found = self.contract_by_id(c.con_id)
            if found is None or found.symbol != c.symbol or found.sec_type is not c.sec_type:
                return None
            if found.sec_type in (SecType.OPT, SecType.FUT):  # must not have expired
                assert found.expiry is not None
                if found.expiry < day:
                    return None
            return found
        s = c.symbol.upper()
        if c.sec_type is SecType.STK:
            return self._stock_contract(self._u_index[s]) if s in self._u_index else None
        if c.sec_type is SecType.IND:
            return self._index_contract() if s == self.volatility_index else None
        if c.sec_type is SecType.FUT:
            if s not in self._f_index or c.expiry is None:
                return None
            for e in self.calendar.quarterly_expiries(day, FUTURES_LISTED):
                if (e.year, e.month) == (c.expiry.year, c.expiry.month):
                    return self._future_contract(self._f_index[s], e)
            return None
        if c.sec_type is SecType.OPT:
            if s not in self._u_index or c.multiplier not in (1, OPTION_MULTIPLIER):
                return None
            assert c.expiry is not None and c.strike is not None and c.right is not None
            expiries, _ = self._listing(s, day)
            j = self._u_index[s]
            if c.expiry not in expiries:
                return None
            if not on_grid(self.u_profiles[j], self._reference_price(j, day), c.strike):
                return None
            return self._option_contract(j, c.expiry, c.strike, c.right)
        return None

    def resolve(self, contract: Contract, day: date | None = None) -> Contract:
        """Qualified contract or ValueError naming it (for callers that need one)."""
        q = self._qualify_on(contract, self.trading_day() if day is None else day)
        if q is None:
            raise ValueError(
                f"no security definition for {contract.describe()} (con_id={contract.con_id}); "
                "check symbol/expiry/strike against option_chains() or futures_contracts()"
            )
        return q

    def combo_legs(self, contract: Contract) -> list[tuple[Contract, ComboLeg]]:
        """A BAG's legs as (qualified leg contract, leg)."""
        out = []
        for leg in contract.combo_legs:
            c = self.contract_by_id(leg.con_id)
            if c is None:
                raise ValueError(f"combo leg con_id {leg.con_id} is not a known contract")
            out.append((c, leg))
        return out

    # ------------------------------------------------------------------ quotes
    def quote(self, contract: Contract) -> Quote:
        return self.quotes([contract])[0]

    def quotes(self, contracts: Sequence[Contract], at: datetime | None = None) -> list[Quote]:
        """Snapshot quotes at the clock's time (or at `at`, e.g. a delayed feed's past),
        options priced together in one pass."""
        ts = self._now(at)
        day = self.calendar.trading_day(from_epoch(ts))
        return self.quotes_qualified([self.resolve(c, day) for c in contracts], at)

    def quotes_qualified(
        self, resolved: Sequence[Contract], at: datetime | None = None
    ) -> list[Quote]:
        """`quotes` for contracts that came out of `qualify` (skips qualifying again)."""
        ts = self._now(at)
        now = from_epoch(ts)
        singles: dict[int, Contract] = {}
        for c in resolved:
            if c.sec_type is SecType.BAG:
                for leg_c, _ in self.combo_legs(c):
                    singles[leg_c.con_id] = leg_c
            else:
                singles[c.con_id] = c
        table = self._single_quotes(list(singles.values()), ts, now)
        out: list[Quote] = []
        for c in resolved:
            if c.sec_type is SecType.BAG:
                out.append(self._bag_quote(c, table, now))
            else:
                out.append(table[c.con_id])
        return out

    def _single_quotes(self, contracts: list[Contract], ts: int, now: datetime) -> dict[int, Quote]:
        out: dict[int, Quote] = {}
        opts = [c for c in contracts if c.sec_type is SecType.OPT]
        if opts:
            out.update(self._option_quotes(opts, ts, now))
        if any(c.sec_type is not SecType.OPT for c in contracts):
            vix = self._vix_at(ts)
            widen = 1 + int(max(0.0, vix - 20.0) // 10.0)
            for c in contracts:
                if c.sec_type is SecType.STK:
                    j = self._u_index[c.symbol]
                    out[c.con_id] = self._touch_quote(
                        c, now, self._underlying_price(j, ts), self.u_profiles[j].tick, widen,
                        500, self._session_volume(j, ts),
                    )  # fmt: skip
                elif c.sec_type is SecType.FUT:
                    j = self._f_index[c.symbol]
                    assert c.expiry is not None
                    px = self._future_price(j, c.expiry, ts)
                    out[c.con_id] = self._touch_quote(
                        c, now, px, self.f_profiles[j].tick, widen, 40, 0
                    )
                elif c.sec_type is SecType.IND:
                    out[c.con_id] = Quote(contract=c, time=now, last=vix)
        return out

    def _session_volume(self, j: int, ts: int) -> int:
        d, k = self._rth_point(ts)
        return int(d.underlying_volume[j, d.rth_lo : max(d.rth_lo, k)].sum())

    @staticmethod
    def _touch_quote(
        c: Contract, now: datetime, px: float, tick: float, widen: int, size: int, volume: int
    ) -> Quote:
        bid = round(px - tick * (widen // 2), 6)
        ask = round(bid + tick * widen, 6)
        return Quote(
            contract=c, time=now, bid=bid, ask=ask, last=px, bid_size=size, ask_size=size,
            volume=volume,
        )  # fmt: skip

    def _option_quotes(self, opts: list[Contract], ts: int, now: datetime) -> dict[int, Quote]:
        n = len(opts)
        j = np.fromiter((self._u_index[c.symbol] for c in opts), dtype=np.int64, count=n)
        strike = np.fromiter((c.strike or 0.0 for c in opts), dtype=np.float64, count=n)
        call = np.fromiter((c.right is Right.CALL for c in opts), dtype=np.bool_, count=n)
        exp_close = np.fromiter(
            (self._expiry_close(_expiry(c)) for c in opts), dtype=np.int64, count=n
        )
        spot_u = np.array([self._underlying_price(u, ts) for u in range(len(self.underlyings))])
        spot = spot_u[j]
        t = (exp_close - ts) / YEAR_SECONDS
        vix = self._vix_at(ts)
        iv, g = price_options(
            spot, strike, t, call, self._u_div[j], np.full(n, vix), self._u_ivb[j]
        )
        mid = g.price
        m_sd = moneyness_sd(spot, strike, t, iv)
        bid, ask = round_bid_ask(mid, option_half_spread(mid, iv, m_sd), OPTION_TICK)
        vol_factor = np.clip(iv / 0.16, 0.75, 6.0)
        size = np.maximum(1, (250.0 * np.exp(-0.5 * m_sd * m_sd) / vol_factor)).astype(np.int64) + 4
        expired = ~(t > 0.0)
        intrinsic = np.where(call, np.maximum(spot - strike, 0.0), np.maximum(strike - spot, 0.0))
        last = np.where(expired, intrinsic, np.round(mid, 2))
        delta, gamma = g.delta, g.gamma
        vega, theta = g.vega / 100.0, g.theta / 365.0
        iv_out = np.where(expired, np.nan, iv)
        bid = np.where(expired, np.nan, bid)
        ask = np.where(expired, np.nan, ask)
        size = np.where(expired, 0, size)
        out: dict[int, Quote] = {}
        rows = zip(
            opts, bid.tolist(), ask.tolist(), last.tolist(), size.tolist(), iv_out.tolist(),
            delta.tolist(), gamma.tolist(), vega.tolist(), theta.tolist(), spot.tolist(),
            strict=True,
        )  # fmt: skip
        for c, b, a, lst, sz, v, de, ga, ve, th, s in rows:
            out[c.con_id] = Quote(
                contract=c, time=now, bid=b, ask=a, last=lst, bid_size=sz, ask_size=sz,
                iv=v, delta=de, gamma=ga, vega=ve, theta=th, underlying_price=s,
            )  # fmt: skip
        return out

    @staticmethod
    def _bag_quote(c: Contract, table: Mapping[int, Quote], now: datetime) -> Quote:
        """Net of legs for the BUY direction: ask = pay for BUY legs at ask, receive bid
        for SELL legs; bid the reverse. A credit combo therefore quotes negative."""
        bid = ask = last = 0.0
        delta = gamma = vega = theta = 0.0
        size = 1 << 30
        for leg in c.combo_legs:
            q = table[leg.con_id]
            sign = 1.0 if leg.action == "BUY" else -1.0
            r = leg.ratio
            if sign > 0:
                ask += r * q.ask
                bid += r * q.bid
            else:
                ask -= r * q.bid
                bid -= r * q.ask
            last += sign * r * q.last
            delta += sign * r * q.delta
            gamma += sign * r * q.gamma
            vega += sign * r * q.vega
            theta += sign * r * q.theta
            size = min(size, min(q.bid_size, q.ask_size) // r)
        return Quote(
            contract=c, time=now, bid=round(bid, 6), ask=round(ask, 6), last=round(last, 6),
            bid_size=size, ask_size=size, delta=delta, gamma=gamma, vega=vega, theta=theta,
        )  # fmt: skip

    # ------------------------------------------------------------------ bars
    def bars(
        self,
        contract: Contract,
        *,
        end: datetime,
        duration: timedelta,
        bar_size: str = "1 min",
        what: str = "TRADES",
    ) -> list[Bar]:
        """Completed bars whose start lies in [end - duration, min(end, now)).

        Intraday bars are aligned to UTC multiples of their size (ET hours align too);
        daily bars are one per session, timed at the session open. Futures bars cover the
        Globex session; everything else regular hours only.

        `what` is IB's whatToShow. MIDPOINT equals TRADES here (simulated trades print at
        the mid; option bars are mids either way). OPTION_IMPLIED_VOLATILITY, for an
        underlying, gives its ATM 30-day implied vol from the same VIX-driven surface the
        option quotes use, so a bar's close is the IV a 30-day at-the-forward option quotes
        at the bar's end (the VIX as quoted, to the cent, times the underlying's IV beta).
        """
        if what not in WHAT_TO_SHOW:
            raise ValueError(f"whatToShow {what!r} is not supported; use one of {WHAT_TO_SHOW}")
        step = parse_bar_size(bar_size)
        if duration <= timedelta(0):
            raise ValueError(f"duration must be positive, got {duration}")
        c = self.resolve(contract)
        if c.sec_type is SecType.BAG:
            raise ValueError("historical bars for BAG contracts are not supported; ask per leg")
        implied_vol = what == IMPLIED_VOL
        if implied_vol and c.sec_type is not SecType.STK:
            raise ValueError(
                f"whatToShow {IMPLIED_VOL} needs an optionable underlying (STK), got {c.describe()}"
            )
        end_ts = min(to_epoch(end), self._now(None))
        start_ts = to_epoch(end) - int(duration.total_seconds())
        if step == 0:  # daily bars cover whole sessions: widen to the first session's open
            opens, closes = self._session_bounds(c)
            i = int(np.searchsorted(closes, start_ts, side="right"))
            if i < len(opens):
                start_ts = min(start_ts, int(opens[i]))
        series = self._minute_series(c, start_ts, end_ts, implied_vol=implied_vol)
        if series is None or len(series.time) == 0:
            return []
        if step == 60:
            keys = series.time
        elif step == 0:
            keys = series.session
        else:
            keys = series.time // step
        cut = np.flatnonzero(np.diff(keys)) + 1
        starts = np.concatenate([[0], cut])
        ends = np.concatenate([cut, [len(keys)]])
        o = series.open[starts]
        h = np.maximum.reduceat(series.high, starts)
        lo = np.minimum.reduceat(series.low, starts)
        cl = series.close[ends - 1]
        v = np.add.reduceat(series.volume, starts)
        if step == 0:
            t = self._session_open_times(c, series.session[starts])
        else:
            t = series.time[starts]
        if step not in (0, 60):  # drop a trailing bucket that is not complete yet
            last_session = series.session[-1:]
            bucket_end = (int(series.time[-1]) // step + 1) * step
            data_end = int(self._session_close_times(c, last_session)[0])
            if min(bucket_end, data_end) > end_ts:
                o, h, lo, cl, v, t = o[:-1], h[:-1], lo[:-1], cl[:-1], v[:-1], t[:-1]
        if step == 0 and len(t):
            closes = self._session_close_times(c, series.session[starts])
            if closes[-1] > end_ts:
                o, h, lo, cl, v, t = o[:-1], h[:-1], lo[:-1], cl[:-1], v[:-1], t[:-1]
        wap = (h + lo + cl) / 3.0
        rows = zip(
            t.tolist(), o.tolist(), h.tolist(), lo.tolist(), cl.tolist(), v.tolist(),
            np.round(wap, 6).tolist(), strict=True,
        )  # fmt: skip
        return [
            Bar(time=datetime.fromtimestamp(tt, UTC), open=oo, high=hh, low=ll, close=cc,
                volume=vv, wap=ww, count=vv // 100 if vv else 0)
            for tt, oo, hh, ll, cc, vv, ww in rows
        ]  # fmt: skip

    def _session_bounds(self, c: Contract) -> tuple[IntArray, IntArray]:
        tab = self._tab
        if c.sec_type is SecType.FUT:
            return tab.fut_open, tab.fut_close
        return tab.rth_open, tab.rth_close

    def _session_open_times(self, c: Contract, sessions: IntArray) -> IntArray:
        arr = self._tab.fut_open if c.sec_type is SecType.FUT else self._tab.rth_open
        out: IntArray = arr[sessions]
        return out

    def _session_close_times(self, c: Contract, sessions: IntArray) -> IntArray:
        arr = self._tab.fut_close if c.sec_type is SecType.FUT else self._tab.rth_close
        out: IntArray = arr[sessions]
        return out

    def _minute_series(
        self, c: Contract, start_ts: int, end_ts: int, *, implied_vol: bool = False
    ) -> _Series | None:
        """Concatenate complete minute bars in [start_ts, end_ts) across sessions."""
        tab = self._tab
        if end_ts <= start_ts:
            return None
        lo_i = max(self._epoch, int(np.searchsorted(tab.fut_close, start_ts, side="right")))
        hi_i = int(np.searchsorted(tab.fut_open, end_ts, side="left"))
        parts = []
        for i in range(lo_i, hi_i):
            d = self._day(i)
            part = self._iv_session_bars(c, d) if implied_vol else self._session_bars(c, d, i)
            if part is None:
                continue
            t, o, h, lo, cl, v = part
            keep = (t >= start_ts) & (t + 60 <= end_ts)
            if keep.any():
                parts.append((t[keep], o[keep], h[keep], lo[keep], cl[keep], v[keep],
                              np.full(int(keep.sum()), i, dtype=np.int64)))  # fmt: skip
        if not parts:
            return None
        cols = [np.concatenate([p[k] for p in parts]) for k in range(7)]
        return _Series(cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], cols[6])

    def _session_bars(
        self, c: Contract, d: DayPaths, i: int
    ) -> tuple[IntArray, FloatArray, FloatArray, FloatArray, FloatArray, IntArray] | None:
        lo, hi = d.rth_lo, d.rth_hi
        if c.sec_type is SecType.FUT:
            j = self._f_index[c.symbol]
            assert c.expiry is not None
            lo, hi = 0, d.n
            pts = np.arange(lo, hi + 1)
            tau = np.maximum(0.0, (self._expiry_close(c.expiry) - (d.t0 + 60 * pts)) / YEAR_SECONDS)
            if d.t0 >= self._expiry_close(c.expiry):
                return None
            logp = d.driver_log[j, lo : hi + 1] + FUTURES_CARRY * tau
            ext = d.driver_ext[:, j, lo:hi]
            vol = d.driver_volume[j, lo:hi]
            tick = self.f_profiles[j].tick
        elif c.sec_type is SecType.STK:
            j = self._u_index[c.symbol]
            logp = d.underlying_log[j, lo : hi + 1]
            ext = d.underlying_ext[:, j, lo:hi]
            vol = d.underlying_volume[j, lo:hi]
            tick = self.u_profiles[j].tick
        elif c.sec_type is SecType.IND:
            logp = d.vix_log[lo : hi + 1]
            ext = d.vix_ext[:, lo:hi]
            vol = np.zeros(hi - lo, dtype=np.int64)
            tick = 0.01
        elif c.sec_type is SecType.OPT:
            return self._option_session_bars(c, d, i)
        else:
            return None
        t = d.t0 + 60 * np.arange(lo, hi, dtype=np.int64)
        o = np.round(np.exp(logp[:-1]) / tick) * tick
        cl = np.round(np.exp(logp[1:]) / tick) * tick
        h = np.maximum(np.round(np.exp(np.maximum(logp[:-1], logp[1:]) + ext[0]) / tick) * tick,
                       np.maximum(o, cl))  # fmt: skip
        low = np.minimum(np.round(np.exp(np.minimum(logp[:-1], logp[1:]) - ext[1]) / tick) * tick,
                         np.minimum(o, cl))  # fmt: skip
        return t, np.round(o, 6), np.round(h, 6), np.round(low, 6), np.round(cl, 6), vol

    def _iv_session_bars(
        self, c: Contract, d: DayPaths
    ) -> tuple[IntArray, FloatArray, FloatArray, FloatArray, FloatArray, IntArray]:
        """Minute bars of an underlying's ATM 30-day IV over regular hours.

        At 30 days the surface's ATM term structure is exactly VIX/100 x iv_beta
        (`volsurface.atm_vol`), and at the forward the SSVI smile adds nothing, so each
        grid point's value is what `_option_quotes` would price a 30-day ATM option at."""
        j = self._u_index[c.symbol]
        lo, hi = d.rth_lo, d.rth_hi
        vix = np.asarray(np.round(np.exp(d.vix_log[lo : hi + 1]), 2), dtype=np.float64)
        iv = np.asarray(
            atm_vol(
                np.full(hi - lo + 1, TERM_DAYS / 365.0), vix, np.full(hi - lo + 1, self._u_ivb[j])
            ),
            dtype=np.float64,
        )
        o, cl = iv[:-1], iv[1:]
        times = d.t0 + 60 * np.arange(lo, hi, dtype=np.int64)
        return times, o, np.maximum(o, cl), np.minimum(o, cl), cl, np.zeros(hi - lo, dtype=np.int64)

    def _option_session_bars(
        self, c: Contract, d: DayPaths, i: int
    ) -> tuple[IntArray, FloatArray, FloatArray, FloatArray, FloatArray, IntArray] | None:
        assert c.expiry is not None and c.strike is not None
        exp_close = self._expiry_close(c.expiry)
        if d.t0 >= exp_close:
            return None
        j = self._u_index[c.symbol]
        lo, hi = d.rth_lo, d.rth_hi
        pts = np.arange(lo, hi + 1)
        tick = self.u_profiles[j].tick
        spot = np.round(np.exp(d.underlying_log[j, lo : hi + 1]) / tick) * tick
        vix = np.asarray(np.round(np.exp(d.vix_log[lo : hi + 1]), 2), dtype=np.float64)
        t = (exp_close - (d.t0 + 60 * pts)) / YEAR_SECONDS
        m = len(pts)
        _, g = price_options(
            spot, np.full(m, c.strike), t, np.full(m, c.right is Right.CALL),
            np.full(m, self._u_div[j]), vix, np.full(m, self._u_ivb[j]),
        )  # fmt: skip
        intrinsic = (
            np.maximum(spot - c.strike, 0.0)
            if c.right is Right.CALL
            else np.maximum(c.strike - spot, 0.0)
        )
        mid = np.asarray(np.round(np.where(t > 0.0, g.price, intrinsic), 2), dtype=np.float64)
        o, cl = mid[:-1], mid[1:]
        times = d.t0 + 60 * np.arange(lo, hi, dtype=np.int64)
        return times, o, np.maximum(o, cl), np.minimum(o, cl), cl, np.zeros(hi - lo, dtype=np.int64)


def _expiry(c: Contract) -> date:
    if c.expiry is None:
        raise ValueError(f"{c.describe()} has no expiry")
    return c.expiry


def _round_tick(value: float, tick: float) -> float:
    return round(round(value / tick) * tick, 6)


def _schedule_from_settings(sim: SimSettings) -> RegimeSchedule:
    """`sim.regimes` ({"YYYY-MM-DD": regime}) over `sim.default_regime` (random = seeded)."""
    overrides = {date.fromisoformat(k): Regime(v) for k, v in sim.regimes.items()}
    if sim.default_regime == "random":
        return RegimeSchedule(overrides=overrides, seed=sim.seed)
    return RegimeSchedule(default=Regime(sim.default_regime), overrides=overrides, seed=sim.seed)
