"""The last version V6 committed or saw of each table, kept beside the tables.

A Delta table whose log was deleted reads as "not created" and one whose latest commits
were removed reads as an older, valid table: nothing in the table itself can tell. So V6
records in `<root>/_v6_manifest.json`, outside every table, each version it commits (and,
for a table it finds without an entry, e.g. one created before the manifest existed, the
version it first sees), and `DeltaStore` compares each table it opens with it (`check`).
A version someone else commits is not recorded, so `v6 store repair` can still go back
to the last version V6 itself wrote.

Updates are read-merge-write under an exclusive `flock` on the root directory, written to
a temporary file, fsynced and `os.replace`d: a reader sees the old or the new manifest,
never half of one, and versions only move forward, whichever process writes last. The
lock is per host (several processes on one machine); a local directory only.

Cost (measured on this machine, 25 tables): a read is one open of a ~1 KiB file, ~30 us; an
update (lock, read, write, fsync, rename) ~0.7 ms, paid once per commit (which costs
10-40 ms) and once per table first seen.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from core.store.errors import StoreCorrupt

MANIFEST_NAME = "_v6_manifest.json"


class Manifest:
    """Table name -> last version V6 committed or saw, for the tables under one local root."""

    def __init__(self, root: str | Path) -> None:
        self.path = Path(root) / MANIFEST_NAME

    def read(self) -> dict[str, int]:
        """The recorded versions; empty before V6's first commit under this root."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        try:
            data = json.loads(text)
            return {str(k): int(v) for k, v in data["versions"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StoreCorrupt(
                MANIFEST_NAME,
                f"manifest {self.path} is unreadable ({type(exc).__name__}: {exc}); "
                "restore it from backup (it only records table versions)",
            ) from None

    def advance(self, versions: Mapping[str, int]) -> None:
        """Record `versions`, keeping any higher version another process recorded."""
        if not versions:
            return
        with self._locked():
            current = self.read()
            merged = dict(current)
            for name, version in versions.items():
                merged[name] = max(version, current.get(name, -1))
            if merged != current:
                self._write(merged)

    def replace(self, name: str, version: int | None) -> None:
        """Set (or with None drop) one table's entry, also backwards: only for a person
        accepting a loss (`v6 store repair --accept-loss`), never for a normal write."""
        with self._locked():
            versions = self.read()
            if version is None:
                versions.pop(name, None)
            else:
                versions[name] = version
            self._write(versions)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.path.parent, os.O_RDONLY)  # the directory: no lock file to leave
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _write(self, versions: Mapping[str, int]) -> None:
        body = json.dumps({"versions": dict(sorted(versions.items()))}, indent=1)
        fd, tmp = tempfile.mkstemp(prefix=".manifest-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def check(name: str, uri: str, expected: int | None, found: int | None) -> None:
    """Raise StoreCorrupt when a table V6 recorded is missing or older than recorded."""
    if expected is None or (found is not None and found >= expected):
        return
    what = (
        "missing, not a readable Delta table (no Delta log)"
        if found is None
        else f"at version {found}"
    )
    raise StoreCorrupt(
        name,
        f"table {name} at {uri} is {what}, but V6 last saw version {expected}: it was lost or "
        f"rolled back; nothing trades until it is fixed: restore it from backup, or run "
        f"`v6 store repair {name}`",
    )
