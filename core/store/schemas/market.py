"""Market data tables: futures and underlying bars, futures quotes, quarantined bars, and the
leading-indicator signals derived from them."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pandera.polars as pa
import polars as pl
from pandera.engines.polars_engine import DateTime

from core.domain.timezones import UTC_US
from core.store.spec import TableSpec

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


class FuturesSignal(pa.DataFrameModel):
    """A leading-indicator reading for one underlying from its future (core/analysis/futures.py).

    Every analysis run writes one row per underlying, also when there is too little data
    (status = insufficient_data, days_of_data says how much there is), so the entry
    pipeline can always tell "no signal" from "not computed".
    """

    underlying: str = pa.Field(str_length={"min_value": 1})
    future: str = pa.Field(str_length={"min_value": 1})
    ts: UtcTs = pa.Field(description="as-of time of the reading, UTC")  # type: ignore[valid-type]
    status: str = pa.Field(isin=["ok", "insufficient_data"])
    days_of_data: pl.Int64 = pa.Field(ge=0, description="distinct days with both series")
    best_lag_min: pl.Int64 = pa.Field(ge=0, nullable=True, description="futures lead, minutes")
    best_corr: float = pa.Field(ge=-1, le=1, nullable=True)
    beta: float = pa.Field(nullable=True, description="underlying return per futures return")
    lead_move_pct: float = pa.Field(nullable=True, description="futures move over the last lag")
    overnight_move_pct: float = pa.Field(nullable=True, description="futures since prior RTH close")
    futures_momentum_pct: float = pa.Field(nullable=True)
    underlying_momentum_pct: float = pa.Field(nullable=True)
    momentum_gap_pct: float = pa.Field(nullable=True, description="futures minus underlying")
    expected_move_pct: float = pa.Field(nullable=True, description="move the underlying owes")
    direction: str = pa.Field(isin=["up", "down", "neutral"], nullable=True)
    date: pl.Date

    class Config:
        strict = True
        coerce = False


_T0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)


def _bar_example(**ids: str) -> pl.DataFrame:
    return pl.DataFrame(
        {
            **{k: [v] for k, v in ids.items()},
            "ts": [_T0],
            "open": [100.0],
            "high": [101.0],
            "low": [99.5],
            "close": [100.5],
            "volume": [1200],
            "date": [date(2026, 3, 2)],
        },
    ).with_columns(pl.col("ts").cast(UTC_US))


def _quote_example() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "symbol": ["ES"],
            "contract": ["ESM6"],
            "ts": [_T0],
            "bid": [5000.0],
            "ask": [5000.25],
            "last": [5000.25],
            "date": [date(2026, 3, 2)],
        }
    ).with_columns(pl.col("ts").cast(UTC_US))


def _quarantine_example() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "symbol": ["ES"],
            "contract": ["ESM6"],
            "ts": [_T0],
            "open": [5000.0],
            "high": [4990.0],
            "low": [4995.0],
            "close": [5001.0],
            "volume": [10],
            "reason": ["high below open"],
            "quarantined_at": [_T0],
            "date": [date(2026, 3, 2)],
        }
    ).with_columns(pl.col("ts", "quarantined_at").cast(UTC_US))


def _signal_example() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "underlying": ["SPY"],
            "future": ["ES"],
            "ts": [_T0],
            "status": ["ok"],
            "days_of_data": [12],
            "best_lag_min": [2],
            "best_corr": [0.61],
            "beta": [0.98],
            "lead_move_pct": [0.05],
            "overnight_move_pct": [0.42],
            "futures_momentum_pct": [0.2],
            "underlying_momentum_pct": [0.12],
            "momentum_gap_pct": [0.08],
            "expected_move_pct": [0.049],
            "direction": ["neutral"],
            "date": [date(2026, 3, 2)],
        },
        schema_overrides={"days_of_data": pl.Int64, "best_lag_min": pl.Int64},
    ).with_columns(pl.col("ts").cast(UTC_US))


TABLES = [
    TableSpec(
        name="futures_bars",
        model=FuturesBar,
        description="1-minute bars of the front futures contracts",
        keys=("symbol", "contract", "ts"),
        partition_by=("date",),
        derived={"date": _TRADE_DATE},
        example=lambda: _bar_example(symbol="ES", contract="ESM6"),
        cluster_by=("symbol", "ts"),
    ),
    TableSpec(
        name="futures_quotes",
        model=FuturesQuote,
        description="quote snapshots of the front futures contracts",
        keys=("symbol", "contract", "ts"),
        partition_by=("date",),
        derived={"date": _TRADE_DATE},
        example=_quote_example,
        cluster_by=("symbol", "ts"),
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
        name="futures_signals",
        model=FuturesSignal,
        description="leading-indicator signals per underlying from futures lead-lag analysis",
        keys=("underlying", "ts"),
        partition_by=("date",),
        derived={"date": _TRADE_DATE},
        example=_signal_example,
    ),
    TableSpec(
        name="underlying_bars",
        model=UnderlyingBar,
        description="1-minute bars of the option underlyings",
        keys=("symbol", "ts"),
        partition_by=("date",),
        derived={"date": _TRADE_DATE},
        example=lambda: _bar_example(symbol="SPY"),
        cluster_by=("symbol", "ts"),
    ),
]
