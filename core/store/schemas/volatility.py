"""Implied-volatility history: one ATM 30-day IV per underlying and session date.

Exit rule 5.5 (IV percentile) and entry scoring (IV rank) compare today's IV with its
own past, so the past must be recorded: `core.marketdata.iv_history` fills this table
from the broker's daily IV bars (IB's OPTION_IMPLIED_VOLATILITY) and from each cycle's
chain snapshot, and reads it back as rank/percentile.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import pandera.polars as pa
import polars as pl
from pandera.engines.polars_engine import DateTime

from core.domain.timezones import UTC_US
from core.store.spec import TableSpec

UtcTs = DateTime(time_zone="UTC", time_unit="us")

SOURCES = ("broker_history", "chain_snapshot")
MAX_ATM_IV = 5.0  # 500%: anything above is a data error, not a market


class IVHistory(pa.DataFrameModel):
    """ATM 30-day implied vol of an underlying on one New York session date."""

    underlying: str = pa.Field(str_length={"min_value": 1})
    date: pl.Date = pa.Field(description="New York session date the IV belongs to")
    atm_iv: float = pa.Field(gt=0, le=MAX_ATM_IV, description="decimal, 0.18 = 18%")
    source: str = pa.Field(
        isin=list(SOURCES),
        description="broker_history = the broker's daily IV bar close (authoritative); "
        "chain_snapshot = ATM IV measured from a cycle's option chain (today, provisional)",
    )
    recorded_at: UtcTs = pa.Field(description="when V6 wrote this value, UTC")  # type: ignore[valid-type]

    class Config:
        strict = True
        coerce = False


def _example() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "underlying": ["SPY"],
            "date": [date(2026, 3, 2)],
            "atm_iv": [0.165],
            "source": ["broker_history"],
            "recorded_at": [datetime(2026, 3, 2, 21, 5, tzinfo=UTC)],
        }
    ).with_columns(pl.col("recorded_at").cast(UTC_US))


TABLES = [
    TableSpec(
        name="iv_history",
        model=IVHistory,
        description="daily ATM 30-day implied vol per underlying (IV rank / percentile input)",
        keys=("underlying", "date"),
        example=_example,
    ),
]
