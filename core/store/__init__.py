"""Delta Lake tables: names, pandera schemas, validated append/merge/read."""

from core.store.delta import DeltaStore, TableStats, WriteResult
from core.store.errors import (
    CommitConflictError,
    SchemaViolation,
    StoreCorrupt,
    StoreError,
    UnknownTableError,
)
from core.store.registry import REGISTRY
from core.store.spec import TableSpec

__all__ = [
    "REGISTRY",
    "CommitConflictError",
    "DeltaStore",
    "SchemaViolation",
    "StoreCorrupt",
    "StoreError",
    "TableSpec",
    "TableStats",
    "UnknownTableError",
    "WriteResult",
]
