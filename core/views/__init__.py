"""What a person reads about the book, as frames: open strategies with their last cycle's
numbers, closed trades, one strategy's whole life. Read-only over V6's tables; the CLI
(`v6 positions`, `v6 trades`, `v6 strategy`) renders them."""

from core.views.book import (
    StrategyLife,
    UnknownStrategy,
    closed_trades,
    open_legs,
    open_strategies,
    strategy_life,
)

__all__ = [
    "StrategyLife",
    "UnknownStrategy",
    "closed_trades",
    "open_legs",
    "open_strategies",
    "strategy_life",
]
