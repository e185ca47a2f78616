"""Errors the store raises; each names the table, what is wrong and how to fix it."""

from __future__ import annotations


class StoreError(Exception):
    """Base class for store failures."""


class UnknownTableError(StoreError, KeyError):
    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class SchemaViolation(StoreError, ValueError):
    """A batch failed validation; nothing was written."""

    def __init__(self, table: str, problems: list[str]) -> None:
        self.table = table
        self.problems = problems
        body = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"table {table}: batch rejected, nothing written:\n{body}")


class CommitConflictError(StoreError):
    """Commit conflicts persisted beyond the retry budget; the batch was NOT written."""


class StoreCorrupt(StoreError):
    """A table is missing, rolled back or broken although V6 wrote it: nothing may trade.

    The message is one line naming the table, what was expected and found, and the fix."""

    def __init__(self, table: str, message: str) -> None:
        self.table = table
        super().__init__(message)
