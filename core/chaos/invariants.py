"""Invariants a chaos soak checks after every cycle and at the end.

Each check reads the truth from outside the code under test where it can: the exchange
(what the broker really holds and was really sent), the Delta tables read back from disk,
and the soak's own record of each cycle's gate and health. A check returns violations as
plain sentences; the soak fails loudly on the first one, with the seed.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import polars as pl

from core.book.ledger import Book
from core.config import Settings
from core.cycle.run import BROKER_UNAVAILABLE, CycleRun
from core.domain import OrderState, SecType
from core.domain.order_refs import parse_order_ref
from core.domain.strategies import IntentPurpose, Origin, StrategyStatus
from core.domain.timezones import MARKET_TZ
from core.risk.breaker import Breaker, BreakerState, CycleHealth
from core.risk.exposure import SHARES_PER_LOT
from core.risk.limits import (
    MAX_CONTRACTS_PER_DAY,
    MAX_CONTRACTS_PER_ORDER,
    MAX_NOTIONAL_PER_DAY,
    MAX_NOTIONAL_PER_ORDER,
)
from core.sim.exchange import SimExchange
from core.store.delta import DeltaStore
from core.store.validation import prepare

HOUR = timedelta(hours=1)


@dataclass
class Checks:
    """Counts of invariant checks run, by name (the report's evidence of coverage)."""

    runs: Counter[str] = field(default_factory=Counter)

    def ran(self, name: str) -> None:
        self.runs[name] += 1


def book_matches_broker(store: DeltaStore, exchange: SimExchange) -> list[str]:
    """Net book quantity per conId equals the exchange's position (the exchange is truth)."""
    book = Book(store).positions().select("con_id", pl.col("quantity").alias("book"))
    broker = pl.DataFrame(
        {
            "con_id": [p.contract.con_id for p in exchange.positions()],
            "broker": [p.quantity for p in exchange.positions()],
        },
        schema={"con_id": pl.Int64, "broker": pl.Int64},
    ).filter(pl.col("broker") != 0)
    diff = (
        book.join(broker, on="con_id", how="full", coalesce=True)
        .with_columns(pl.col("book").fill_null(0), pl.col("broker").fill_null(0))
        .filter(pl.col("book") != pl.col("broker"))
    )
    return [
        f"book != broker for conId {r['con_id']}: book {r['book']}, broker {r['broker']}"
        for r in diff.head(5).iter_rows(named=True)
    ]


def reset_window_held(run: CycleRun | None) -> list[str]:
    """A cycle that found the gateway down inside the planned outage window ends
    BrokerUnavailable and leaves the breaker alone (a cycle that never touched the broker,
    gated or leased out, had nothing to meet)."""
    if run is None or run.report is None:
        return []
    if run.outcome.name != BROKER_UNAVAILABLE:
        return [
            f"the gateway was down inside the planned window, yet the cycle ended "
            f"{run.outcome.name}: {run.outcome.message}"
        ]
    if run.transition is not None or run.report.entries is not None:
        return ["a cycle inside the planned outage window moved the breaker or entered"]
    return []


def exec_ids_unique(store: DeltaStore) -> list[str]:
    dup = (
        store.read("fills", columns=["exec_id"])
        .group_by("exec_id")
        .len()
        .filter(pl.col("len") > 1)
        .collect()
    )
    return [
        f"exec_id {r['exec_id']} recorded {r['len']} times in fills"
        for r in dup.head(5).iter_rows(named=True)
    ]


def no_half_open(store: DeltaStore, exchange: SimExchange) -> list[str]:
    """A strategy whose legs disagree (some filled, some not, or uneven units) must be
    explained: a working order at the broker, or a reconciliation_breaks row."""
    # CLOSED legs are history (a roll closes the old legs and opens new ones), not half.
    legs = Book(store).leg_positions(open_only=True)
    if legs.is_empty():
        return []
    units = (
        legs.filter(pl.col("ratio") != 0)
        .with_columns(units=pl.col("quantity") / pl.col("ratio"))
        .group_by("strategy_id")
        .agg(lo=pl.col("units").min(), hi=pl.col("units").max())
        .filter(pl.col("lo") != pl.col("hi"))
    )
    if units.is_empty():
        return []
    breaks = set(
        store.read("reconciliation_breaks", columns=["strategy_id"])
        .drop_nulls()
        .collect()
        .get_column("strategy_id")
        .to_list()
    )
    working = set()
    for o in exchange.open_orders():
        ref = parse_order_ref(o.order_ref)
        if ref is not None and not o.status.is_done:
            working.add(ref.strategy_id)
    return [
        f"strategy {r['strategy_id']} is half-open (leg units {r['lo']}..{r['hi']}) with no "
        "working order and no reconciliation break"
        for r in units.iter_rows(named=True)
        if r["strategy_id"] not in breaks and r["strategy_id"] not in working
    ]


def _order_size(o: OrderState, exchange: SimExchange) -> tuple[int, float]:
    c = o.contract
    if c.sec_type is SecType.BAG:
        contracts, notional = 0, 0.0
        for leg in c.combo_legs:
            lc = exchange.contract_by_id(leg.con_id)
            q = o.quantity * leg.ratio
            contracts += q
            if lc is not None and lc.strike is not None:
                notional += q * lc.multiplier * lc.strike
        return contracts, notional
    if c.sec_type is SecType.STK:  # delivered stock closed: 100-share lots, at its limit
        lots = (o.quantity + SHARES_PER_LOT - 1) // SHARES_PER_LOT
        return lots, o.quantity * (o.limit_price or 0.0)
    strike = c.strike if c.strike is not None else 0.0
    return o.quantity, o.quantity * c.multiplier * strike


def orders_within_caps(
    orders: Sequence[OrderState], exchange: SimExchange, settings: Settings, store: DeltaStore
) -> list[str]:
    """Each of `orders` (V6's, sent this cycle) within the hard caps per order; new
    strategies per day within `limits.max_new_strategies_per_day`."""
    out: list[str] = []
    for o in orders:
        contracts, notional = _order_size(o, exchange)
        if contracts > MAX_CONTRACTS_PER_ORDER or notional > MAX_NOTIONAL_PER_ORDER:
            out.append(
                f"order {o.order_ref}: {contracts} contracts / {notional:,.0f} USD exceeds the "
                "hard caps per order"
            )
    # An entry counts once it filled (opened_at) or while it may still fill (PENDING);
    # one cancelled before any fill never held risk and does not count.
    strategies = store.read("strategies", columns=["origin", "status", "opened_at", "created_at"])
    opens = (
        strategies.filter(
            (pl.col("origin") == Origin.V6.value)
            & (
                pl.col("opened_at").is_not_null()
                | (pl.col("status") == StrategyStatus.PENDING.value)
            )
        )
        .with_columns(
            day=pl.coalesce("opened_at", "created_at").dt.convert_time_zone(MARKET_TZ.key).dt.date()
        )
        .group_by("day")
        .len()
        .filter(pl.col("len") > settings.limits.max_new_strategies_per_day)
        .collect()
    )
    out += [
        f"{r['len']} new strategies on {r['day']} (max_new_strategies_per_day "
        f"{settings.limits.max_new_strategies_per_day})"
        for r in opens.iter_rows(named=True)
    ]
    return out


def day_caps(orders: Sequence[OrderState], exchange: SimExchange) -> list[str]:
    """`orders` = V6's orders sent in one session: within the hard caps per day."""
    contracts, notional = 0, 0.0
    for o in orders:
        c, n = _order_size(o, exchange)
        contracts += c
        notional += n
    if contracts > MAX_CONTRACTS_PER_DAY or notional > MAX_NOTIONAL_PER_DAY:
        return [f"{contracts} contracts / {notional:,.0f} USD sent in one day: over the hard caps"]
    return []


def no_entry_while_open(run: CycleRun, new_refs: Sequence[str], store: DeltaStore) -> list[str]:
    """A gate that forbids entries means no OPEN intent was sent in that cycle."""
    if run.gate.entries_allowed:
        return []
    out: list[str] = []
    if run.report is not None and run.report.entries is not None and run.report.entries.results:
        out.append(f"cycle {run.run_id}: entries ran while the gate was {run.gate.mode.value}")
    if new_refs:
        opens = (
            store.read("order_intents", columns=["order_ref", "purpose"])
            .filter(pl.col("order_ref").is_in(list(new_refs)))
            .filter(pl.col("purpose") == IntentPurpose.OPEN.value)
            .collect()
        )
        out += [
            f"cycle {run.run_id}: opening order {ref} sent while the gate was {run.gate.mode.value}"
            for ref in opens.get_column("order_ref").to_list()
        ]
    return out


@dataclass
class TripWatch:
    """Re-derives the trip conditions from the soak's own record of cycle health, so a
    breaker that fails to trip is caught by something other than itself."""

    settings: Settings
    history: list[tuple[datetime, CycleHealth]] = field(default_factory=list)

    def conditions(self, at: datetime, health: CycleHealth) -> list[str]:
        self.history.append((at, health))
        b = self.settings.breaker
        fired: list[str] = []
        streak = 0
        for _, h in reversed(self.history):
            if h.ok:
                break
            streak += 1
        if streak >= b.consecutive_failures:
            fired.append("consecutive_failures")
        pnl, nl = health.daily_pnl, health.net_liq
        if math.isfinite(pnl) and math.isfinite(nl) and -pnl * 100.0 >= b.daily_loss_pct * nl:
            fired.append("daily_loss")
        recent = [h for t, h in self.history if t > at - HOUR]
        if sum(h.rejections for h in recent) > b.max_rejections_per_hour:
            fired.append("rejections")
        if health.disconnected_s > b.max_disconnect_s:
            fired.append("disconnected")
        if health.unresolved_breaks > 0:
            fired.append("unresolved_breaks")
        points = sum(h.data_points for h in recent)
        fails = sum(h.data_quality_failures for h in recent)
        if points > 0 and fails / points > b.max_data_quality_failure_rate:
            fired.append("data_quality")
        return fired

    def reset_streak(self) -> None:
        """A trip restarts the failure streak (the breaker counts failures since closing)."""
        self.history = [(t, h) for t, h in self.history if h.ok]


def breaker_tripped(conditions: list[str], breaker: Breaker, run: CycleRun) -> list[str]:
    if not conditions:
        return []
    state = breaker.state()
    if state is BreakerState.OPEN:
        return []
    return [
        f"cycle {run.run_id}: trip condition(s) {', '.join(conditions)} held but the breaker "
        f"is {state.value} after the cycle"
    ]


def tables_valid(store: DeltaStore) -> list[str]:
    """Every registered table that exists reads back and passes its own schema + checks."""
    out: list[str] = []
    for name, spec in store.registry.items():
        if not store.exists(name):
            continue
        try:
            prepare(spec, store.read(name).collect())
        except Exception as exc:  # any failure to read or validate is the violation
            out.append(f"table {name}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    return out
