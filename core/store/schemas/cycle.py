"""Trading-cycle tables: the start-of-day account value that daily P&L is measured from,
and the lease that lets one trading cycle run per V6 home at a time.

The baseline must survive process restarts (under `serve` every cycle is a fresh process),
so it is written once per market date, insert-only, by the first cycle that sees the
account that day; every later cycle reads it back.

The lease is a log keyed by `seq` (the fencing token): a write is an insert-only merge of
the next seq, which exactly one of several racing writers wins (see core.cycle.lease).
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


class CycleLeaseEvent(pa.DataFrameModel):
    """One move of the trading-cycle lease: acquired, renewed (heartbeat) or released."""

    seq: pl.Int64 = pa.Field(ge=0, description="fencing token: the lease's version")
    event: str = pa.Field(isin=["acquire", "renew", "release"])
    holder: str = pa.Field(str_length={"min_value": 1}, description="the cycle's run id")
    owner: str = pa.Field(description="host:pid of the process holding it")
    since: UtcTs = pa.Field(description="when the holder acquired it, UTC")  # type: ignore[valid-type]
    at: UtcTs = pa.Field(description="when this move was written, UTC")  # type: ignore[valid-type]
    expires_at: UtcTs = pa.Field(  # type: ignore[valid-type]
        nullable=True, description="a silent holder loses it then (null: released)"
    )
    detail: str = pa.Field(nullable=True, description="e.g. whose expired lease it took over")

    class Config:
        strict = True
        coerce = False


def _lease_example() -> pl.DataFrame:
    t0 = datetime(2026, 3, 2, 14, 35, tzinfo=UTC)
    return pl.DataFrame(
        {
            "seq": [0],
            "event": ["acquire"],
            "holder": ["cycle-example"],
            "owner": ["host-1:4242"],
            "since": [t0],
            "at": [t0],
            "expires_at": [datetime(2026, 3, 2, 14, 40, tzinfo=UTC)],
            "detail": [None],
        },
        schema_overrides={"since": UTC_US, "at": UTC_US, "expires_at": UTC_US, "detail": pl.String},
    )


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
    TableSpec(
        name="cycle_lease",
        model=CycleLeaseEvent,
        description="who runs the trading cycle now: one cycle per V6 home (fenced by seq)",
        keys=("seq",),
        example=_lease_example,
    ),
]
