"""The process-wide things a flow needs: settings, store, clock and a way to reach the broker.

Flows take only plain parameters (Prefect serialises them), so the heavy objects live
here. Production builds the runtime from `v6.toml`; the demo, backtests and tests
install their own (a simulated world on a fast clock) with `use_runtime`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime

from core.broker.base import Broker
from core.clock import Clock, SystemClock
from core.config import BrokerKind, Settings, load_settings
from core.store.delta import DeltaStore

# Told after each simulated cycle: (cycles done, cycles planned, market time). A plain
# callable (or coroutine function) so core stays free of any UI or Prefect.
CycleProgress = Callable[[int, int, datetime], Awaitable[None] | None]


@dataclass
class Runtime:
    settings: Settings
    store: DeltaStore
    clock: Clock = field(default_factory=SystemClock)
    # Each call returns a new, unconnected broker (each flow run owns its connection).
    broker_factory: Callable[[], Broker] | None = None
    # Who else watches a backtest's cycles besides the run's own progress artifact: the
    # CLI's progress bar (`v6 run backtest`, `v6 demo`). None: nobody.
    backtest_progress: CycleProgress | None = None
    _sim_world: Broker | None = field(default=None, init=False, repr=False)

    def new_broker(self) -> Broker:
        """A new connection; on the `sim` broker, to this runtime's one simulated world."""
        if self.broker_factory is not None:
            return self.broker_factory()
        if self.settings.broker.kind is BrokerKind.IB:
            return default_broker(self.settings, self.clock)
        from core.broker.sim import SimBroker

        if not isinstance(self._sim_world, SimBroker):
            self._sim_world = default_broker(self.settings, self.clock)
        assert isinstance(self._sim_world, SimBroker)
        world = self._sim_world
        return SimBroker(world.exchange, first_order_id=world.first_order_id)


def default_broker(settings: Settings, clock: Clock) -> Broker:
    """The broker the settings ask for: IB (gateway or its simulator) or an in-process sim.

    The in-process sim numbers its orders from a base unique to the run
    (`core.broker.sim.run_order_base`): its world lives in this process only, and its
    execIds must never repeat ones an earlier process booked (README, "What V6 assumes")."""
    if settings.broker.kind is BrokerKind.IB:
        from core.broker.ib import IBBroker

        return IBBroker(settings.broker)
    from core.broker.sim import SimBroker, run_order_base

    sim = SimBroker.from_settings(settings, clock)
    return SimBroker(sim.exchange, first_order_id=run_order_base())


_CURRENT: ContextVar[Runtime | None] = ContextVar("v6_runtime", default=None)
_PROCESS_DEFAULT: list[Runtime] = []


def current_runtime() -> Runtime:
    """The installed runtime, else one built (once per process) from the config file."""
    rt = _CURRENT.get()
    if rt is not None:
        return rt
    if not _PROCESS_DEFAULT:
        settings = load_settings()
        _PROCESS_DEFAULT.append(
            Runtime(settings=settings, store=DeltaStore.from_settings(settings))
        )
    return _PROCESS_DEFAULT[0]


@contextmanager
def use_runtime(runtime: Runtime) -> Iterator[Runtime]:
    """Install `runtime` for the code (and the flows/tasks it runs) inside the block."""
    token = _CURRENT.set(runtime)
    global_token = _set_global(runtime)
    try:
        yield runtime
    finally:
        _CURRENT.reset(token)
        _restore_global(global_token)


# Prefect runs sync tasks in worker threads, which do not inherit context variables set
# after they started; a process-level fallback keeps the installed runtime visible there.
def _set_global(runtime: Runtime) -> list[Runtime]:
    saved = list(_PROCESS_DEFAULT)
    _PROCESS_DEFAULT[:] = [runtime]
    return saved


def _restore_global(saved: list[Runtime]) -> None:
    _PROCESS_DEFAULT[:] = saved
