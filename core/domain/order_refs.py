"""Deterministic order references: the one link between a broker order and V6's book.

Every order V6 sends carries `orderRef = "v6:{strategy_id}:{intent_seq}:{leg}"` where
`leg` is `L{leg_index}` for a single-leg order or `combo` for a BAG order. The ref is
computed from the intent before the order is submitted, so

- a retry after a crash asks the broker for the ref instead of sending a second order;
- an execution the book never recorded (crash between submit and record) still names
  its strategy and leg, and reconciliation books it there, exactly once;
- anything without the prefix was not placed by V6 and is adopted as EXTERNAL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import polars as pl

V6_REF_PREFIX = "v6"
COMBO = "combo"
_SEP = ":"
_ID_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass(frozen=True, slots=True)
class OrderRef:
    strategy_id: str
    intent_seq: int
    leg_index: int | None  # None for a combo (BAG) order

    def __str__(self) -> str:
        return make_order_ref(self.strategy_id, self.intent_seq, self.leg_index)


def check_strategy_id(strategy_id: str) -> str:
    """Strategy ids go inside refs and leg ids, so they must not contain the separator."""
    if not _ID_RE.match(strategy_id or ""):
        raise ValueError(
            f"strategy_id {strategy_id!r} is invalid: use letters, digits, '_', '.', '-' only "
            f"(no '{_SEP}' or spaces); build it with core.domain.strategies.strategy_id_for()"
        )
    return strategy_id


def make_order_ref(strategy_id: str, intent_seq: int, leg_index: int | None) -> str:
    """The orderRef for intent `intent_seq` of a strategy; `leg_index=None` for a combo."""
    check_strategy_id(strategy_id)
    if intent_seq < 0:
        raise ValueError(f"intent_seq must be >= 0, got {intent_seq}")
    if leg_index is not None and leg_index < 0:
        raise ValueError(f"leg_index must be >= 0 or None (combo), got {leg_index}")
    leg = COMBO if leg_index is None else f"L{leg_index}"
    return _SEP.join((V6_REF_PREFIX, strategy_id, str(intent_seq), leg))


def is_v6_ref(ref: str) -> bool:
    return ref.startswith(V6_REF_PREFIX + _SEP)


def parse_order_ref(ref: str) -> OrderRef | None:
    """The parts of a V6 ref, or None when `ref` was not made by `make_order_ref`."""
    parts = ref.split(_SEP)
    if len(parts) != 4 or parts[0] != V6_REF_PREFIX or not _ID_RE.match(parts[1]):
        return None
    if not parts[2].isdigit():
        return None
    leg = parts[3]
    if leg == COMBO:
        return OrderRef(parts[1], int(parts[2]), None)
    if leg.startswith("L") and leg[1:].isdigit():
        return OrderRef(parts[1], int(parts[2]), int(leg[1:]))
    return None


def v6_ref_expr(ref: pl.Expr) -> pl.Expr:
    """Vectorised `is_v6_ref` over a string column."""
    return ref.fill_null("").str.starts_with(V6_REF_PREFIX + _SEP)


def ref_strategy_expr(ref: pl.Expr) -> pl.Expr:
    """Vectorised strategy id of a V6 ref (null for other refs)."""
    part = ref.str.split(_SEP).list.get(1, null_on_oob=True)
    return pl.when(v6_ref_expr(ref)).then(part).otherwise(None)
