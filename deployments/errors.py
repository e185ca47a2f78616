"""The one error type the `v6` command turns into a single line plus the fix (exit 2).

Kept apart from `cli.py` so the modules the CLI dispatches to can raise it without a
circular import."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; printed as one line plus the fix."""
