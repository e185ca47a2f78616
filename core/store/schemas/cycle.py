"""Trading-cycle tables: the start-of-day account value that daily P&L is measured from.

The baseline must survive process restarts (under `serve` every cycle is a fresh process),
so it is written once per market date, insert-only, by the first cycle that sees the
account that day; every later cycle reads it back.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import pandera.polars as pa
import polars as pl
from pandera.engines.polars_engine import DateTime

from core.domain.timezones import UTC_US
from core.store.spec import TableSpec

UtcTs = DateTime(time_zone="UTC", time_unit="us")


class AccountDaily(pa.DataFrameModel):
    """Net liquidation at the first trading cycle of a market date (write-once)."""

    date: pl.Date = pa.Field(description="market date (America/New_York)")
    account: str = pa.Field(description="account code ('' when the broker named none)")
    start_net_liq: float = pa.Field(gt=0, description="net liquidation at first sight, USD")
    start_ts: UtcTs = pa.Field(description="when it was observed, UTC")  # type: ignore[valid-type]
    run_id: str = pa.Field(str_length={"min_value": 1}, description="cycle that recorded it")

    class Config:
        strict = True
        coerce = False


def _account_daily_example() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "date": [date(2026, 3, 2)],
            "account": ["DU1234567"],
            "start_net_liq": [100_000.0],
            "start_ts": [datetime(2026, 3, 2, 14, 35, tzinfo=UTC)],
            "run_id": ["cycle-example"],
        },
        schema_overrides={"start_ts": UTC_US},
    )


TABLES = [
    TableSpec(
        name="account_daily",
        model=AccountDaily,
        description="start-of-day net liquidation per market date: the daily-loss baseline",
        keys=("date", "account"),
        example=_account_daily_example,
    ),
]
