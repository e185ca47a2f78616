"""Fault injectors: arm a fault on the simulated world before a cycle, disarm after.

Gateway/exchange knobs cover what the simulator can do on its own; faults that must
land *inside* a cycle (1100/1102 mid-request, a process kill right after an order
reaches the gateway) ride on `ChaosIBBroker`, the production IBBroker with two hooks.
The concurrent Delta writer runs in a `spawn` subprocess: deltalake must not fork.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.process import BaseProcess
from typing import Any

import polars as pl

from core.broker.ib import IBBroker
from core.chaos.scheduler import FaultKind
from core.domain import Contract, OrderRequest, OrderState
from core.sim.exchange import SimExchange
from core.sim.gateway.server import GatewayServer

log = logging.getLogger(f"v6.{__name__}")

# Faults that need something to act on (an order, a fill, a cancel, a connect, an option
# position) to fire: they stay armed until it comes.
ORDER_FAULTS = frozenset(
    {
        FaultKind.CONNECTION_DROP,
        FaultKind.ORDER_REJECT,
        FaultKind.DUPLICATE_EXECUTION,
        FaultKind.DELAYED_FILLS,
        FaultKind.PARTIAL_FILL,
        FaultKind.PROCESS_KILL,
        FaultKind.EXEC_CORRECTION,
        FaultKind.LATE_COMMISSION,
        FaultKind.FILL_AFTER_CANCEL,
        FaultKind.CLIENT_ID_326,
        FaultKind.EARLY_ASSIGNMENT,
        FaultKind.EXPIRY_EXERCISE,
    }
)
CONFLICT_TABLE = "decisions"  # appended by every cycle's exit rules
CONFLICT_RUN_ID = "chaos-concurrent-writer"
LINES_DURING_EXHAUSTION = 2
DELAY_FILLS_S = 90.0


class ProcessKilled(BaseException):
    """Raised after an order reached the gateway and before the book recorded it.

    A BaseException, so no `except Exception` in the cycle can swallow it: like SIGKILL,
    nothing after the submit runs (the broker is still disconnected by the cycle's
    `finally`, as the OS would close the socket)."""


@dataclass
class Hooks:
    """Shared, mutable state the chaos broker consults (one per soak)."""

    gateway: GatewayServer
    kill_after_submit: bool = False
    connectivity_blip: bool = False
    data_loss: bool = False  # the next quotes meet 1100 then 1101 (every subscription lost)
    killed: int = 0
    blips: int = 0
    brokers_built: int = 0


class ChaosIBBroker(IBBroker):
    """IBBroker with fault hooks; with nothing armed it is the production broker."""

    hooks: Hooks

    async def quotes(self, contracts: Sequence[Contract]) -> Any:
        h = self.hooks
        if h.connectivity_blip:
            h.connectivity_blip = False
            h.blips += 1
            h.gateway.connectivity_lost()
            await asyncio.sleep(0.01)
            h.gateway.connectivity_restored(data_kept=True)
        if h.data_loss:
            h.data_loss = False
            h.blips += 1
            h.gateway.connectivity_lost()
            h.gateway.connectivity_restored(data_kept=False)
        return await super().quotes(contracts)

    async def place_order(self, order: OrderRequest) -> OrderState:
        state = await super().place_order(order)
        if self.hooks.kill_after_submit:
            self.hooks.kill_after_submit = False
            self.hooks.killed += 1
            raise ProcessKilled(f"killed after submitting {order.order_ref}")
        return state


@dataclass
class Armed:
    """What is armed now: one-shot order faults persist until an order consumes them."""

    pending: set[FaultKind] = field(default_factory=set)
    fired: dict[str, int] = field(default_factory=dict)

    def fire(self, kind: FaultKind) -> None:
        self.fired[kind.value] = self.fired.get(kind.value, 0) + 1
        self.pending.discard(kind)


def arm(kind: FaultKind, gw: GatewayServer, ex: SimExchange, hooks: Hooks) -> None:
    """Arm one fault before a cycle (see `disarm` for the matching cleanup)."""
    match kind:
        case FaultKind.CONNECTION_DROP:
            gw.faults.drop_on_next_order = max(gw.faults.drop_on_next_order, 1)
        case FaultKind.CONNECTIVITY_1100:
            hooks.connectivity_blip = True
        case FaultKind.ORDER_REJECT:
            ex.faults.reject_next = max(ex.faults.reject_next, 1)
        case FaultKind.DUPLICATE_EXECUTION:
            ex.faults.duplicate_next_execution = True
        case FaultKind.DELAYED_FILLS:
            ex.faults.delay_fills_s = DELAY_FILLS_S
        case FaultKind.PARTIAL_FILL:
            ex.faults.partial_fill_next = 1
        case FaultKind.NAN_GREEKS:
            ex.faults.nan_greeks = True
        case FaultKind.STALE_QUOTES:
            ex.faults.stale_quotes = True
        case FaultKind.CROSSED_QUOTES:
            ex.faults.crossed_quotes = True
        case FaultKind.PACING:
            gw.faults.pacing_violations = max(gw.faults.pacing_violations, 1)
        case FaultKind.LINE_EXHAUSTION:
            gw.market_data_lines = LINES_DURING_EXHAUSTION
        case FaultKind.PROCESS_KILL:
            hooks.kill_after_submit = True
        case FaultKind.EXEC_CORRECTION:
            ex.faults.correct_next_execution = True
        case FaultKind.LATE_COMMISSION:
            gw.faults.late_commission_next = max(gw.faults.late_commission_next, 1)
        case FaultKind.FILL_AFTER_CANCEL:
            ex.faults.fill_on_next_cancel = True
        case FaultKind.CLIENT_ID_326:
            gw.faults.hold_next_client_id = True
        case FaultKind.EARLY_ASSIGNMENT:
            ex.faults.assign_next = True
        case FaultKind.EXPIRY_EXERCISE:
            ex.faults.exercise_next = True
        case FaultKind.DATA_LOST_1101:
            hooks.data_loss = True
        case FaultKind.ENTITLEMENT:
            gw.entitlement_error(10197)
        case FaultKind.RESET_WINDOW:
            gw.go_down()  # the soak runs this cycle inside a planned window (`Soak._cycle`)
        case _:
            pass  # the soak runs the concurrent writer, the crash regime, the fail-closed
            # faults (`fail_closed`) itself


def fired_after_cycle(
    kind: FaultKind, gw: GatewayServer, ex: SimExchange, hooks: Hooks, lines: int, quoted: bool
) -> bool:
    """Did the armed fault take effect during the cycle? Also disarms per-cycle faults.

    `quoted`: the cycle reached its market-data step, so quote-level faults were seen."""
    match kind:
        case FaultKind.CONNECTION_DROP:
            return gw.faults.drop_on_next_order == 0
        case FaultKind.CONNECTIVITY_1100:
            return not hooks.connectivity_blip
        case FaultKind.ORDER_REJECT:
            return ex.faults.reject_next == 0
        case FaultKind.DUPLICATE_EXECUTION:
            return not ex.faults.duplicate_next_execution
        case FaultKind.DELAYED_FILLS:
            ex.faults.delay_fills_s = 0.0
            return quoted
        case FaultKind.PARTIAL_FILL:
            return ex.faults.partial_fill_next is None
        case FaultKind.NAN_GREEKS:
            ex.faults.nan_greeks = False
            return quoted
        case FaultKind.STALE_QUOTES:
            ex.faults.stale_quotes = False
            return quoted
        case FaultKind.CROSSED_QUOTES:
            fired = not ex.faults.crossed_quotes
            ex.faults.crossed_quotes = False
            return fired
        case FaultKind.PACING:
            fired = gw.faults.pacing_violations == 0
            gw.faults.pacing_violations = 0
            return fired
        case FaultKind.LINE_EXHAUSTION:
            gw.market_data_lines = lines
            return quoted
        case FaultKind.PROCESS_KILL:
            return not hooks.kill_after_submit
        case FaultKind.EXEC_CORRECTION:
            return not ex.faults.correct_next_execution
        case FaultKind.LATE_COMMISSION:
            return gw.faults.late_commission_next == 0
        case FaultKind.FILL_AFTER_CANCEL:
            return not ex.faults.fill_on_next_cancel
        case FaultKind.CLIENT_ID_326:
            return not gw.faults.hold_next_client_id
        case FaultKind.EARLY_ASSIGNMENT:
            return not ex.faults.assign_next
        case FaultKind.EXPIRY_EXERCISE:
            return not ex.faults.exercise_next
        case FaultKind.DATA_LOST_1101:
            fired = not hooks.data_loss
            hooks.data_loss = False
            return fired
        case FaultKind.ENTITLEMENT:
            gw.clear_entitlement_errors()
            return quoted
        case FaultKind.RESET_WINDOW:
            return True  # the gateway was down; `Soak._cycle` brings it back and checks
        case _:
            return True


# ---------------------------------------------------------------- concurrent Delta writer
def _write_loop(root: str, rounds: int, tag: str, started: Any) -> None:
    """Subprocess body: append `rounds` decision rows (ids unique per `tag`: the table's
    keys must stay unique) while the cycle runs."""
    from core.store import DeltaStore

    store = DeltaStore(root)
    spec = store.spec(CONFLICT_TABLE)
    assert spec.example is not None
    base = spec.example().with_columns(
        pl.lit("HOLD").alias("action"),
        pl.lit(None, pl.String).alias("urgency"),
        pl.lit("chaos: concurrent writer").alias("reason"),
    )
    started.set()
    for i in range(rounds):
        stamp = datetime(2000, 1, 1, tzinfo=UTC) + timedelta(microseconds=i)
        row = base.with_columns(
            pl.lit(f"{CONFLICT_RUN_ID}-{tag}-{i}").alias("evaluation_id"),
            pl.lit(f"{CONFLICT_RUN_ID}-{tag}").alias("strategy_id"),
            pl.lit(stamp).cast(base.schema["evaluated_at"]).alias("evaluated_at"),
        )
        store.append(CONFLICT_TABLE, row)


class ConcurrentWriter:
    """A second process appending to a table the cycle writes: commits race on versions."""

    def __init__(self, root: str, tag: str, rounds: int = 20) -> None:
        self.root = root
        self.rounds = rounds
        ctx = mp.get_context("spawn")
        self._started = ctx.Event()
        self._proc: BaseProcess = ctx.Process(
            target=_write_loop, args=(root, rounds, tag, self._started), daemon=True
        )

    async def start(self, timeout: float = 60.0) -> None:
        self._proc.start()
        waited = 0.0
        while not await asyncio.to_thread(self._started.wait, 0.5):
            waited += 0.5
            if not self._proc.is_alive() or waited >= timeout:
                self._proc.kill()
                raise RuntimeError(
                    f"concurrent writer did not start (exit code {self._proc.exitcode}); run "
                    "the soak from an importable main module (multiprocessing spawn)"
                )

    async def join(self, timeout: float = 120.0) -> int:
        await asyncio.to_thread(self._proc.join, timeout)
        if self._proc.is_alive():
            self._proc.kill()
            raise TimeoutError("concurrent writer did not finish")
        return self._proc.exitcode or 0
