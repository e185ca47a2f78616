"""Small immutable domain types shared by every layer: contracts, orders, fills, quotes."""

from core.domain.contracts import ComboLeg, Contract, OptionChain, Right, SecType
from core.domain.market import AccountSummary, Bar, Dividends, MarginImpact, Quote
from core.domain.orders import (
    Action,
    Execution,
    OrderRequest,
    OrderState,
    OrderStatus,
    OrderType,
    Position,
)

__all__ = [
    "AccountSummary",
    "Action",
    "Bar",
    "ComboLeg",
    "Contract",
    "Dividends",
    "Execution",
    "MarginImpact",
    "OptionChain",
    "OrderRequest",
    "OrderState",
    "OrderStatus",
    "OrderType",
    "Position",
    "Quote",
    "Right",
    "SecType",
]
