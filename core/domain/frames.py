"""Broker answers (lists of domain objects) as polars frames with fixed schemas.

Vectorised code (reconciliation, risk) works on frames; this is the one place the
per-object conversion happens, at the broker boundary, so the column names and dtypes
are the same everywhere. An empty list gives an empty frame with the full schema.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from typing import Any

import polars as pl

from core.domain.contracts import Contract, Right, SecType
from core.domain.orders import Execution, OrderState, Position
from core.domain.timezones import UTC_US

CONTRACT_SCHEMA: dict[str, pl.DataType] = {
    "con_id": pl.Int64(),
    "symbol": pl.String(),
    "sec_type": pl.String(),
    "expiry": pl.Date(),
    "strike": pl.Float64(),
    "right": pl.String(),
    "multiplier": pl.Int64(),
    "exchange": pl.String(),
    "currency": pl.String(),
    "local_symbol": pl.String(),
    "trading_class": pl.String(),
}
CONTRACT_COLUMNS = tuple(CONTRACT_SCHEMA)

POSITIONS_SCHEMA = pl.Schema(
    {"account": pl.String(), **CONTRACT_SCHEMA, "quantity": pl.Int64(), "avg_cost": pl.Float64()}
)
EXECUTIONS_SCHEMA = pl.Schema(
    {
        "exec_id": pl.String(),
        "order_id": pl.Int64(),
        "perm_id": pl.Int64(),
        "order_ref": pl.String(),
        "account": pl.String(),
        **CONTRACT_SCHEMA,
        "side": pl.String(),
        "quantity": pl.Int64(),  # positive, as the broker reports it
        "price": pl.Float64(),
        "commission": pl.Float64(),
        "time": UTC_US,
    }
)
ORDERS_SCHEMA = pl.Schema(
    {
        "order_id": pl.Int64(),
        "perm_id": pl.Int64(),
        "order_ref": pl.String(),
        **CONTRACT_SCHEMA,
        "action": pl.String(),
        "quantity": pl.Int64(),
        "filled": pl.Int64(),
        "status": pl.String(),
        "order_type": pl.String(),
        "limit_price": pl.Float64(),
        "avg_fill_price": pl.Float64(),
        "message": pl.String(),
    }
)


def _contract_values(c: Contract) -> tuple[Any, ...]:
    return (
        c.con_id,
        c.symbol,
        c.sec_type.value,
        c.expiry,
        c.strike,
        c.right.value if c.right is not None else None,
        c.multiplier,
        c.exchange,
        c.currency,
        c.local_symbol,
        c.trading_class,
    )


def _frame(rows: Iterable[tuple[Any, ...]], schema: pl.Schema) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=schema, orient="row")


def positions_frame(positions: Sequence[Position]) -> pl.DataFrame:
    return _frame(
        ((p.account, *_contract_values(p.contract), p.quantity, p.avg_cost) for p in positions),
        POSITIONS_SCHEMA,
    )


def executions_frame(executions: Sequence[Execution]) -> pl.DataFrame:
    return _frame(
        (
            (
                e.exec_id,
                e.order_id,
                e.perm_id,
                e.order_ref,
                e.account,
                *_contract_values(e.contract),
                e.side.value,
                e.quantity,
                e.price,
                e.commission,
                e.time,
            )
            for e in executions
        ),
        EXECUTIONS_SCHEMA,
    )


def orders_frame(orders: Sequence[OrderState]) -> pl.DataFrame:
    return _frame(
        (
            (
                o.order_id,
                o.perm_id,
                o.order_ref,
                *_contract_values(o.contract),
                o.action.value,
                o.quantity,
                o.filled,
                o.status.value,
                o.order_type.value,
                o.limit_price,
                o.avg_fill_price,
                o.message,
            )
            for o in orders
        ),
        ORDERS_SCHEMA,
    )


def contract_from_row(row: Mapping[str, Any]) -> Contract:
    """Rebuild a Contract from a frame row carrying CONTRACT_COLUMNS (BAG legs are not kept)."""
    expiry = row.get("expiry")
    right = row.get("right")
    return Contract(
        symbol=row["symbol"],
        sec_type=SecType(row["sec_type"]),
        expiry=expiry if isinstance(expiry, date) else None,
        strike=row.get("strike"),
        right=Right(right) if right else None,
        multiplier=int(row.get("multiplier") or 1),
        exchange=row.get("exchange") or "SMART",
        currency=row.get("currency") or "USD",
        con_id=int(row.get("con_id") or 0),
        local_symbol=row.get("local_symbol") or "",
        trading_class=row.get("trading_class") or "",
    )
