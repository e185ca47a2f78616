"""What reconciliation believes of the broker: sanity bounds on its numbers, and which
reports wait for a person before they are booked.

The broker is the truth, but a report can read fine and still be wrong (a message ib_async
could not decode and dropped, a corrupted field, a hostile gateway): 1e15 contracts at
avgCost 1e300, a fill at inf. Three rules keep such a report out of the book:

1. Absurd numbers: every broker number must be finite (a NaN commission only means "not
   reported yet"), a quantity (position or execution) at most `quantity_multiple` x the
   largest quantity V6's book holds on any contract (never below `quantity_floor` units),
   and, when the account's size is known, a position's cost (|quantity x avgCost|) or an
   execution's (|quantity x price x multiplier|) at most `cost_multiple` x net liquidation;
   a net liquidation that is not a positive finite number is itself absurd. Any absurd
   number makes the whole report suspect: the run books nothing and writes one unresolved
   ABSURD_REPORT break per absurd row (a data-quality failure: the breaker trips).
2. A position that vanished (the broker holds none, the book still does) with no execution,
   assignment or expiry to explain it is AWAITING_ACK, never booked closed: a dropped
   position message looks exactly like that.
3. An unknown position (not V6's) costing more than `adopt_max_pct` % of net liquidation is
   AWAITING_ACK, not adopted as EXTERNAL; smaller ones are adopted as before (and so is any
   unknown position when the account's size is not given, i.e. offline callers).

`v6 breaks ack BREAK_ID --reason TEXT` records a person's acknowledgement; a break id is a
function of the book's and the broker's state, so the next run that sees the same state
derives the same id, finds it acknowledged and books it. A state that moved on since (a new
fill on the contract, a different broker quantity) gives a new id: an old
acknowledgement never books a new surprise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import polars as pl

from core.domain.breaks import BreakKind, Resolution, Severity
from core.reconcile.model import _NB_SCHEMA, _conform, _ids

# what `absurd_reports` collects per absurd row, before it becomes a break row
_FOUND = pl.Schema(
    {
        "_what": pl.String(),  # account, position or execution
        "con_id": pl.Int64(),
        "exec_id": pl.String(),
        "order_ref": pl.String(),
        "quantity": pl.Int64(),
        "_value": pl.Float64(),
        "broker_avg_price": pl.Float64(),
        "detail": pl.String(),
    }
)


@dataclass(frozen=True)
class ReportBounds:
    """The bounds of a believable broker report, and the acknowledged break ids."""

    net_liq: float | None = None  # the account's size; None: offline, not checked
    quantity_multiple: float = 50.0
    quantity_floor: int = 10_000
    cost_multiple: float = 20.0
    adopt_max_pct: float = 10.0
    acknowledged: frozenset[str] = frozenset()

    @property
    def account_size(self) -> float | None:
        """Net liquidation when it is a positive finite number, else None (unknown)."""
        n = self.net_liq
        return n if n is not None and math.isfinite(n) and n > 0 else None

    def max_quantity(self, held: int) -> int:
        """The largest believable quantity when V6's largest holding is `held` units."""
        return max(self.quantity_floor, int(self.quantity_multiple * held))


def absurd_reports(
    positions: pl.DataFrame, executions: pl.DataFrame, held: int, bounds: ReportBounds
) -> pl.DataFrame:
    """Break rows (the passes' schema) for every broker number outside the bounds.

    `positions` and `executions` are the broker's rows this run uses (its account, no
    BAG rows; executions the book lacks); `held` is V6's largest holding, in units."""
    qmax = bounds.max_quantity(held)
    size = bounds.account_size
    cap = math.inf if size is None else bounds.cost_multiple * size
    rows: list[pl.DataFrame] = []
    if bounds.net_liq is not None and size is None:
        rows.append(
            pl.DataFrame(
                {
                    "_what": ["account"],
                    "detail": [
                        f"net liquidation {bounds.net_liq!r} is not a positive finite number: "
                        "no broker number can be bounded, nothing booked"
                    ],
                }
            )
        )
    q = pl.col("quantity")
    pos_cost = (q.cast(pl.Float64) * pl.col("avg_cost")).abs()
    pos_reason = (
        pl.when(~pl.col("avg_cost").is_finite())
        .then(pl.format("avgCost {} is not a finite number", "avg_cost"))
        .when(q.abs() > qmax)
        .then(pl.format("position of {} is beyond {} units", q, pl.lit(qmax)))
        .when(pos_cost > cap)
        .then(pl.format("position costs {} USD, over {} x net liquidation", pos_cost, _x(bounds)))
    )
    pos = positions.with_columns(detail=pos_reason).filter(pl.col("detail").is_not_null())
    if pos.height:
        rows.append(
            pos.select(
                "con_id",
                "detail",
                _what=pl.lit("position"),
                _value=pl.col("avg_cost"),
                quantity=q,
                broker_avg_price=pl.col("avg_cost"),
            )
        )
    mult = pl.max_horizontal(pl.col("multiplier").fill_null(1), pl.lit(1)).cast(pl.Float64)
    ex_cost = (q.cast(pl.Float64) * pl.col("price") * mult).abs()
    ex_reason = (
        pl.when(~pl.col("price").is_finite() | (pl.col("price") < 0))
        .then(pl.format("fill price {} is not a finite price", "price"))
        .when(pl.col("commission").is_infinite())
        .then(pl.format("commission {} is not a finite number", "commission"))
        .when((q <= 0) | (q > qmax))
        .then(pl.format("fill of {} is outside 1..{} units", q, pl.lit(qmax)))
        .when(ex_cost > cap)
        .then(pl.format("fill costs {} USD, over {} x net liquidation", ex_cost, _x(bounds)))
    )
    ex = executions.with_columns(detail=ex_reason).filter(pl.col("detail").is_not_null())
    if ex.height:
        rows.append(
            ex.select(
                "con_id",
                "exec_id",
                "order_ref",
                "detail",
                _what=pl.lit("execution"),
                _value=pl.col("price"),
                quantity=q,
            )
        )
    if not rows:
        return pl.DataFrame(schema=_NB_SCHEMA)
    found = _conform(pl.concat(rows, how="diagonal_relaxed"), _FOUND)
    found = found.with_columns(
        break_id=_ids(found, "ab", ["_what", "con_id", "exec_id", "quantity", "_value"]),
        kind=pl.lit(BreakKind.ABSURD_REPORT.value),
        resolution=pl.lit(Resolution.UNRESOLVED.value),
        resolved=pl.lit(False),
        severity=pl.lit(Severity.URGENT.value),
        quantity_delta=pl.lit(0),
        detail=pl.format(
            "broker {} report outside sanity bounds: {}; nothing booked", "_what", "detail"
        ),
    )
    return _conform(found, _NB_SCHEMA)


def _x(bounds: ReportBounds) -> pl.Expr:
    return pl.lit(f"{bounds.cost_multiple:g}")
