"""A simulated world for reconciliation tests: one SimExchange (the broker's truth), one Book,
and helpers that trade the way V6 does (strategy + intent before submit) or the way a person
in TWS does (no V6 ref). Used by the core property test, the flow tests and the gateway tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import polars as pl

from core.book.ledger import Book, TableStore
from core.clock import SimClock
from core.config import Settings, SimSettings
from core.domain import (
    Action,
    ComboLeg,
    Contract,
    Execution,
    OrderRequest,
    OrderType,
    Position,
    Right,
)
from core.domain.order_refs import make_order_ref
from core.domain.strategies import IntentPurpose, LegSpec, StrategyType
from core.reconcile import BrokerFrames, ReconcileResult, ReportBounds, reconcile
from core.sim.exchange import SimExchange, build_exchange
from core.store.memory import MemoryStore

OVERLAP = timedelta(hours=1)


def rich_settings(**kw: object) -> Settings:
    """Default settings with enough cash that naked short options are accepted."""
    return Settings(sim=SimSettings(net_liquidation=50_000_000.0), **kw)  # type: ignore[arg-type]


def make_exchange(settings: Settings | None = None) -> SimExchange:
    ex = build_exchange(settings or rich_settings())
    ex.market.clock.advance(timedelta(hours=1))  # an hour into the 2026-03-02 session
    return ex


def option_pool(ex: SimExchange, underlying: str = "SPY", n: int = 6) -> list[Contract]:
    """Qualified puts and calls around the money in the two nearest expiries."""
    chain = ex.option_chains(underlying)[0]
    spot = ex.market.price(underlying)
    strikes = sorted(chain.strikes, key=lambda k: abs(k - spot))[: n // 2]
    out: list[Contract] = []
    for expiry in chain.expirations[:2]:
        for k in sorted(strikes):
            for right in (Right.PUT, Right.CALL):
                c = ex.qualify(Contract.option(underlying, expiry, k, right))
                assert c is not None
                out.append(c)
    return out


class SimWorld:
    def __init__(
        self, exchange: SimExchange | None = None, store: TableStore | None = None
    ) -> None:
        self.exchange = exchange or make_exchange()
        clock = self.exchange.market.clock
        assert isinstance(clock, SimClock)
        self.clock = clock
        self.store = store if store is not None else MemoryStore()
        self.book = Book(self.store, self.clock, account=self.exchange.account)
        self.pool = option_pool(self.exchange)
        self.runs = 0
        self.seq = 0

    # -- V6 trades: strategy and intent first, then the order --------------------------
    def v6_single(self, contract: Contract, qty: int) -> OrderRequest:
        self.seq += 1
        sid = self.book.open_strategy(
            StrategyType.SINGLE,
            contract.symbol,
            [LegSpec(contract, 1 if qty > 0 else -1)],
            quantity=abs(qty),
            nonce=self.seq,
        )
        ref = make_order_ref(sid, self.book.next_intent_seq(sid), 0)
        order = OrderRequest(
            contract, Action.BUY if qty > 0 else Action.SELL, abs(qty), OrderType.MKT, order_ref=ref
        )
        self.book.record_intent(order, IntentPurpose.OPEN)
        return order

    def v6_vertical(self, short: Contract, long: Contract, qty: int) -> OrderRequest:
        """A credit vertical as one BAG order (SELL the combo: short leg sold, long bought)."""
        self.seq += 1
        legs = [LegSpec(short, -1), LegSpec(long, 1)]
        sid = self.book.open_strategy(
            StrategyType.VERTICAL, short.symbol, legs, quantity=qty, nonce=self.seq
        )
        ref = make_order_ref(sid, self.book.next_intent_seq(sid), None)
        bag = Contract.combo(
            short.symbol, [ComboLeg(short.con_id, 1, "BUY"), ComboLeg(long.con_id, 1, "SELL")]
        )
        order = OrderRequest(bag, Action.SELL, qty, OrderType.MKT, order_ref=ref)
        self.book.record_intent(order, IntentPurpose.OPEN)
        return order

    def submit(self, order: OrderRequest) -> list[Execution]:
        """Place on the exchange directly; returns that order's executions so far."""
        self.exchange.place_order(order)
        return self.executions_of(order.order_ref)

    def executions_of(self, ref: str) -> list[Execution]:
        return [e for e in self.exchange.executions() if e.order_ref == ref]

    def external(self, contract: Contract, qty: int) -> None:
        """A trade made in TWS: no V6 ref."""
        self.seq += 1
        self.exchange.place_order(
            OrderRequest(
                contract,
                Action.BUY if qty > 0 else Action.SELL,
                abs(qty),
                OrderType.MKT,
                order_ref=f"tws-{self.seq}",
            )
        )

    def assign(self, option: Contract, contracts: int, stock: Contract) -> None:
        """An assignment as the API shows it: positions change, no execution is reported.

        (Uses the exchange's private position update: SimExchange models cash-settled
        expiry but no assignment, and IB reports assignments only through positions.)
        """
        assert option.strike is not None
        short = -contracts
        shares = -short * option.multiplier * (1 if option.right is Right.PUT else -1)
        now = self.clock.now()
        for c, q, px in ((option, -short, 0.0), (stock, shares, option.strike)):
            self.exchange._apply(
                Execution(
                    f"ASSIGN.{c.con_id}.{self.seq}",
                    0,
                    "",
                    c,
                    Action.BUY if q > 0 else Action.SELL,
                    abs(q),
                    px,
                    now,
                    self.exchange.account,
                    0.0,
                )
            )

    def advance(self, delta: timedelta) -> list[Execution]:
        self.clock.advance(delta)
        return self.exchange.on_clock()

    # -- reconciliation -------------------------------------------------------------------
    def broker_frames(self) -> BrokerFrames:
        last = self.book.last_reconciled_at()
        since = None if last is None else last - OVERLAP
        return BrokerFrames.from_domain(
            self.exchange.positions(), self.exchange.executions(since), self.exchange.open_orders()
        )

    def reconcile(
        self, *, apply: bool = True, bounds: ReportBounds | None = None
    ) -> ReconcileResult:
        self.runs += 1
        result = reconcile(
            self.book.frames(),
            self.broker_frames(),
            as_of=self.clock.now(),
            run_id=f"run{self.runs}",
            account=self.exchange.account,
            bounds=bounds,
        )
        if apply:
            self.book.apply(result)
        return result

    # -- invariants -----------------------------------------------------------------------
    def book_positions(self) -> dict[int, int]:
        return dict(self.book.positions().select("con_id", "quantity").iter_rows())

    def book_equals(self, positions: Sequence[Position]) -> bool:
        return self.book_positions() == {p.contract.con_id: p.quantity for p in positions}

    def book_equals_broker(self) -> bool:
        return self.book_equals(self.exchange.positions())

    def exec_ids_unique(self) -> bool:
        fills = self.book.fills()
        return fills.get_column("exec_id").n_unique() == fills.height

    def fills_for(self, exec_ids: Sequence[str]) -> pl.DataFrame:
        return self.book.fills().filter(pl.col("exec_id").is_in(list(exec_ids)))
