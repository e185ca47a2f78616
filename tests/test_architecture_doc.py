"""ARCHITECTURE.md is the living map of the code: its tables are renderings of the code,
checked here, so the page cannot drift from what V6 does."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from test_layering import CORE_ORDER

from core.risk.breaker import moves_markdown
from core.store.registry import REGISTRY

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "ARCHITECTURE.md").read_text()


def storage_table() -> str:
    rows = [
        f"| `{name}` | {', '.join(spec.keys) or '-'} | {', '.join(spec.partition_by) or '-'} "
        f"| {spec.description} |"
        for name, spec in REGISTRY.items()
    ]
    return "\n".join(["| table | keys | partitioned by | holds |", "|---|---|---|---|", *rows])


def test_storage_table_lists_every_table_as_the_registry_declares_it() -> None:
    assert storage_table() in DOC, "regenerate the Storage table:\n" + storage_table()


def test_core_package_order_is_the_one_the_layering_test_enforces() -> None:
    section = DOC.split("### Inside core", 1)[1].split("\n## ", 1)[0]
    listed = [
        name
        for cell in re.findall(r"^\| \d+ \| (.+?) \|", section, flags=re.MULTILINE)
        for name in re.findall(r"`(\w+)`", cell)
    ]
    assert listed == list(CORE_ORDER)


def test_nothing_in_the_repository_points_outside_it() -> None:
    """The design notes outside the repository are not part of a clone."""
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    pointing = [
        path
        for path in tracked
        if path
        and (ROOT / path).is_file()
        and path != "tests/test_architecture_doc.py"
        and "../shared" in (ROOT / path).read_text(errors="ignore")
    ]
    assert pointing == []


def test_breaker_table_is_the_one_the_breaker_runs_on() -> None:
    assert moves_markdown() in DOC, "regenerate the breaker table:\n" + moves_markdown()
