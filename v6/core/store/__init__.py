"""Delta Lake tables: names, pandera schemas, validated append/merge/read."""

from v6.core.store.delta import DeltaStore, TableStats, WriteResult
from v6.core.store.errors import CommitConflictError, SchemaViolation, StoreError, UnknownTableError
from v6.core.store.registry import REGISTRY
from v6.core.store.spec import UTC_US, TableSpec

__all__ = [
    "REGISTRY",
    "UTC_US",
    "CommitConflictError",
    "DeltaStore",
    "SchemaViolation",
    "StoreError",
    "TableSpec",
    "TableStats",
    "UnknownTableError",
    "WriteResult",
]
