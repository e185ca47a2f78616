"""`v6 status`, `v6 tables` and `v6 store repair` on a lost, rolled-back or file-missing
table: one line naming the table and the fix (exit 2), never a traceback or "empty"."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest
from cli_harness import one_line_error, v6
from prefect.settings import PREFECT_API_URL, temporary_settings

from core.store import REGISTRY, DeltaStore
from deployments import cli


@pytest.fixture
def data(no_config: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("V6_STORAGE__ROOT", str(no_config / "data"))
    monkeypatch.setattr(cli.console, "width", 200)
    root = no_config / "data"
    store = DeltaStore(root)
    for name in ("strategies", "legs", "fills"):
        store.merge(name, REGISTRY[name].example())
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        yield root


def test_lost_table_status_and_tables_say_so_in_one_line(
    capsys: pytest.CaptureFixture[str], data: Path
) -> None:
    code, out, _ = v6(capsys, "status")
    assert code == 0 and "open positions" in out
    shutil.rmtree(data / "strategies" / "_delta_log")

    code, out, err = v6(capsys, "status")
    one_line_error(code, err, "table strategies", "missing", "v6 store repair strategies")
    assert "no positions recorded yet" not in out

    code, out, err = v6(capsys, "tables")
    one_line_error(code, err, "table strategies", "missing")
    row = next(ln for ln in out.splitlines() if "strategies" in ln)
    assert "BROKEN" in row
    assert "BROKEN" not in next(ln for ln in out.splitlines() if " legs " in ln)


def test_tables_marks_a_table_with_a_missing_data_file_broken(
    capsys: pytest.CaptureFixture[str], data: Path
) -> None:
    next((data / "fills").rglob("*.parquet")).unlink()
    code, out, err = v6(capsys, "tables")
    one_line_error(code, err, "table fills", "missing data file", "v6 store repair fills")
    assert "BROKEN" in next(ln for ln in out.splitlines() if "fills" in ln)
    code, _, err = v6(capsys, "status")
    one_line_error(code, err, "cannot read the book", "v6 tables")


def test_store_repair_cannot_invent_a_lost_table_but_can_accept_the_loss(
    capsys: pytest.CaptureFixture[str], data: Path
) -> None:
    shutil.rmtree(data / "strategies" / "_delta_log")
    code, _, err = v6(capsys, "store", "repair", "strategies")
    one_line_error(code, err, "cannot repair strategies", "restore the table from backup")
    code, out, _ = v6(capsys, "store", "repair", "strategies", "--accept-loss")
    assert code == 0 and "loss accepted" in out
    code, out, _ = v6(capsys, "tables")
    assert code == 0 and "BROKEN" not in out
    code, _, err = v6(capsys, "store", "repair", "nope")
    one_line_error(code, err, "unknown table 'nope'")


def test_store_repair_restores_the_last_version_v6_wrote(
    capsys: pytest.CaptureFixture[str], data: Path
) -> None:
    from deltalake import DeltaTable, write_deltalake

    uri = str(data / "legs")
    v6_version = DeltaTable(uri).version()
    extra = REGISTRY["legs"].example().with_columns(leg_id=pl.lit("foreign"))
    write_deltalake(uri, extra, mode="append")  # written around V6
    added = set(DeltaTable(uri).file_uris()) - set(DeltaTable(uri, version=v6_version).file_uris())
    Path(added.pop()).unlink()
    code, _, err = v6(capsys, "tables")
    one_line_error(code, err, "table legs", "missing data file")
    code, out, _ = v6(capsys, "store", "repair", "legs")
    assert code == 0 and f"restored to version {v6_version}" in out
    code, out, _ = v6(capsys, "status")
    assert code == 0 and "open positions" in out
