"""Every Delta table V6 owns, by name. Add a table by adding a `TABLES` list to a module in
`schemas/` and naming that module here: one place to see the whole storage layout."""

from __future__ import annotations

from core.store.schemas import analysis, book, cycle, market, risk, rules, volatility
from core.store.spec import TableSpec

_MODULES = (market, risk, analysis, book, rules, volatility, cycle)


def _build() -> dict[str, TableSpec]:
    registry: dict[str, TableSpec] = {}
    for module in _MODULES:
        for spec in module.TABLES:
            if spec.name in registry:
                raise ValueError(f"table {spec.name} is declared twice (in {module.__name__})")
            registry[spec.name] = spec
    return registry


REGISTRY: dict[str, TableSpec] = _build()
