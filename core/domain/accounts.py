"""Account ids in logs: never in full, by the broker adapter and the gateway simulator alike."""

from __future__ import annotations


def mask_account(account: str) -> str:
    """All but the last 3 characters hidden (account numbers never reach a log in full)."""
    return "*" * max(len(account) - 3, 0) + account[-3:]
