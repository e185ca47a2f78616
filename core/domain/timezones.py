"""The two clocks every layer shares: the market's time zone, which decides what date and
session it is, and UTC, in which every stored timestamp is kept (microseconds, as Delta)."""

from __future__ import annotations

from typing import Final
from zoneinfo import ZoneInfo

import polars as pl

MARKET_TZ: Final = ZoneInfo("America/New_York")  # polars wants the name: MARKET_TZ.key
UTC_US: Final = pl.Datetime("us", "UTC")
