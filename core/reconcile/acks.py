"""A person's acknowledgement of a break that waits for one (`v6 breaks ack`).

Reconciliation holds two kinds of report unbooked (see `core.reconcile.screen`): a position
that vanished with nothing to explain it, and a large unknown position. Only a person can
say the broker is right; the acknowledgement is audited in `break_acks` (who, when, why)
and the next reconciliation that derives the same break id books it. Absurd reports
cannot be acknowledged: their numbers are wrong, not surprising.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

import polars as pl

from core.domain.breaks import Resolution
from core.store.registry import REGISTRY

ACKS_TABLE = "break_acks"
BREAKS_TABLE = "reconciliation_breaks"


class AckStore(Protocol):
    """What acknowledgements need from a store (DeltaStore, or MemoryStore in tests)."""

    def merge(self, name: str, batch: pl.DataFrame, *, update: bool = True) -> object: ...

    def read(
        self, name: str, where: pl.Expr | None = None, columns: list[str] | None = None
    ) -> pl.LazyFrame: ...


class AckRefused(ValueError):
    """The break does not exist, does not wait for an acknowledgement, or has one."""


def acknowledged(store: AckStore) -> frozenset[str]:
    """Every acknowledged break id (a small table: one row per person's decision)."""
    ids = store.read(ACKS_TABLE, columns=["break_id"]).collect().get_column("break_id")
    return frozenset(ids.to_list())


def acknowledge(
    store: AckStore, break_id: str, *, reason: str, by: str, now: datetime
) -> dict[str, Any]:
    """Record that `by` accepts the broker's report behind `break_id`; returns the row."""
    if not reason.strip():
        raise AckRefused("breaks ack: a reason is required; say why the broker is right")
    if not by.strip():
        raise AckRefused("breaks ack: who acknowledges it is required")
    rows = store.read(BREAKS_TABLE, where=pl.col("break_id") == break_id).collect()
    if rows.is_empty():
        raise AckRefused(
            f"breaks ack: no break {break_id!r} in {BREAKS_TABLE} (copy the id from its detail)"
        )
    brk = rows.row(0, named=True)
    if brk["resolution"] != Resolution.AWAITING_ACK.value:
        raise AckRefused(
            f"breaks ack: {break_id} is {brk['resolution']}, not awaiting an acknowledgement"
        )
    done = store.read(ACKS_TABLE, where=pl.col("break_id") == break_id).collect()
    if done.height:
        prior = done.row(0, named=True)
        raise AckRefused(
            f"breaks ack: {break_id} was acknowledged by {prior['acknowledged_by']} "
            f"at {prior['acknowledged_at']:%Y-%m-%d %H:%M} UTC"
        )
    row = {
        "break_id": break_id,
        "acknowledged_at": now,
        "acknowledged_by": by.strip(),
        "reason": reason.strip(),
        "kind": brk["kind"],
        "con_id": brk["con_id"],
        "contract": brk["contract"],
        "broker_quantity": brk["broker_quantity"],
    }
    store.merge(ACKS_TABLE, pl.DataFrame([row], schema=REGISTRY[ACKS_TABLE].schema), update=False)
    return row
