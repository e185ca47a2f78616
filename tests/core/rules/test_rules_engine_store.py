"""RulesEngine over a real Delta store: durable state across restarts, audit rows, commits."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
from rules_helpers import NOW, snapshot

from core.config import RuleSettings
from core.rules import RulesEngine
from core.store import DeltaStore


def engine(root: Path, settings: RuleSettings | None = None) -> RulesEngine:
    """A fresh store object and engine: what a restarted process builds."""
    return RulesEngine(DeltaStore(root), settings or RuleSettings())


def test_trailing_peak_survives_a_restart(store_root: Path) -> None:
    first = engine(store_root).run(snapshot({"profit_pct": 45.0}), NOW)
    assert first.decisions["action"].to_list() == ["HOLD"]  # 45 < partial 50: nothing yet

    restarted = engine(store_root)  # new process: nothing in memory
    assert restarted.load_state()["peak_profit_pct"].to_list() == [45.0]
    later = restarted.run(snapshot({"profit_pct": 17.0}), NOW + timedelta(minutes=5))
    d = later.decisions.row(0, named=True)
    assert (d["action"], d["rule"], d["peak_profit_pct"]) == ("CLOSE", "trailing_stop", 45.0)
    assert "45.0%" in d["reason"] and "18.0%" in d["reason"]


def test_without_the_stored_peak_the_same_snapshot_holds(store_root: Path) -> None:
    # The control for the restart test: the close above comes from the remembered peak.
    run = engine(store_root).run(snapshot({"profit_pct": 17.0}), NOW)
    assert run.decisions["action"].to_list() == ["HOLD"]


def test_peak_never_decreases(store_root: Path) -> None:
    eng = engine(store_root)
    for i, profit in enumerate([30.0, 38.0, 33.0, 20.0]):
        eng.run(snapshot({"profit_pct": profit}), NOW + timedelta(minutes=5 * i))
    assert eng.load_state()["peak_profit_pct"].to_list() == [38.0]


def test_partial_take_profit_is_taken_once_and_can_be_rearmed(store_root: Path) -> None:
    eng = engine(store_root)
    first = eng.run(snapshot({"profit_pct": 55.0}), NOW)
    assert first.decisions["action"].to_list() == ["REDUCE"]
    again = engine(store_root).run(snapshot({"profit_pct": 56.0}), NOW + timedelta(minutes=5))
    assert again.decisions["action"].to_list() == ["HOLD"]
    eng.clear_reduced(["S1"], NOW + timedelta(minutes=6))  # the REDUCE order did not fill
    third = eng.run(snapshot({"profit_pct": 56.0}), NOW + timedelta(minutes=10))
    assert third.decisions["action"].to_list() == ["REDUCE"]


def test_entry_values_are_write_once(store_root: Path) -> None:
    eng = engine(store_root)
    entries = pl.DataFrame({"strategy_id": ["S1", "S2"], "entry_iv": [0.20, 0.30]})
    eng.record_entries(entries, NOW)
    eng.record_entries(
        pl.DataFrame({"strategy_id": ["S1"], "entry_iv": [0.50], "entry_vix": [21.0]}), NOW
    )
    st = eng.load_state().sort("strategy_id")
    assert st["entry_iv"].to_list() == [0.20, 0.30]
    assert st["entry_vix"].to_list() == [21.0, None]  # a missing value may still be filled
    # The evaluation uses the stored entry IV even when the snapshot says otherwise.
    run = eng.run(snapshot({"entry_iv": 0.5, "iv": 0.22}), NOW)
    assert run.decisions["entry_iv"].to_list() == [0.20]
    assert eng.load_state().filter(pl.col("strategy_id") == "S1")["entry_iv"].to_list() == [0.20]


def test_snapshot_entry_values_are_remembered_for_later_cycles(store_root: Path) -> None:
    engine(store_root).run(snapshot({"entry_iv": 0.3, "iv": 0.3, "entry_vix": 17.0}), NOW)
    later = engine(store_root).run(
        snapshot({"entry_iv": None, "iv": 0.3, "entry_vix": None}), NOW + timedelta(minutes=5)
    )
    assert later.decisions["action"].to_list() == ["HOLD"]  # not NO_DATA: entry remembered


def test_each_run_writes_one_decision_row_per_strategy_in_one_commit(store_root: Path) -> None:
    store = DeltaStore(store_root)
    eng = RulesEngine(store, RuleSettings())
    snap = snapshot(
        {"strategy_id": "A"}, {"strategy_id": "B", "profit_pct": 85.0}, {"strategy_id": "C"}
    )
    eng.run(snap, NOW)
    v_dec, v_state = store.stats("decisions").version, store.stats("rule_state").version
    run = eng.run(snap, NOW + timedelta(minutes=5))
    assert store.stats("decisions").version == v_dec + 1
    assert run.decisions_write.rows_inserted == 3
    assert store.stats("rule_state").version <= v_state + 1
    audit = store.read("decisions").collect()
    assert audit.height == 6
    assert audit.group_by("evaluated_at").len()["len"].to_list() == [3, 3]
    row = audit.filter(pl.col("strategy_id") == "B").sort("evaluated_at").row(0, named=True)
    assert (row["action"], row["rule"], row["profit_pct"]) == ("CLOSE", "take_profit", 85.0)


def test_a_quiet_cycle_commits_no_state(store_root: Path) -> None:
    store = DeltaStore(store_root)
    eng = RulesEngine(store, RuleSettings())
    eng.run(snapshot({"profit_pct": 10.0}), NOW)
    version = store.stats("rule_state").version
    run = eng.run(snapshot({"profit_pct": 8.0}), NOW + timedelta(minutes=5))  # peak unchanged
    assert run.state_rows == 0
    assert store.stats("rule_state").version == version


def test_replaying_an_evaluation_adds_no_decisions(store_root: Path) -> None:
    store = DeltaStore(store_root)
    eng = RulesEngine(store, RuleSettings())
    eng.run(snapshot({}), NOW)
    replay = eng.run(snapshot({}), NOW)
    assert replay.decisions_write.rows_inserted == 0
    assert store.read("decisions").collect().height == 1


def test_run_counts_actions_including_no_data(store_root: Path) -> None:
    snap = snapshot(
        {"strategy_id": "A"},
        {"strategy_id": "B", "net_delta": None},
        {"strategy_id": "C", "dte": 0},
        {"strategy_id": "D", "profit_pct": None},
    )
    run = engine(store_root).run(snap, NOW)
    assert run.counts == {"HOLD": 1, "CLOSE": 1, "REDUCE": 0, "ROLL": 0, "NO_DATA": 2}
    assert run.no_data == 2
    assert run.actionable()["strategy_id"].to_list() == ["C"]


def test_actionable_is_most_urgent_first(store_root: Path) -> None:
    snap = snapshot(
        {"strategy_id": "roll", "dte": 23},
        {"strategy_id": "delta", "net_delta": 0.5},
        {"strategy_id": "stop", "profit_pct": -250.0},
        {"strategy_id": "hold"},
    )
    run = engine(store_root).run(snap, NOW)
    assert run.actionable()["strategy_id"].to_list() == ["stop", "delta", "roll"]


def test_empty_snapshot_writes_nothing(store_root: Path) -> None:
    store = DeltaStore(store_root)
    run = RulesEngine(store, RuleSettings()).run(snapshot({}).clear(), NOW)
    assert run.decisions.height == 0
    assert run.decisions_write.version is None and run.state_write.version is None


def test_engine_rejects_bad_settings_at_construction(store_root: Path) -> None:
    with pytest.raises(ValueError, match="unknown rule"):
        engine(store_root, RuleSettings(disabled=["nope"]))
    with pytest.raises(ValueError, match="unknown regime"):
        engine(store_root, RuleSettings(profit_target_pct={"calm": 90.0}))


def test_naive_now_is_rejected(store_root: Path) -> None:
    with pytest.raises(ValueError, match="naive"):
        engine(store_root).run(snapshot({}), NOW.replace(tzinfo=None))
