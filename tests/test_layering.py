"""The architecture's import rules (DESIGN.md): core imports no Prefect and no upper layer;
tasks -> core; flows -> tasks, core; deployments -> flows. Checked statically (every
import statement, even inside functions) and dynamically (what importing core loads)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1]
LAYERS = ("core", "tasks", "flows", "deployments")
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "core": ("prefect", "tasks", "flows", "deployments"),
    "tasks": ("flows", "deployments"),
    "flows": ("deployments",),
    "deployments": (),
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(PKG).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                found.add(f"{base}.{node.module}" if node.module else base)
            elif node.module:
                found.add(node.module)
    return found


def violations(layer: str) -> list[str]:
    bad = []
    for path in sorted((PKG / layer).rglob("*.py")):
        for module in imported_modules(path):
            for prefix in FORBIDDEN[layer]:
                if module == prefix or module.startswith(prefix + "."):
                    bad.append(f"{path.relative_to(PKG)} imports {module}")
    return bad


@pytest.mark.parametrize("layer", LAYERS)
def test_layer_imports_only_downward(layer: str) -> None:
    assert (PKG / layer).is_dir(), f"layer {layer}/ is missing"
    assert violations(layer) == []


def test_checker_catches_a_violation(tmp_path: Path) -> None:
    bad = PKG / "core" / "_layering_probe_tmp.py"
    bad.write_text("def f():\n    from prefect import flow\n    return flow\n")
    try:
        assert any("_layering_probe_tmp.py imports prefect" in v for v in violations("core"))
    finally:
        bad.unlink()


def test_importing_all_of_core_loads_no_prefect() -> None:
    code = (
        "import importlib, pkgutil, sys, core as c\n"
        "for m in pkgutil.walk_packages(c.__path__, 'core.'):\n"
        "    importlib.import_module(m.name)\n"
        "upper = ('prefect.', 'tasks', 'flows', 'deployments')\n"
        "bad = sorted(k for k in sys.modules if k == 'prefect' or k.startswith(upper))\n"
        "print(bad[:5]); sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
