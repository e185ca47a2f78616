"""Simulated trading day: is the market simulator fast enough to drive a year's backtest?

One session on a fresh simulator (paths generated lazily, nothing pre-warmed):
every minute of regular hours, the traded price of 3 underlyings, 3 futures and VIX plus
an exchange catch-up (`on_clock`); every 5 minutes (a trading cycle) quotes with greeks
for ~200 SPY/QQQ/IWM options and two combo orders; at the close, 1-minute bars of every
instrument. Then the same loop over 20 further sessions to give a per-day figure with
warm caches. Headline: `seconds` (wall) for the cold first day, goal well under 1 s;
`cpu_seconds` is the same on a shared, loaded machine.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import date, timedelta

from core.clock import SimClock
from core.domain import Action, ComboLeg, Contract, OrderRequest
from core.sim import MarketSimulator, SimExchange
from core.sim.calendar import MarketCalendar


def option_set(m: MarketSimulator) -> list[Contract]:
    """~200 listed options: 3 underlyings x 2 expiries x 17 strikes x put/call."""
    out = []
    day = m.trading_day()
    for s in m.underlyings:
        exps = [e for e in m.expirations(s) if (e - day).days >= 20][:2]
        spot = round(m.price(s))
        for e in exps:
            for k in range(spot - 16, spot + 17, 2):
                for r in ("P", "C"):
                    c = m.qualify(Contract.option(s, e, k, r))
                    if c is not None:
                        out.append(c)
    return out


def run_day(x: SimExchange, clock: SimClock, day: date, n_cycle: int) -> int:
    m = x.market
    cal = m.calendar
    clock.set(cal.rth_open(day))
    opts = option_set(m)
    quotes = 0
    for minute in range(int((cal.rth_close(day) - cal.rth_open(day)).total_seconds() // 60)):
        clock.set(cal.rth_open(day) + timedelta(minutes=minute, seconds=1))
        x.on_clock()
        for s in m.symbols:
            m.price(s)
        if minute % 5 == 0:
            quotes += len(x.quotes(opts))
            if minute % 60 == 0:
                short, long_ = opts[8], opts[4]  # two puts on the first underlying
                bag = Contract.combo(
                    short.symbol,
                    [ComboLeg(short.con_id, 1, "SELL"), ComboLeg(long_.con_id, 1, "BUY")],
                )
                q = x.quote(bag)
                ref = f"bench-{day}-{minute}-{n_cycle}"
                x.place_order(OrderRequest(bag, Action.BUY, 1, limit_price=q.ask, order_ref=ref))
    for c in (
        [Contract.stock(s) for s in m.underlyings]
        + [m.front_future(f) for f in m.futures]
        + [Contract.index(m.volatility_index)]
    ):
        m.bars(c, end=clock.now(), duration=timedelta(hours=24))
    return quotes


def main() -> None:
    cal = MarketCalendar()
    first = date(2026, 3, 2)
    clock = SimClock(cal.rth_open(first))
    t0, c0 = time.perf_counter(), time.process_time()
    x = SimExchange(MarketSimulator(clock, start=first))
    n_quotes = run_day(x, clock, first, 0)
    cold, cold_cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"cold day: {cold:.3f} s ({cold_cpu:.3f} s CPU), {n_quotes} quotes", file=sys.stderr)
    days = cal.sessions(first + timedelta(days=1), first + timedelta(days=40))[:20]
    t1, c1 = time.perf_counter(), time.process_time()
    for i, d in enumerate(days, start=1):
        run_day(x, clock, d, i)
    warm = (time.perf_counter() - t1) / len(days)
    warm_cpu = (time.process_time() - c1) / len(days)
    print(f"warm days: {warm:.3f} s/day ({warm_cpu:.3f} CPU) over {len(days)}", file=sys.stderr)
    print(
        json.dumps(
            {
                "seconds": round(cold, 3),
                "cpu_seconds": round(cold_cpu, 3),
                "seconds_per_day_warm": round(warm, 3),
                "cpu_seconds_per_day_warm": round(warm_cpu, 3),
                "option_quotes_per_day": n_quotes,
                "executions": len(x.executions()),
                "year_estimate_cpu_seconds": round(warm_cpu * 252, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
