"""Market data tables: futures and underlying bars, futures quotes, and quarantined bars."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pandera.polars as pa
import polars as pl
from pandera.engines.polars_engine import DateTime

from v6.core.store.spec import UTC_US, TableSpec

UtcTs = DateTime(time_zone="UTC", time_unit="us")
_TRADE_DATE = pl.col("ts").dt.date()


class _Ohlcv(pa.DataFrameModel):
    """OHLCV with the consistency checks every bar must pass."""

    ts: UtcTs = pa.Field(description="bar start, UTC")  # type: ignore[valid-type]
    open: float = pa.Field(gt=0)
    high: float = pa.Field(gt=0)
    low: float = pa.Field(gt=0)
    close: float = pa.Field(gt=0)
    volume: pl.Int64 = pa.Field(ge=0)
    date: pl.Date = pa.Field(description="UTC date of ts; partition column")

    class Config:
        strict = True
        coerce = False

    @pa.dataframe_check(error="OHLC inconsistent: need low <= open,close <= high")
    @classmethod
    def ohlc_consistent(cls, data: pa.PolarsData) -> pl.LazyFrame:
        c = pl.col
        return data.lazyframe.select(
            (c("low") <= c("open"))
            & (c("low") <= c("close"))
            & (c("high") >= c("open"))
            & (c("high") >= c("close"))
        )


class FuturesBar(_Ohlcv):
    symbol: str = pa.Field(str_length={"min_value": 1}, description="root, e.g. ES")
    contract: str = pa.Field(str_length={"min_value": 1}, description="local symbol, e.g. ESM6")


class UnderlyingBar(_Ohlcv):
    symbol: str = pa.Field(str_length={"min_value": 1})


class FuturesQuote(pa.DataFrameModel):
    symbol: str = pa.Field(str_length={"min_value": 1})
    contract: str = pa.Field(str_length={"min_value": 1})
    ts: UtcTs  # type: ignore[valid-type]
    bid: float = pa.Field(gt=0, nullable=True)
    ask: float = pa.Field(gt=0, nullable=True)
    last: float = pa.Field(gt=0, nullable=True)
    date: pl.Date

    class Config:
        strict = True
        coerce = False


class QuarantinedBar(pa.DataFrameModel):
    """A bar that failed a check: kept with its reason so nothing vanishes silently."""

    symbol: str
    contract: str
    ts: UtcTs  # type: ignore[valid-type]
    open: float = pa.Field(nullable=True)
    high: float = pa.Field(nullable=True)
    low: float = pa.Field(nullable=True)
    close: float = pa.Field(nullable=True)
    volume: pl.Int64 = pa.Field(nullable=True)
    reason: str = pa.Field(str_length={"min_value": 1})
    quarantined_at: UtcTs  # type: ignore[valid-type]
    date: pl.Date

    class Config:
        strict = True
        coerce = False


_T0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)


def _bar_example(**ids: str) -> pl.DataFrame:
    return pl.DataFrame(
        {**{k: [v] for k, v in ids.items()}, "ts": [_T0], "open": [100.0], "high": [101.0],
         "low": [99.5], "close": [100.5], "volume": [1200], "date": [date(2026, 3, 2)]},
    ).with_columns(pl.col("ts").cast(UTC_US))


def _quote_example() -> pl.DataFrame:
    return pl.DataFrame(
        {"symbol": ["ES"], "contract": ["ESM6"], "ts": [_T0], "bid": [5000.0], "ask": [5000.25],
         "last": [5000.25], "date": [date(2026, 3, 2)]}
    ).with_columns(pl.col("ts").cast(UTC_US))


def _quarantine_example() -> pl.DataFrame:
    return pl.DataFrame(
        {"symbol": ["ES"], "contract": ["ESM6"], "ts": [_T0], "open": [5000.0], "high": [4990.0],
         "low": [4995.0], "close": [5001.0], "volume": [10], "reason": ["high below open"],
         "quarantined_at": [_T0], "date": [date(2026, 3, 2)]}
    ).with_columns(pl.col("ts", "quarantined_at").cast(UTC_US))


TABLES = [
    TableSpec(
        name="futures_bars",
        model=FuturesBar,
        description="1-minute bars of the front futures contracts",
        keys=("symbol", "contract", "ts"),
        partition_by=("date",),
        derived={"date": _TRADE_DATE},
        example=lambda: _bar_example(symbol="ES", contract="ESM6"),
    ),
    TableSpec(
        name="futures_quotes",
        model=FuturesQuote,
        description="quote snapshots of the front futures contracts",
        keys=("symbol", "contract", "ts"),
        partition_by=("date",),
        derived={"date": _TRADE_DATE},
        example=_quote_example,
    ),
    TableSpec(
        name="futures_quarantine",
        model=QuarantinedBar,
        description="futures bars rejected by a data check, with the reason",
        keys=("symbol", "contract", "ts", "reason"),
        partition_by=("date",),
        derived={"date": _TRADE_DATE},
        example=_quarantine_example,
    ),
    TableSpec(
        name="underlying_bars",
        model=UnderlyingBar,
        description="1-minute bars of the option underlyings",
        keys=("symbol", "ts"),
        partition_by=("date",),
        derived={"date": _TRADE_DATE},
        example=lambda: _bar_example(symbol="SPY"),
    ),
]
