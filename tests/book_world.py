"""A tiny hand-driven broker for reconciliation tests: positions follow the executions
it reports, so each test states only the event it is about."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from core.book.ledger import Book
from core.clock import SimClock
from core.domain import (
    Action,
    ComboLeg,
    Contract,
    Execution,
    OrderRequest,
    OrderState,
    OrderStatus,
    Position,
)
from core.domain.order_refs import make_order_ref
from core.domain.strategies import IntentPurpose, LegSpec, StrategyType
from core.reconcile import BrokerFrames, ReconcileResult, ReportBounds, reconcile
from core.store.memory import MemoryStore

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
EXPIRY = date(2026, 4, 17)
ACCOUNT = "DU1234567"


def opt(
    strike: float, right: str, con_id: int, expiry: date = EXPIRY, symbol: str = "SPY"
) -> Contract:
    return Contract.option(symbol, expiry, strike, right).with_con_id(con_id)


def stock(symbol: str, con_id: int) -> Contract:
    return Contract.stock(symbol).with_con_id(con_id)


@dataclass
class FakeBroker:
    """Positions as the sum of executions (avg cost like IB: per contract, incl. commission)."""

    executions: list[Execution] = field(default_factory=list)
    extra_positions: dict[int, tuple[Contract, int, float]] = field(default_factory=dict)
    open_orders: list[OrderState] = field(default_factory=list)
    _n: int = 0

    def execute(
        self,
        contract: Contract,
        qty: int,
        price: float,
        ref: str = "",
        when: datetime = T0,
        commission: float = 0.0,
    ) -> Execution:
        self._n += 1
        ex = Execution(
            exec_id=f"x{self._n:05d}",
            order_id=self._n,
            order_ref=ref,
            contract=contract,
            side=Action.BUY if qty > 0 else Action.SELL,
            quantity=abs(qty),
            price=price,
            time=when,
            account=ACCOUNT,
            commission=commission,
            perm_id=1000 + self._n,
        )
        self.executions.append(ex)
        return ex

    def positions(self) -> list[Position]:
        net: dict[int, tuple[Contract, int, float]] = {}
        unique = {e.exec_id: e for e in self.executions}
        for e in unique.values():
            c, q, cost = net.get(e.contract.con_id, (e.contract, 0, 0.0))
            dq = e.signed_quantity
            if q == 0 or (q > 0) == (dq > 0):
                cost = (cost * abs(q) + e.price * abs(dq)) / (abs(q) + abs(dq))
            elif abs(dq) > abs(q):
                cost = e.price
            net[e.contract.con_id] = (c, q + dq, cost)
        for con_id, (c, q, px) in self.extra_positions.items():
            base = net.get(con_id, (c, 0, px))
            net[con_id] = (c, base[1] + q, base[2])
        return [
            Position(ACCOUNT, c, q, cost * c.multiplier) for c, q, cost in net.values() if q != 0
        ]

    def forget_executions(self) -> None:
        """The broker's execution list rolled over (IB keeps about a day): positions stay."""
        self.extra_positions = {
            p.contract.con_id: (p.contract, p.quantity, p.avg_cost / p.contract.multiplier)
            for p in self.positions()
        }
        self.executions = []

    def frames(self, *, since: int = 0) -> BrokerFrames:
        return BrokerFrames.from_domain(self.positions(), self.executions[since:], self.open_orders)


class World:
    def __init__(self) -> None:
        self.clock = SimClock(T0)
        self.store = MemoryStore()
        self.book = Book(self.store, self.clock, account=ACCOUNT)
        self.broker = FakeBroker()
        self.runs = 0

    def condor(
        self, *, quantity: int = 1, base: int = 100, record: bool = True
    ) -> tuple[str, str, list[LegSpec]]:
        legs = [
            LegSpec(opt(470, "P", base + 1), 1),
            LegSpec(opt(480, "P", base + 2), -1),
            LegSpec(opt(520, "C", base + 3), -1),
            LegSpec(opt(530, "C", base + 4), 1),
        ]
        sid = self.book.open_strategy(
            StrategyType.IRON_CONDOR, "SPY", legs, quantity=quantity, nonce=base
        )
        ref = make_order_ref(sid, self.book.next_intent_seq(sid), None)
        bag = Contract.combo(
            "SPY",
            [ComboLeg(leg.contract.con_id, 1, "BUY" if leg.ratio > 0 else "SELL") for leg in legs],
        )
        self.book.record_intent(
            OrderRequest(bag, Action.SELL, quantity, limit_price=1.0, order_ref=ref),
            IntentPurpose.OPEN,
        )
        execs = [
            self.broker.execute(leg.contract, leg.ratio * quantity, 1.0 + i, ref, self.clock.now())
            for i, leg in enumerate(legs)
        ]
        if record:
            self.book.record_fills(execs)
        return sid, ref, legs

    def reconcile(
        self,
        *,
        apply: bool = True,
        advance: timedelta = timedelta(minutes=5),
        bounds: ReportBounds | None = None,
    ) -> ReconcileResult:
        self.clock.advance(advance)
        self.runs += 1
        result = reconcile(
            self.book.frames(),
            self.broker.frames(),
            as_of=self.clock.now(),
            run_id=f"run{self.runs}",
            account=ACCOUNT,
            bounds=bounds,
        )
        if apply:
            self.book.apply(result)
        return result

    def book_equals_broker(self) -> bool:
        book = dict(self.book.positions().select("con_id", "quantity").iter_rows())
        broker = {p.contract.con_id: p.quantity for p in self.broker.positions()}
        return book == broker

    def exec_ids_unique(self) -> bool:
        fills = self.book.fills()
        return fills.get_column("exec_id").n_unique() == fills.height


def order_state(
    ref: str, contract: Contract, qty: int, status: OrderStatus, filled: int = 0, order_id: int = 77
) -> OrderState:
    return OrderState(
        order_id=order_id,
        order_ref=ref,
        contract=contract,
        action=Action.SELL,
        quantity=qty,
        status=status,
        filled=filled,
        limit_price=1.0,
        perm_id=5000 + order_id,
    )
