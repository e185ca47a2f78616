"""V6's book: strategies made of legs, intents, orders and fills (positions derive from fills).

Kept import-light (model and refs only) because the store's schemas import the vocabulary;
use `from core.book.ledger import Book` for the Delta-backed book.
"""

from core.book.model import (
    BreakKind,
    CloseReason,
    FillSource,
    IntentPurpose,
    LegSpec,
    LegStatus,
    Origin,
    Resolution,
    Severity,
    StrategyStatus,
    StrategyType,
    leg_id_for,
    strategy_id_for,
)
from core.book.refs import OrderRef, is_v6_ref, make_order_ref, parse_order_ref

__all__ = [
    "BreakKind",
    "CloseReason",
    "FillSource",
    "IntentPurpose",
    "LegSpec",
    "LegStatus",
    "OrderRef",
    "Origin",
    "Resolution",
    "Severity",
    "StrategyStatus",
    "StrategyType",
    "is_v6_ref",
    "leg_id_for",
    "make_order_ref",
    "parse_order_ref",
    "strategy_id_for",
]
