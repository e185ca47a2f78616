"""Backtests: the same cycle, rules and limits over a simulated market on a fast clock."""
