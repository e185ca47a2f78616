"""Fixtures for book and reconciliation tests (helpers live in book_world.py)."""

from __future__ import annotations

import pytest
from book_world import World


@pytest.fixture
def world() -> World:
    return World()
