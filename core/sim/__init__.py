"""The simulated market and exchange V6 trades against when it is not trading IB.

The simulator is a product feature, not test scaffolding:

* **Demo**: `v6` runs end to end on a laptop with no IB account; SPY/QQQ/IWM, ES/NQ/RTY
  and VIX move realistically (futures lead their ETFs, VIX rises when the market falls),
  option chains follow the real exchange calendar, and fills, commissions and margin
  behave like a Reg-T IB paper account.
* **Backtest**: the same rules run over simulated years, deterministic for a seed, with
  scripted regimes (calm, trending, high vol, crash day) to stress them on purpose.
* **Fault rehearsal**: `FaultPlan` injects rejections, partial and delayed fills,
  duplicate executions, stale/NaN/crossed quotes, and SimBroker drops connections, so
  the recovery paths are exercised before production needs them.

Layout: `market.MarketSimulator` (prices, bars, quotes, chains) built from `paths`
(per-session vectorised paths), `regimes`, `calendar`, `chains`, `volsurface`;
`exchange.SimExchange` (accounts, matching, executions, events) is the one world that
both `core.broker.sim.SimBroker` and the TCP gateway simulator (`gateway/`) adapt.
"""

from core.sim.exchange import (
    ExchangeEvent,
    ExecutionReported,
    FaultPlan,
    OrderUpdated,
    PositionChanged,
    SimExchange,
    SimExchangeError,
)
from core.sim.market import MarketSimulator
from core.sim.regimes import RegimeSchedule

__all__ = [
    "ExchangeEvent",
    "ExecutionReported",
    "FaultPlan",
    "MarketSimulator",
    "OrderUpdated",
    "PositionChanged",
    "RegimeSchedule",
    "SimExchange",
    "SimExchangeError",
]
