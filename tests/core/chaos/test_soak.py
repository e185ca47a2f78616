"""Chaos soak: the trading cycle (IBBroker + ib_async against the gateway simulator, a
Delta store on disk, a fast SimClock) over simulated sessions while seeded faults fire.

The short soak runs by default (2 fixed seeds, 5 sessions, a cycle every 2 simulated
hours): every fault kind must fire, the soak must stay clean, and the handling each kind
needs must be visible in the report and on disk. The fail-closed faults (wrong state that
reads fine) get a short soak of their own, so each soak fits all its kinds in its cycles.
Unit tests show each invariant can fail.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from core.chaos import invariants as inv
from core.chaos.fail_closed import FAIL_CLOSED_FAULTS, Tampered, failed_closed
from core.chaos.faults import CONFLICT_RUN_ID, CONFLICT_TABLE
from core.chaos.scheduler import CYCLE_KINDS, FaultKind, plan_faults
from core.chaos.soak import WRITER_ROUNDS, ChaosReport, run_chaos
from core.clock import SimClock
from core.config import Settings
from core.domain.breaks import BreakKind
from core.risk.breaker import Breaker, CycleHealth
from core.store import DeltaStore

SETTINGS: dict[str, Any] = {
    "universe": {"underlyings": ["SPY"]},
    "strategies": {
        "enabled": ["iron_condor", "bull_put_spread"],
        "min_score": 0.0,
        "fill_timeout_s": 6.0,
        "reprice_steps": 2,
        "fill_poll_s": 1.0,
    },
    # IB's money-path habits come from the seeded plan here (corrections, late commissions,
    # fill-after-cancel, assignment are fault kinds), not also from the simulator's
    # background rates, so each seed's plan says exactly what happens (v6 chaos keeps them).
    "sim": {
        "correction_rate": 0.0,
        "late_commission_rate": 0.0,
        "cancel_fill_rate": 0.0,
        "dividend_assignment_rate": 0.0,
        "put_assignment_rate": 0.0,
    },
}
# The module's soaks run in the first test's setup: give them room on a loaded machine
# (the suite's 300 s per test is for single tests; these are several minutes of cycles).
pytestmark = pytest.mark.timeout(1200)
SEEDS = (2, 5)
# IB's data and connectivity path (issue 24) has a soak of its own below
DATA_PATH_KINDS = (FaultKind.DATA_LOST_1101, FaultKind.ENTITLEMENT, FaultKind.RESET_WINDOW)
SHORT_KINDS = tuple(
    k for k in CYCLE_KINDS if k not in FAIL_CLOSED_FAULTS and k not in DATA_PATH_KINDS
)
FAIL_CLOSED_KINDS = tuple(k for k in CYCLE_KINDS if k in FAIL_CLOSED_FAULTS)
FAIL_CLOSED_SEED = 3
WAITS_FOR_THE_MARKET = frozenset({FaultKind.EXPIRY_EXERCISE})  # fires once an option is ITM
DATA_PATH_SEED = 4


# -- the seeded plan ------------------------------------------------------------------------


def test_plan_is_a_function_of_the_seed_and_schedules_every_kind() -> None:
    a, b = plan_faults(7, 30, 5), plan_faults(7, 30, 5)
    assert a == b
    assert plan_faults(8, 30, 5) != a
    counts = a.counts()
    assert all(counts[k.value] >= 1 for k in FaultKind)
    assert a.at(0) == ()  # the first cycle is clean: the book needs positions to break
    assert all(len(ks) == 1 for ks in a.by_cycle.values())


def test_plan_rejects_bad_input_naming_the_value() -> None:
    with pytest.raises(ValueError, match="cycles"):
        plan_faults(1, 0, 1)
    with pytest.raises(ValueError, match="rate"):
        plan_faults(1, 10, 1, rate=1.5)
    with pytest.raises(ValueError, match="kinds"):
        plan_faults(1, 10, 1, kinds=(FaultKind.CRASH_DAY,))


def test_plan_draws_only_the_given_kinds() -> None:
    plan = plan_faults(7, 12, 3, kinds=FAIL_CLOSED_KINDS)
    drawn = {k for ks in plan.by_cycle.values() for k in ks}
    assert drawn == set(FAIL_CLOSED_KINDS)


# -- the invariants can fail ----------------------------------------------------------------


def test_duplicated_exec_id_is_a_violation(tmp_path: Path) -> None:
    store = DeltaStore(tmp_path)
    example = store.spec("fills").example
    assert example is not None
    row = example()
    store.append("fills", row)
    assert inv.exec_ids_unique(store) == []
    store.append("fills", row)  # a blind append bypasses the key: the invariant catches it
    found = inv.exec_ids_unique(store)
    assert len(found) == 1 and "recorded 2 times" in found[0]


def test_tables_valid_reads_every_table_back(tmp_path: Path) -> None:
    store = DeltaStore(tmp_path)
    store.append(CONFLICT_TABLE, store.spec(CONFLICT_TABLE).example())  # type: ignore[misc]
    assert inv.tables_valid(store) == []


def test_failing_open_on_wrong_state_is_a_violation(tmp_path: Path) -> None:
    store = DeltaStore(tmp_path)
    breaker = Breaker(store, Settings().breaker, SimClock(datetime(2026, 3, 2, 15, tzinfo=UTC)))
    lost = Tampered(FaultKind.LOST_TABLE, fills_before=0, brokers_before=0)
    found = failed_closed(lost, None, store, breaker, new_orders=2, brokers_built=0)
    assert len(found) == 2
    assert "2 order(s) sent" in found[0] and "not OPEN" in found[1]
    breaker.trip("test", "tester")
    assert failed_closed(lost, None, store, breaker, new_orders=0, brokers_built=0) == []
    absurd = Tampered(FaultKind.ABSURD_POSITION, fills_before=0, brokers_before=0)
    store.append("fills", store.spec("fills").example())  # type: ignore[misc]
    found = failed_closed(absurd, None, store, breaker, new_orders=0, brokers_built=0)
    assert found == ["absurd_position: fills went from 0 to 1 on a suspect report"]


def _health(**kw: Any) -> CycleHealth:
    values: dict[str, Any] = {
        "ok": True,
        "failure": None,
        "daily_pnl": 0.0,
        "net_liq": 100_000.0,
        "rejections": 0,
        "disconnected_s": 0.0,
        "unresolved_breaks": 0,
        "data_quality_failures": 0,
        "data_points": 4,
    }
    values.update(kw)
    if not values["ok"] and values["failure"] is None:
        values["failure"] = "x: boom"
    return CycleHealth(**values)


def test_trip_watch_rederives_each_condition() -> None:
    settings = Settings(breaker={"consecutive_failures": 2, "max_rejections_per_hour": 1})
    t0 = datetime(2026, 3, 2, 15, tzinfo=UTC)
    watch = inv.TripWatch(settings)
    assert watch.conditions(t0, _health()) == []
    assert watch.conditions(t0 + timedelta(minutes=5), _health(ok=False)) == []
    assert "consecutive_failures" in watch.conditions(t0 + timedelta(minutes=10), _health(ok=False))
    watch.reset_streak()
    at = t0 + timedelta(hours=3)
    assert watch.conditions(at, _health(unresolved_breaks=1)) == ["unresolved_breaks"]
    assert watch.conditions(at, _health(rejections=2)) == ["rejections"]
    assert "daily_loss" in watch.conditions(at + timedelta(hours=2), _health(daily_pnl=-5_000.0))
    nan = watch.conditions(
        at + timedelta(hours=4), _health(data_quality_failures=4, daily_pnl=math.nan)
    )
    assert nan == ["data_quality"]


# -- the short soak -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def soaks(tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple[ChaosReport, Path]]:
    import asyncio

    out: dict[int, tuple[ChaosReport, Path]] = {}
    for seed in SEEDS:
        root = tmp_path_factory.mktemp(f"chaos-{seed}")
        report = asyncio.run(
            run_chaos(
                Settings(**SETTINGS),
                days=5,
                seed=seed,
                cycle_minutes=120,
                root=root,
                kinds=SHORT_KINDS,
            )
        )
        out[seed] = (report, root)
    return out


@pytest.mark.gateway
@pytest.mark.parametrize("seed", SEEDS)
def test_short_soak_every_fault_fires(
    soaks: dict[int, tuple[ChaosReport, Path]], seed: int
) -> None:
    """Every kind fires and is handled, except those that wait for the market: an exercise
    needs an option in the money (IB never settles an out-of-the-money option before its
    expiry), which five quiet sessions of out-of-the-money spreads rarely hold. That fault
    stays armed until one is (`tests/core/sim/test_sim_ib_habits.py`), fires in the long
    soak, and what it leaves is handled like any delivery (`test_short_soak_stays_clean`:
    fired == handled; `tests/flows/test_trading_cycle.py` for the cycle after it)."""
    report, _root = soaks[seed]
    text = "\n".join(report.lines())
    for kind in (*SHORT_KINDS, FaultKind.CRASH_DAY):
        if kind in WAITS_FOR_THE_MARKET:
            continue
        assert report.fired[kind.value] >= 1, f"{kind.value} never fired\n{text}"
        assert report.handled[kind.value] >= 1, f"{kind.value} not handled\n{text}"


@pytest.mark.gateway
@pytest.mark.parametrize("seed", SEEDS)
def test_short_soak_stays_clean(soaks: dict[int, tuple[ChaosReport, Path]], seed: int) -> None:
    report, _root = soaks[seed]
    text = "\n".join(report.lines())
    assert report.ok, text
    assert report.cycles == 20, text
    for kind in (*SHORT_KINDS, FaultKind.CRASH_DAY):  # whatever fired was handled
        assert report.handled[kind.value] == report.fired[kind.value], f"{kind.value}\n{text}"
    for check in (
        "book_matches_broker",
        "exec_id_once",
        "no_half_open",
        "order_caps",
        "day_caps",
        "no_entry_while_open",
        "breaker_trips",
        "tables_valid",
        "concurrent_writer",
        "maintenance_ok",
    ):
        assert report.checks[check] >= 1, f"{check} never ran\n{text}"
    assert report.maintenance_runs == report.days, text  # nightly, as in production
    assert report.wall_s > 0 and "per simulated day" in text  # reported, never a timed test


@pytest.mark.gateway
@pytest.mark.parametrize("seed", SEEDS)
def test_short_soak_handles_each_fault_as_designed(
    soaks: dict[int, tuple[ChaosReport, Path]], seed: int
) -> None:
    report, root = soaks[seed]
    text = "\n".join(report.lines())
    store = DeltaStore(root)
    # process kill: the run was cut short, a fresh runtime carried on on the same store
    assert report.outcomes["Killed"] == report.restarts >= 1, text
    assert report.cycles == sum(report.outcomes.values()), text
    # the concurrent writer's commits all landed next to the cycle's, none lost
    writer_rows = (
        store.read(CONFLICT_TABLE)
        .filter(pl.col("evaluation_id").str.starts_with(CONFLICT_RUN_ID))
        .collect()
    )
    assert writer_rows.height == report.conflict_rows
    assert writer_rows.height == WRITER_ROUNDS * report.fired[FaultKind.COMMIT_CONFLICT.value]
    cycle_rows = store.read(CONFLICT_TABLE).collect().height - writer_rows.height
    assert cycle_rows > 0
    # NaN greeks / stale / crossed quotes / lost lines trip the breaker, and it recovers
    assert report.trips >= 1 and report.recoveries >= 1, text
    health = store.read("cycle_health").collect()
    assert health.filter(~pl.col("ok")).height >= 1  # faults made cycles fail, recorded
    # duplicated execution reports: each exec_id once in the book, and the book was checked
    fills = store.read("fills").collect()
    assert fills.height > 0 and fills.get_column("exec_id").n_unique() == fills.height
    # the rejected order was counted against the breaker's rejection budget
    assert health.get_column("rejections").sum() >= 1, text


# -- the fail-closed soak -------------------------------------------------------------------


@pytest.fixture(scope="module")
def fail_closed_soak(tmp_path_factory: pytest.TempPathFactory) -> tuple[ChaosReport, Path]:
    import asyncio

    root = tmp_path_factory.mktemp("chaos-fail-closed")
    report = asyncio.run(
        run_chaos(
            Settings(**SETTINGS),
            days=3,
            seed=FAIL_CLOSED_SEED,
            cycle_minutes=120,
            root=root,
            kinds=FAIL_CLOSED_KINDS,
        )
    )
    return report, root


@pytest.mark.gateway
def test_fail_closed_soak_meets_wrong_state_and_trades_nothing_on_it(
    fail_closed_soak: tuple[ChaosReport, Path],
) -> None:
    report, root = fail_closed_soak
    text = "\n".join(report.lines())
    assert report.ok, text
    for kind in FAIL_CLOSED_KINDS:
        assert report.fired[kind.value] >= 1, f"{kind.value} never fired\n{text}"
        assert report.handled[kind.value] >= 1, f"{kind.value} not handled\n{text}"
    assert report.checks["failed_closed"] >= len(FAIL_CLOSED_KINDS), text
    # lost and rolled-back tables: StoreCorrupt; another cycle's lease: skipped
    assert report.outcomes["StoreCorrupt"] >= 2 and report.outcomes["Skipped"] >= 1, text
    # the suspect reports were breaks that tripped the breaker, never booked
    store = DeltaStore(root)
    kinds = set(store.read("reconciliation_breaks").collect().get_column("kind").to_list())
    assert {BreakKind.ABSURD_REPORT.value, BreakKind.MISSING_POSITION.value} <= kinds, kinds
    fills = store.read("fills").collect()
    assert fills.height > 0 and fills.get_column("quantity").abs().max() < 1_000, text
    assert report.trip_reasons["data_quality"] >= 2, text
    # put back as a person would, the soak carried on and traded again
    assert report.recoveries >= 1 and report.orders > 0, text


# -- the data-path soak ----------------------------------------------------------------------


@pytest.mark.gateway
def test_data_path_soak_meets_1101_entitlements_and_a_reset_window(tmp_path: Path) -> None:
    """1101 (every subscription lost), 10197 (a competing session withholds all data) and
    the gateway down inside the planned outage window, drawn as faults: every invariant
    holds, the reset-window cycle ends BrokerUnavailable with the breaker untouched, and
    withheld quotes are failed data items the breaker sees."""
    import asyncio

    report = asyncio.run(
        run_chaos(
            Settings(**SETTINGS),
            days=1,
            seed=DATA_PATH_SEED,
            cycle_minutes=120,
            root=tmp_path,
            kinds=DATA_PATH_KINDS,
        )
    )
    text = "\n".join(report.lines())
    assert report.ok, text
    for kind in DATA_PATH_KINDS:
        assert report.fired[kind.value] >= 1, f"{kind.value} never fired\n{text}"
        assert report.handled[kind.value] == report.fired[kind.value], f"{kind.value}\n{text}"
    assert report.checks["reset_window_held"] >= 1, text
    assert report.checks["breaker_trips"] >= 1 and report.checks["book_matches_broker"] >= 1
    assert report.outcomes["BrokerUnavailable"] >= 1, text
    health = DeltaStore(tmp_path).read("cycle_health").collect()
    assert health.get_column("data_quality_failures").sum() >= 1, text  # 10197 was counted
