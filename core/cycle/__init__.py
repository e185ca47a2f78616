"""The trading cycle without Prefect: step functions over a `CycleContext`, composed once
by `run_cycle` (and, with the circuit breaker around it, `run_trading_cycle`).

The flow (`flows.trading_cycle`) wraps each step in a Prefect task; backtests and chaos
runs call the same composition with `wrap=identity`.
"""

from core.cycle.context import CycleContext, Step, Wrap, identity, last_connected_at
from core.cycle.market import MarketView
from core.cycle.report import CycleReport
from core.cycle.run import (
    EXECUTE_ENTRIES,
    EXECUTE_EXITS,
    ORDER_STEPS,
    READ_ONLY_STEPS,
    CycleRun,
    CycleStepError,
    run_cycle,
    run_trading_cycle,
)

__all__ = [
    "EXECUTE_ENTRIES",
    "EXECUTE_EXITS",
    "ORDER_STEPS",
    "READ_ONLY_STEPS",
    "CycleContext",
    "CycleReport",
    "CycleRun",
    "CycleStepError",
    "MarketView",
    "Step",
    "Wrap",
    "identity",
    "last_connected_at",
    "run_cycle",
    "run_trading_cycle",
]
