"""Faults of wrong state that reads fine (issue 18): V6 must fail closed on each.

A lost book table (its Delta log moved away) or a rolled-back table (its latest commit
removed), an absurd or undecodable position report from the gateway, and a second cycle
holding the lease. Each is armed just before a cycle and put back right after it, as a person
would (files restored, the fake report gone, the other run finished), so the soak goes on
on the real state; the breaker recovers through its own cool-down. What must hold for the
cycle that met one: no order reached the broker, and

- a lost / rolled-back table: the run ended StoreCorrupt with the breaker OPEN;
- an absurd / undecodable position: nothing was booked (no new fill) and the breaker OPEN;
- a concurrent cycle: the run was skipped without building a broker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from core.chaos.scheduler import FaultKind
from core.cycle.lease import CycleLease, Held
from core.cycle.run import RECONCILE, STORE_CORRUPT, CycleRun
from core.risk.breaker import Breaker, BreakerState
from core.sim.exchange import SimExchange
from core.sim.gateway.server import GatewayServer
from core.store.delta import DeltaStore

FAIL_CLOSED_FAULTS = frozenset(
    {
        FaultKind.LOST_TABLE,
        FaultKind.ROLLED_BACK_TABLE,
        FaultKind.ABSURD_POSITION,
        FaultKind.UNDECODABLE_MESSAGE,
        FaultKind.CONCURRENT_CYCLE,
    }
)
BOOK_TABLES = ("strategies", "legs", "orders", "fills")
# A rollback needs a latest commit without a checkpoint at its version: after the nightly
# checkpoint the book tables may hold none until they trade again, so tables every cycle
# writes stand in (never risk_state: lost, the breaker cannot trip; nor the lease).
ROLLBACK_TABLES = (*BOOK_TABLES, "positions_snapshots", "cycle_health")
OTHER_HOLDER = "chaos-other-cycle"
ASIDE = ".chaos-aside"
ABSURD_REPORT = ("1e15", "1e300")  # a position and avgCost that read fine and are wrong
UNDECODABLE_REPORT = ("1e15x", "0")  # ib_async cannot decode it and drops the message


@dataclass
class Tampered:
    """What one armed fault changed, to check and to put back after the cycle."""

    kind: FaultKind
    fills_before: int
    brokers_before: int
    moved: list[Path] = field(default_factory=list)  # originals, now at `path + ASIDE`
    lease: Held | None = None
    reported: bool = False  # a fake position report was armed (a position existed)

    def fired(self, run: CycleRun | None) -> bool:
        """Whether the fault met the cycle: a table V6 wrote before was there to tamper with,
        a position to misreport and a reconciliation to read it, a lease to take."""
        if self.kind in (FaultKind.LOST_TABLE, FaultKind.ROLLED_BACK_TABLE):
            return bool(self.moved) and run is not None and run.outcome.name == STORE_CORRUPT
        if self.kind is FaultKind.CONCURRENT_CYCLE:
            return self.lease is not None
        reconciled = run is not None and run.report is not None and RECONCILE in run.report.steps
        return self.reported and reconciled


def arm_fail_closed(
    kind: FaultKind,
    store: DeltaStore,
    gw: GatewayServer,
    ex: SimExchange,
    *,
    brokers_built: int,
    lease_ttl: timedelta,
) -> Tampered:
    """Arm `kind` on the store or the gateway before a cycle (`restore` undoes it)."""
    t = Tampered(kind, _fills(store), brokers_built)
    match kind:
        case FaultKind.LOST_TABLE:
            t.moved = _aside(_lost_table(store))
        case FaultKind.ROLLED_BACK_TABLE:
            t.moved = _aside(_latest_commit(store))
        case FaultKind.ABSURD_POSITION | FaultKind.UNDECODABLE_MESSAGE:
            held = [p for p in ex.positions() if p.quantity != 0]
            if held:
                raw = ABSURD_REPORT if kind is FaultKind.ABSURD_POSITION else UNDECODABLE_REPORT
                gw.report_position(held[0].contract.con_id, *raw)
                t.reported = True
        case FaultKind.CONCURRENT_CYCLE:
            got = CycleLease(store, lease_ttl).acquire(OTHER_HOLDER)
            t.lease = got if isinstance(got, Held) else None
    return t


def restore(t: Tampered, store: DeltaStore, gw: GatewayServer, lease_ttl: timedelta) -> None:
    """Put back what `arm_fail_closed` changed: the files, the reports, the lease."""
    for original in t.moved:
        Path(f"{original}{ASIDE}").rename(original)
    if t.reported:
        gw.faults.position_reports.clear()
    if t.lease is not None:
        CycleLease(store, lease_ttl).release(t.lease)


def failed_closed(
    t: Tampered,
    run: CycleRun | None,
    store: DeltaStore,
    breaker: Breaker,
    new_orders: int,
    brokers_built: int,
) -> list[str]:
    """Violations of failing closed on the cycle that met fault `t` (see the module doc)."""
    out = [] if new_orders == 0 else [f"{t.kind.value}: {new_orders} order(s) sent on wrong state"]
    if t.kind is FaultKind.CONCURRENT_CYCLE:
        if t.lease is None:
            return out
        if run is not None:
            out.append(f"{t.kind.value}: the cycle ran while another held the lease")
        if brokers_built != t.brokers_before:
            out.append(f"{t.kind.value}: a broker was built while another cycle held the lease")
        return out
    if t.kind in (FaultKind.ABSURD_POSITION, FaultKind.UNDECODABLE_MESSAGE):
        fills = _fills(store)
        if fills != t.fills_before:
            out.append(
                f"{t.kind.value}: fills went from {t.fills_before} to {fills} on a suspect report"
            )
    state = breaker.state()
    if state is not BreakerState.OPEN:
        out.append(f"{t.kind.value}: the breaker is {state.value} after the cycle, not OPEN")
    return out


def _fills(store: DeltaStore) -> int:
    return store.read("fills", columns=["exec_id"]).collect().height


def _recorded(store: DeltaStore, names: tuple[str, ...]) -> list[Path]:
    """Tables of `names` V6 committed before (in the manifest) that exist on disk."""
    versions = {} if store.manifest is None else store.manifest.read()
    return [
        Path(store.uri(n))
        for n in names
        if n in versions and (Path(store.uri(n)) / "_delta_log").is_dir()
    ]


def _lost_table(store: DeltaStore) -> list[Path]:
    return [p / "_delta_log" for p in _recorded(store, BOOK_TABLES)[:1]]


def _latest_commit(store: DeltaStore) -> list[Path]:
    """The newest commit file of a table past its first version and not checkpointed at
    that version (a checkpoint would still carry the version the commit removed)."""
    for table in _recorded(store, ROLLBACK_TABLES):
        log = table / "_delta_log"
        commits = sorted(log.glob("[0-9]*.json"))
        if len(commits) < 2:
            continue
        latest = commits[-1]
        if not (log / f"{latest.stem}.checkpoint.parquet").exists():
            return [latest]
    return []


def _aside(paths: list[Path]) -> list[Path]:
    for p in paths:
        p.rename(f"{p}{ASIDE}")
    return paths
