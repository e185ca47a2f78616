"""Is a table what V6 left? Manifest-checked opens, missing data files, and repair.

`open_checked` is how `DeltaStore` opens every table (see `manifest.py` for why and what
it costs). `table_health` adds the deeper check `v6 tables` runs: every data file the
current version references exists (Delta's own FSCK in dry-run mode, one listing per
table). `repair` brings a table back to the last version V6 committed with Delta's
RESTORE when that version's log and files are still there, and otherwise says it cannot;
only `accept_loss` makes V6 carry on from what is left, because that is a person's call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from core.store.errors import StoreCorrupt
from core.store.manifest import Manifest, check
from core.store.spec import TableSpec


class DeltaStore(Protocol):
    """What the checks need of `core.store.delta.DeltaStore` (which imports this module)."""

    manifest: Manifest | None
    storage_options: dict[str, Any]

    def uri(self, name: str) -> str: ...

    def spec(self, name: str) -> TableSpec: ...


def open_checked(store: DeltaStore, name: str) -> DeltaTable | None:
    """The latest snapshot (None if the table does not exist); StoreCorrupt if the
    manifest records a newer version or the table is gone.

    The manifest is read before the table: a version recorded before the open was
    committed before it, so a concurrent writer never looks like a rollback."""
    expected = expected_version(store, name)
    table = _latest(store, name)
    found = None if table is None else table.version()
    check(name, store.uri(name), expected, found)
    if expected is None and found is not None:
        record_version(store, name, found)  # a table from before the manifest: adopt it
    return table


def expected_version(store: DeltaStore, name: str) -> int | None:
    """The last version V6 committed (or first saw) of `name`; None if never."""
    return None if store.manifest is None else store.manifest.read().get(name)


def record_version(store: DeltaStore, name: str, version: int | None) -> None:
    """Record a version V6 committed (the store's writes, maintenance, repair)."""
    if store.manifest is not None and version is not None:
        store.manifest.advance({name: version})


def _latest(store: DeltaStore, name: str, version: int | None = None) -> DeltaTable | None:
    try:
        return DeltaTable(
            store.uri(name), version=version, storage_options=store.storage_options or None
        )
    except TableNotFoundError:
        return None


def missing_files(table: DeltaTable) -> list[str]:
    """Data files `table`'s version references that are gone (Delta FSCK, dry run)."""
    return [str(f) for f in table.repair(dry_run=True)["files_removed"]]


@dataclass(frozen=True)
class TableHealth:
    name: str
    version: int | None  # None: not created (or lost)
    problem: str | None = None  # one line; None when healthy

    @property
    def ok(self) -> bool:
        return self.problem is None


def table_health(store: DeltaStore, name: str) -> TableHealth:
    """Whether `name` opens at a version no older than V6 committed with every data file
    present; any failure to open is reported as the problem, never raised."""
    try:
        table = open_checked(store, name)
        if table is None:
            return TableHealth(name, None)
        gone = missing_files(table)
    except StoreCorrupt as exc:
        return TableHealth(name, None, str(exc))
    except Exception as exc:  # an unreadable log: a report line, not a traceback
        return TableHealth(name, None, f"table {name} is unreadable: {_first_line(exc)}")
    if gone:
        return TableHealth(
            name,
            table.version(),
            f"table {name} version {table.version()} references {len(gone)} missing data "
            f"file(s), e.g. {gone[0]}: restore them from backup, or run `v6 store repair {name}`",
        )
    return TableHealth(name, table.version())


def repair(store: DeltaStore, name: str, *, accept_loss: bool = False) -> str:
    """Bring `name` back to the last version V6 committed; what was done, as one line.

    Raises StoreCorrupt naming what is lost when that version cannot be restored (its
    commit or data files are gone) and `accept_loss` is False. With `accept_loss` V6
    adopts what is left: a missing table is forgotten (it is recreated empty on the next
    write), files that are gone are dropped from the log (Delta FSCK), and the manifest
    is reset to the table's version."""
    store.spec(name)
    if store.manifest is None:
        raise StoreCorrupt(name, f"table {name}: repair needs a local store root with a manifest")
    expected = expected_version(store, name)
    current = _latest(store, name)
    gone = [] if current is None else missing_files(current)
    found = None if current is None else current.version()
    if found is not None and not gone and (expected is None or found >= expected):
        return f"table {name} is healthy at version {found}; nothing to repair"
    target = expected if expected is not None else found
    restorable = _restorable(store, name, target)
    if current is not None and target is not None and restorable:
        current.restore(target)
        record_version(store, name, current.version())
        return f"table {name} restored to version {target} (now version {current.version()})"
    loss = _loss(name, expected, found, gone, target)
    if not accept_loss:
        raise StoreCorrupt(
            name,
            f"cannot repair {name}: {loss}; restore the table from backup, or accept the loss "
            f"with `v6 store repair {name} --accept-loss`",
        )
    if current is None:
        store.manifest.replace(name, None)
        return f"table {name}: loss accepted ({loss}); it is recreated empty on the next write"
    if gone:
        current.repair()
    store.manifest.replace(name, current.version())
    return f"table {name}: loss accepted ({loss}); V6 carries on from version {current.version()}"


def _restorable(store: DeltaStore, name: str, version: int | None) -> bool:
    """Whether `version` of the table can still be loaded (its log) with all its files."""
    if version is None:
        return False
    try:
        table = _latest(store, name, version)
        return table is not None and not missing_files(table)
    except Exception:
        return False


def _loss(
    name: str, expected: int | None, found: int | None, gone: list[str], target: int | None
) -> str:
    parts = []
    if found is None:
        parts.append(
            f"the table is missing (no Delta log) and V6 last committed version {expected}"
        )
    elif expected is not None and found < expected:
        parts.append(
            f"the table is at version {found}, V6 last committed version {expected}, whose "
            "commit is gone"
        )
    if gone:
        parts.append(f"{len(gone)} data file(s) of version {found} are gone, e.g. {gone[0]}")
    if target is not None and found is not None and target <= found and gone:
        parts.append(f"version {target} cannot be restored without them")
    return "; ".join(parts) or f"table {name} cannot be restored"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")
