"""The architecture's import rules (ARCHITECTURE.md), checked on every import statement,
even inside functions:

- layers: core imports no Prefect and no upper layer; tasks -> core; flows -> tasks, core;
  deployments -> flows, tasks, core;
- inside core, a package imports only the packages listed before it in `CORE_ORDER`;
- no import loops between modules anywhere in the four layers;
- the layers are top-level packages of this checkout and nothing shadows them.

The checker takes a root directory, so the tests can plant a violation in `tmp_path` and
see it caught, without writing into the source tree.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("core", "tasks", "flows", "deployments")
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "core": ("prefect", "tasks", "flows", "deployments"),
    "tasks": ("flows", "deployments"),
    "flows": ("deployments",),
    "deployments": (),
}
# core's packages, bottom first: each may import only those before it (ARCHITECTURE.md).
CORE_ORDER = (
    "domain",
    "clock",
    "identity",
    "config",
    "config_example",
    "calendar",
    "run_guard",
    "pricing",
    "store",
    "sim",
    "broker",
    "reconcile",
    "book",
    "risk",
    "rules",
    "analysis",
    "marketdata",
    "runtime",
    "strategy",
    "execution",
    "cycle",
    "backtest",
    "chaos",
    "controls",
    "views",
)


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def modules(root: Path) -> dict[str, Path]:
    """Every module of the four layers under `root`, by dotted name (cached per root)."""
    found: dict[str, Path] = {}
    for layer in LAYERS:
        for path in sorted((root / layer).rglob("*.py")):
            found[module_name(root, path)] = path
    return found


@functools.cache
def imported(root: Path, path: Path) -> tuple[str, ...]:
    """Dotted names a module imports (cached). `from pkg import name` gives `pkg.name` when
    that is a module of the tree (a submodule), else `pkg`."""
    return tuple(_imports(root, path))


def _imports(root: Path, path: Path) -> Iterator[str]:
    known = modules(root)
    name = module_name(root, path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
            yield from subs or [base]


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_violations(root: Path, layer: str) -> list[str]:
    return [
        f"{path.relative_to(root)} imports {module}"
        for name, path in modules(root).items()
        if _under(name, layer)
        for module in imported(root, path)
        if any(_under(module, bad) for bad in FORBIDDEN[layer])
    ]


def core_rank(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "core" or len(parts) < 2:
        return None
    return CORE_ORDER.index(parts[1]) if parts[1] in CORE_ORDER else None


def upward_imports(root: Path) -> list[str]:
    """Imports inside core from a package at or above the importer's place in CORE_ORDER
    (a package's own modules excepted); a core package missing from CORE_ORDER is one too."""
    bad: list[str] = []
    for name, path in modules(root).items():
        if not _under(name, "core") or name == "core":
            continue
        own = core_rank(name)
        if own is None:
            bad.append(f"{path.relative_to(root)}: package not in CORE_ORDER")
            continue
        for module in imported(root, path):
            rank = core_rank(module)
            if rank is not None and rank > own:
                bad.append(f"{path.relative_to(root)} imports {module} (above it)")
    return bad


def import_loops(root: Path) -> list[list[str]]:
    """Strongly connected groups of modules (size > 1, or a module importing itself)."""
    known = modules(root)
    graph = {
        name: sorted({m for m in imported(root, path) if m in known and m != name})
        for name, path in known.items()
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    loops: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan; the module graph is small, recursion is fine
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                loops.append(sorted(group))

    for name in graph:
        if name not in index:
            visit(name)
    return loops


def plant(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for layer in LAYERS:
        (root / layer).mkdir(exist_ok=True)
    return root


# -- the rules hold on this checkout ---------------------------------------------------------


@pytest.mark.parametrize("layer", LAYERS)
def test_layer_imports_only_downward(layer: str) -> None:
    assert (ROOT / layer / "__init__.py").is_file(), f"layer {layer}/ is missing"
    assert layer_violations(ROOT, layer) == []


def test_core_packages_import_only_downward() -> None:
    assert upward_imports(ROOT) == []


def test_no_import_loops() -> None:
    assert import_loops(ROOT) == []


# -- the checker catches what it is for ------------------------------------------------------


def test_checker_catches_prefect_in_core(tmp_path: Path) -> None:
    root = plant(tmp_path, {"core/probe.py": "def f():\n    from prefect import flow\n"})
    assert layer_violations(root, "core") == ["core/probe.py imports prefect"]


def test_checker_catches_an_upward_layer_import(tmp_path: Path) -> None:
    root = plant(tmp_path, {"tasks/probe.py": "import flows.trading_cycle\n"})
    assert layer_violations(root, "tasks") == ["tasks/probe.py imports flows.trading_cycle"]


def test_checker_catches_an_upward_import_inside_core(tmp_path: Path) -> None:
    root = plant(
        tmp_path,
        {
            "core/store/__init__.py": "",
            "core/store/tables.py": "from core.book.ledger import Ledger\n",
            "core/book/__init__.py": "",
            "core/book/ledger.py": "from core.store import tables\n",
        },
    )
    assert upward_imports(root) == ["core/store/tables.py imports core.book.ledger (above it)"]


def test_checker_catches_an_import_loop(tmp_path: Path) -> None:
    root = plant(
        tmp_path,
        {
            "core/cycle/__init__.py": "",
            "core/cycle/run.py": "from core.cycle.steps import step\n",
            "core/cycle/steps.py": "def step():\n    from core.cycle import run\n",
        },
    )
    assert import_loops(root) == [["core.cycle.run", "core.cycle.steps"]]


# -- importing the layers --------------------------------------------------------------------


def test_importing_all_of_core_loads_no_prefect() -> None:
    code = (
        "import importlib, pkgutil, sys, core as c\n"
        "for m in pkgutil.walk_packages(c.__path__, 'core.'):\n"
        "    importlib.import_module(m.name)\n"
        "upper = ('prefect', 'tasks', 'flows', 'deployments')\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in upper)\n"
        "print(bad[:5]); sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_layers_resolve_to_this_checkout_even_from_tests_dir() -> None:
    """tests/core is a folder, not a package: `import core` must find the checkout's core
    wherever Python starts, including with tests/ first on sys.path."""
    code = (
        "import sys; sys.path.insert(0, 'tests')\n"
        "import core, tasks, flows, deployments\n"
        "print('\\n'.join(m.__file__ for m in (core, tasks, flows, deployments)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(ROOT / layer / "__init__.py") for layer in LAYERS]


def test_no_other_distribution_ships_a_layer_name() -> None:
    """The layers are top-level names in V6's own environment: nothing else may own them."""
    owners = importlib.metadata.packages_distributions()
    assert {layer: sorted(set(owners.get(layer, []))) for layer in LAYERS} == {
        layer: ["v6"] for layer in LAYERS
    }
