"""A simulated market, a SimBroker that can misbehave on cue, a memory book and an executor."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from core.broker.base import BrokerError, ErrorClass
from core.broker.sim import SimBroker
from core.clock import Clock
from core.config import Settings
from core.domain import MarginImpact, OrderRequest, OrderState
from core.execution.combo import combo_quote
from core.execution.executor import ComboExecutor
from core.sim.exchange import SimExchange
from core.store.memory import MemoryStore
from core.strategy.candidates import Candidate, build_candidates
from core.strategy.chain import snapshot_chain


class ScriptedBroker(SimBroker):
    """SimBroker with hooks: `before_place` runs first (e.g. to arm a fault for this very
    order); `lose_ack` makes place_order reach the exchange, then drop the connection and
    raise as if the acknowledgement was lost. Every request and the combo's natural at
    that moment is recorded."""

    def __init__(self, exchange: SimExchange) -> None:
        super().__init__(exchange)
        self.before_place: Callable[[OrderRequest], None] | None = None
        self.lose_ack: Callable[[OrderRequest], bool] | None = None
        self.placed: list[tuple[OrderRequest, float]] = []
        self.what_ifs: list[OrderRequest] = []  # every what-if margin asked
        # answered instead of the exchange's figures (a BrokerError is raised)
        self.what_if_answer: MarginImpact | BrokerError | None = None

    async def what_if_margin(self, order: OrderRequest) -> MarginImpact:
        self.what_ifs.append(order)
        if isinstance(self.what_if_answer, BrokerError):
            raise self.what_if_answer
        if self.what_if_answer is not None:
            return self.what_if_answer
        return await super().what_if_margin(order)

    async def place_order(self, order: OrderRequest) -> OrderState:
        legs = [
            (
                self.exchange.contract_by_id(leg.con_id),
                leg.ratio if leg.action == "BUY" else -leg.ratio,
            )
            for leg in order.contract.combo_legs
        ]
        contracts = [c for c, _ in legs if c is not None]
        natural = combo_quote(
            [(c, r) for c, r in legs if c is not None], self.exchange.quotes(contracts)
        ).natural
        self.placed.append((order, natural))
        if self.before_place is not None:
            self.before_place(order)
        state = await super().place_order(order)
        if self.lose_ack is not None and self.lose_ack(order):
            self.drop_connection()
            raise BrokerError("connection lost before the acknowledgement", ErrorClass.CONNECTIVITY)
        return state


def make_settings(**strategies: object) -> Settings:
    base: dict[str, object] = {
        "fill_timeout_s": 10.0,
        "reprice_steps": 4,
        "fill_poll_s": 1.0,
        "min_score": 0.0,
        "enabled": ["iron_condor"],
    }
    return Settings(strategies={**base, **strategies})


@dataclass
class World:
    settings: Settings
    broker: ScriptedBroker
    store: MemoryStore = field(default_factory=MemoryStore)
    net_liquidation: float = 100_000.0  # what the cycle would pass from its reconcile step

    @property
    def exchange(self) -> SimExchange:
        return self.broker.exchange

    @property
    def clock(self) -> Clock:
        return self.broker.clock

    def executor(self, **overrides: object) -> ComboExecutor:
        st = self.settings.strategies.model_copy(update=overrides)
        settings = self.settings.model_copy(update={"strategies": st})
        return ComboExecutor(
            self.broker, self.store, self.clock, settings, net_liquidation=self.net_liquidation
        )

    async def candidate(self, underlying: str = "SPY", quantity: int = 1) -> Candidate:
        now = self.clock.now()
        chain = await snapshot_chain(self.broker, underlying, self.settings.strategies, now)
        cands = build_candidates(chain, now, self.settings).eligible
        assert cands, "the simulated chain should give an iron condor"
        return cands[0].with_quantity(quantity) if quantity != 1 else cands[0]

    def orders(self) -> list[OrderState]:
        return self.exchange.open_orders() + self.exchange.completed_orders()


async def make_world(**strategies: object) -> World:
    settings = make_settings(**strategies)
    broker = ScriptedBroker(SimExchange.from_settings(settings))
    await broker.connect()
    return World(settings, broker)
