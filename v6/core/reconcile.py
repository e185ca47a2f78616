"""Position reconciliation: make the book agree with the broker and explain every difference.

Pure and vectorised: inputs are polars frames (the book's tables and the broker's
positions, executions and open orders), outputs are frames to write (fills, strategy and
leg upserts, order upserts, breaks, a positions snapshot). Nothing here does I/O, so the
same function serves the flow, the tests and the benchmark.

The broker is the truth. The passes, in order, each booking fills so the next sees their effect:

1. executions the book lacks: recorded exactly once (de-duplicated on exec_id), on the
   strategy their orderRef names (its intent, or the ref itself after a crash between submit
   and record); an execution V6 did not place reduces the V6 leg it closes, or goes to an
   EXTERNAL strategy; a V6-looking ref that names nothing is booked EXTERNAL, unresolved;
   an expiry settlement the broker reports (ref "EXPIRY:...") closes the leg EXPIRED;
2. assignment/exercise: option legs the broker no longer has, matched with a stock change
   on their symbol, close ASSIGNED/EXERCISED, and the stock is booked into their strategy
   at the strike (urgent);
3. expiry: option legs past expiry that the broker no longer has close EXPIRED at 0;
4. quantity differences left: allocated to legs by capacity (a V6 leg never beyond its
   intended size nor past zero; EXTERNAL legs absorb the rest; a new EXTERNAL strategy
   takes what is left), each a tagged reconciliation fill;
5. average-price differences: a close-at-book/reopen-at-broker pair of tagged fills;
6. orders: V6 orders the book lacks are recorded, orders the broker no longer works are
   marked filled/cancelled, orders V6 did not place are noted.

Every case writes a break with its resolution; `resolved=False` means the rules could not
explain it and is a circuit-breaker input. Ids (break ids, synthetic exec ids, external
strategy ids, leg indexes) are deterministic functions of the inputs, so re-running after a
crash between two table writes books nothing twice.

Cost: the whole-book scans (leg and contract sums, one-way price aggregates, the executions
anti-join) run once; after the executions pass only the contracts where book and broker
disagree (the "focus") go through passes 2-4, and only contracts that both bought and sold
are sorted for the average-cost pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl

from v6.core.book.model import (
    BreakKind,
    CloseReason,
    FillSource,
    LegStatus,
    Origin,
    Resolution,
    Severity,
    StrategyStatus,
    StrategyType,
    external_strategy_id,
    short_hash,
)
from v6.core.book.refs import ref_strategy_expr, v6_ref_expr
from v6.core.domain import Execution, OrderState, Position
from v6.core.domain.frames import (
    CONTRACT_COLUMNS,
    CONTRACT_SCHEMA,
    EXECUTIONS_SCHEMA,
    ORDERS_SCHEMA,
    POSITIONS_SCHEMA,
    executions_frame,
    orders_frame,
    positions_frame,
)
from v6.core.store.registry import REGISTRY

log = logging.getLogger(__name__)

MARKET_TZ = ZoneInfo("America/New_York")
UTC_US = pl.Datetime("us", "UTC")
_EXT_PREFIX = "__ext__:"  # placeholder strategy of a not-yet-named EXTERNAL strategy
_NEW_LEG = "__new__:"  # placeholder leg booked this run, named in finalize_targets
_UNLIMITED = 1 << 40
# Refs the broker (or the simulator) puts on executions that settle an expiring option.
EXPIRY_REF_PREFIXES = ("EXPIRY:",)

BOOK_TABLES = ("strategies", "legs", "order_intents", "orders", "fills")


def table_schema(name: str) -> pl.Schema:
    return REGISTRY[name].schema


# -- inputs and outputs ------------------------------------------------------------------


@dataclass(frozen=True)
class BookFrames:
    """The book's tables as frames (current state; fills complete)."""

    strategies: pl.DataFrame
    legs: pl.DataFrame
    intents: pl.DataFrame
    orders: pl.DataFrame
    fills: pl.DataFrame

    @classmethod
    def empty(cls) -> BookFrames:
        return cls(*(REGISTRY[t].empty() for t in BOOK_TABLES))


@dataclass(frozen=True)
class BrokerFrames:
    """What the broker says: positions, executions since the watermark, open orders."""

    positions: pl.DataFrame
    executions: pl.DataFrame
    open_orders: pl.DataFrame

    @classmethod
    def from_domain(
        cls,
        positions: Sequence[Position],
        executions: Sequence[Execution],
        open_orders: Sequence[OrderState],
    ) -> BrokerFrames:
        return cls(
            positions_frame(positions), executions_frame(executions), orders_frame(open_orders)
        )

    @classmethod
    def empty(cls) -> BrokerFrames:
        return cls(
            pl.DataFrame(schema=POSITIONS_SCHEMA),
            pl.DataFrame(schema=EXECUTIONS_SCHEMA),
            pl.DataFrame(schema=ORDERS_SCHEMA),
        )


@dataclass(frozen=True)
class Tolerance:
    """How close the book's average price must be to the broker's (per unit) to agree."""

    avg_price_abs: float = 0.01
    avg_price_rel: float = 1e-4


@dataclass(frozen=True)
class ReconcileResult:
    run_id: str
    as_of: datetime
    fills: pl.DataFrame  # new rows for `fills` (insert-only)
    strategies: pl.DataFrame  # upserts for `strategies`
    legs: pl.DataFrame  # upserts for `legs`
    orders: pl.DataFrame  # upserts for `orders`
    breaks: pl.DataFrame  # new rows for `reconciliation_breaks` (insert-only)
    snapshot: pl.DataFrame  # rows for `positions_snapshots`
    duplicate_reports: int = 0

    @property
    def unresolved_breaks(self) -> int:
        return int(self.breaks.filter(~pl.col("resolved")).height)

    @property
    def urgent_breaks(self) -> int:
        return int(self.breaks.filter(pl.col("severity") == Severity.URGENT.value).height)

    @property
    def in_agreement(self) -> bool:
        """True when, after the resolutions, every contract's book quantity equals the broker's."""
        return (
            bool(self.snapshot.select(pl.col("agrees").all()).item())
            if self.snapshot.height
            else True
        )

    def summary(self) -> dict[str, Any]:
        by_kind = (
            dict(self.breaks.group_by("kind").len().sort("kind").iter_rows())
            if self.breaks.height
            else {}
        )
        return {
            "run_id": self.run_id,
            "as_of": self.as_of.isoformat(),
            "breaks": self.breaks.height,
            "unresolved_breaks": self.unresolved_breaks,
            "urgent_breaks": self.urgent_breaks,
            "breaks_by_kind": by_kind,
            "fills_recorded": self.fills.height,
            "duplicate_reports": self.duplicate_reports,
            "strategies_changed": self.strategies.height,
            "legs_changed": self.legs.height,
            "orders_changed": self.orders.height,
            "positions": self.snapshot.height,
            "in_agreement": self.in_agreement,
        }


# -- helpers -------------------------------------------------------------------------------

_NF_SCHEMA = pl.Schema(
    {
        "exec_id": pl.String(),
        "order_ref": pl.String(),
        "order_id": pl.Int64(),
        "perm_id": pl.Int64(),
        "strategy_id": pl.String(),
        **CONTRACT_SCHEMA,
        "quantity": pl.Int64(),
        "price": pl.Float64(),
        "commission": pl.Float64(),
        "time": UTC_US,
        "account": pl.String(),
        "source": pl.String(),
        "break_id": pl.String(),
        "close_reason": pl.String(),  # the reason this fill gives if it flattens its leg
        "leg_id": pl.String(),  # known target leg, else resolved from (strategy_id, con_id)
    }
)
_NB_SCHEMA = pl.Schema(
    {
        "break_id": pl.String(),
        "kind": pl.String(),
        "resolution": pl.String(),
        "resolved": pl.Boolean(),
        "severity": pl.String(),
        "con_id": pl.Int64(),
        "strategy_id": pl.String(),
        "leg_id": pl.String(),
        "exec_id": pl.String(),
        "order_ref": pl.String(),
        "quantity_delta": pl.Int64(),
        "book_avg_price": pl.Float64(),
        "broker_avg_price": pl.Float64(),
        "detail": pl.String(),
    }
)


def _conform(frame: pl.DataFrame, schema: pl.Schema) -> pl.DataFrame:
    """Select/cast/fill to `schema` so frames from different passes concatenate."""
    have = frame.schema
    exprs = [
        (pl.col(n) if have[n] == t else pl.col(n).cast(t))
        if n in have
        else pl.lit(None, dtype=t).alias(n)
        for n, t in schema.items()
    ]
    return frame.select(exprs)


def _ids(frame: pl.DataFrame, prefix: str, cols: Sequence[str]) -> pl.Series:
    """Stable per-row ids from `cols` (blake2b; only ever over the few rows that broke)."""
    return pl.Series(
        [f"{prefix}-{short_hash(prefix, *row, n=16)}" for row in frame.select(cols).iter_rows()],
        dtype=pl.String,
    )


def _stats_schema(key: str, dtype: pl.DataType) -> dict[str, pl.DataType]:
    return {
        key: dtype,
        "quantity": pl.Int64(),
        "avg_price": pl.Float64(),
        "open_qty": pl.Int64(),
        "open_commission": pl.Float64(),
    }


def _side_aggregates(fills: pl.DataFrame | pl.LazyFrame, key: str) -> pl.DataFrame:
    """Per key: quantity, whether it both bought and sold, and the weighted sums that give
    the average of a position that only ever traded one way. Additive across batches."""
    return _side_aggregates_plan(fills.lazy(), key).collect()


def _side_aggregates_plan(fills: pl.LazyFrame, key: str) -> pl.LazyFrame:
    q = pl.col("quantity")
    return fills.group_by(key).agg(
        quantity=q.sum(),
        _buys=(q > 0).any(),
        _sells=(q < 0).any(),
        _notional=(pl.col("price") * q.abs()).sum(),
        _abs=q.abs().sum(),
        _comm=pl.col("commission").fill_nan(0.0).fill_null(0.0).sum(),
    )


def _simple_stats(agg: pl.DataFrame, key: str) -> pl.DataFrame:
    flat = pl.col("quantity") == 0
    return agg.select(
        key,
        "quantity",
        avg_price=pl.when(flat).then(None).otherwise(pl.col("_notional") / pl.col("_abs")),
        open_qty=pl.when(flat).then(0).otherwise(pl.col("_abs")).cast(pl.Int64),
        open_commission=pl.when(flat).then(0.0).otherwise(pl.col("_comm")),
    )


def _ordered_stats(fills: pl.DataFrame, key: str) -> pl.DataFrame:
    """The time-ordered average-cost pass (for keys that both bought and sold)."""
    q = pl.col("quantity")
    comm = pl.col("commission").fill_nan(0.0).fill_null(0.0)
    cum = pl.col("_cum")
    prev = cum - q
    f = (
        fills.lazy()
        .select(key, "time", "exec_id", "quantity", "price", "commission")
        .sort(key, "time", "exec_id")
        .with_columns(_cum=q.cum_sum().over(key))
        .with_columns(_start=(prev == 0) | (prev.sign() * cum.sign() < 0))
        .with_columns(
            _epoch=pl.col("_start").cast(pl.Int32).cum_sum().over(key),
            _final=cum.last().over(key),
            # the part of a flipping fill that opens the new position
            _w=pl.when(pl.col("_start")).then(cum.abs()).otherwise(q.abs()),
        )
        .with_columns(
            _open=(pl.col("_epoch") == pl.col("_epoch").max().over(key))
            & (q.sign() == pl.col("_final").sign())
            & (pl.col("_final") != 0)
        )
    )
    w = pl.when(pl.col("_open")).then(pl.col("_w")).otherwise(0)
    return (
        f.group_by(key)
        .agg(
            quantity=q.sum(),
            _notional=(pl.col("price") * w).sum(),
            open_qty=w.sum(),
            open_commission=(comm * w / q.abs()).sum(),
        )
        .select(
            key,
            "quantity",
            avg_price=pl.when(pl.col("open_qty") > 0)
            .then(pl.col("_notional") / pl.col("open_qty"))
            .otherwise(None),
            open_qty="open_qty",
            open_commission="open_commission",
        )
        .collect()
    )


def position_stats(fills: pl.DataFrame, key: str) -> pl.DataFrame:
    """Quantity and average-cost price per `key` from fills, as IB accounts them.

    The average covers the opening fills of the current position only: a position that
    went flat (or flipped) starts afresh, and reductions do not change the average.
    Returns key, quantity, avg_price (per unit, ex commission), open_qty, open_commission.

    Most keys only ever traded one way (or are flat): their average is a plain weighted
    mean from one group-by. Only keys that both bought and sold and still hold a position
    need the time-ordered pass, and only their fills are sorted.
    """
    schema = _stats_schema(key, fills.schema[key])
    if fills.is_empty():
        return pl.DataFrame(schema=schema)
    agg = _side_aggregates(fills, key)
    mixed = agg.filter(pl.col("_buys") & pl.col("_sells") & (pl.col("quantity") != 0))
    simple = _simple_stats(agg.join(mixed.select(key), on=key, how="anti"), key)
    if mixed.is_empty():
        return simple.cast(schema)  # type: ignore[arg-type]
    ordered = _ordered_stats(fills.join(mixed.select(key), on=key, how="semi"), key)
    return pl.concat([simple.cast(schema), ordered.cast(schema)])  # type: ignore[arg-type]


def _sign(e: pl.Expr) -> pl.Expr:
    return e.sign().cast(pl.Int64)


# -- the reconciliation ----------------------------------------------------------------------


def reconcile(
    book: BookFrames,
    broker: BrokerFrames,
    *,
    as_of: datetime,
    run_id: str,
    account: str | None = None,
    tolerance: Tolerance | None = None,
    fills_only: bool = False,
) -> ReconcileResult:
    """Compare broker and book; return what to write so that the book equals the broker.

    `fills_only=True` only links executions of V6's own orders to their legs (what
    `Book.record_fills` uses during a trading cycle): no breaks, positions or orders.
    """
    if as_of.tzinfo is None:
        raise ValueError(f"as_of must be tz-aware UTC, got naive {as_of!r}")
    tol = tolerance or Tolerance()
    today = as_of.astimezone(MARKET_TZ).date()
    ctx = _Context(book, broker, as_of, run_id, today, tol, account)
    return ctx.run_fills_only() if fills_only else ctx.run()


class _Context:
    """State shared by the passes of one reconciliation (frames only, no I/O)."""

    def __init__(
        self,
        book: BookFrames,
        broker: BrokerFrames,
        as_of: datetime,
        run_id: str,
        today: date,
        tol: Tolerance,
        account: str | None,
    ) -> None:
        self.book = book
        self.as_of = as_of
        self.run_id = run_id
        self.today = today
        self.tol = tol
        self.account = account
        positions = broker.positions
        executions = broker.executions
        if account is not None:
            positions = positions.filter(pl.col("account") == account)
        self.positions = (
            positions.filter((pl.col("quantity") != 0) & (pl.col("sec_type") != "BAG"))
            .unique("con_id", keep="first", maintain_order=True)
            .with_columns(
                broker_avg=pl.when(pl.col("avg_cost").is_finite())
                .then(pl.col("avg_cost") / pl.col("multiplier"))
                .otherwise(None)
            )
        )
        self.executions = executions
        self.open_orders = broker.open_orders
        self.fill_parts: list[pl.DataFrame] = []
        self.break_parts: list[pl.DataFrame] = []

        fills = book.fills
        self.n_book_fills = fills.height
        self.legs = book.legs
        self.strategies = book.strategies
        # The whole-book scans, planned together so polars runs them side by side: leg and
        # contract quantities, the one-way price aggregates, and the executions the book lacks.
        book_lf = fills.lazy()
        by_leg_lf = book_lf.group_by("leg_id").agg(
            qty0=pl.col("quantity").sum(),
            con_id=pl.col("con_id").first(),
            _n=pl.len().cast(pl.Int64),
        )
        ex_lf = executions.lazy()
        first = pl.col("exec_id").is_first_distinct()
        # other accounts and BAG-level reports are dropped after the anti-join (few rows left)
        keep = (pl.col("sec_type") != "BAG") & (pl.col("con_id") > 0)
        if account is not None:
            keep = keep & (pl.col("account") == account)
        by_leg, self.con_qty0, self._base_agg, counted, self._new_exec = pl.collect_all(
            [
                by_leg_lf,
                by_leg_lf.group_by("con_id").agg(
                    book0=pl.col("qty0").sum(),
                    nfills=pl.col("_n").sum(),
                    _legs_held=(pl.col("qty0") != 0).any(),
                ),
                _side_aggregates_plan(
                    book_lf.select("con_id", "quantity", "price", "commission"), "con_id"
                ),
                ex_lf.select(pl.len().alias("raw"), first.sum().alias("unique")),
                ex_lf.filter(first)
                .join(book_lf.select("exec_id"), on="exec_id", how="anti")
                .filter(keep),
            ]
        )
        self.leg_qty0 = by_leg.select("leg_id", "qty0")
        self.duplicates = int(counted.item(0, "raw") - counted.item(0, "unique"))
        self._contracts: pl.DataFrame | None = None
        self._memo: dict[str, tuple[int, pl.DataFrame]] = {}
        self._base_legs: pl.DataFrame | None = None
        self._focus: pl.DataFrame | None = None  # None = every contract
        self._by_sc: pl.DataFrame | None = None

    # -- shared views ---------------------------------------------------------------------
    @property
    def contracts(self) -> pl.DataFrame:
        if self._contracts is None:
            self._contracts = self._contract_catalogue()
        return self._contracts

    def _contract_catalogue(self) -> pl.DataFrame:
        """con_id -> contract columns, from the broker first, then the book's legs (the
        executions the book already has are on its legs: only new ones can add contracts)."""
        schema = pl.Schema(CONTRACT_SCHEMA)
        parts = [self.positions, self._new_exec, self.legs]
        frames = [_conform(p.select(CONTRACT_COLUMNS), schema) for p in parts]
        return pl.concat(frames).filter(pl.col("con_id") > 0).unique("con_id", keep="first")

    def _new_fills(self) -> pl.DataFrame:
        if not self.fill_parts:
            return pl.DataFrame(schema=_NF_SCHEMA)
        return self._cached("new_fills", lambda: pl.concat(self.fill_parts))

    def _cached(self, name: str, build: Callable[[], pl.DataFrame]) -> pl.DataFrame:
        """Views derived from the fills booked so far, rebuilt only when a pass adds some."""
        generation = len(self.fill_parts)
        hit = self._memo.get(name)
        if hit is not None and hit[0] == generation:
            return hit[1]
        frame = build()
        self._memo[name] = (generation, frame)
        return frame

    # Views are restricted to a set of contracts (`cons`, a frame of con_id) where a pass
    # only cares about some: after the executions pass, only contracts where book and broker
    # disagree (the "focus") can need anything, which keeps later passes small.
    def _con_book(self, cons: pl.DataFrame | None = None, key: str = "all") -> pl.DataFrame:
        return self._cached(f"con_book:{key}", lambda: self._build_con_book(cons))

    def _build_con_book(self, cons: pl.DataFrame | None) -> pl.DataFrame:
        """con_id, book quantity now (base + fills booked by earlier passes)."""
        new = self._new_fills()
        base = self.con_qty0
        if cons is not None:
            base = base.join(cons, on="con_id", how="semi")
            new = new.join(cons, on="con_id", how="semi")
        delta = new.group_by("con_id").agg(d=pl.col("quantity").sum())
        return (
            base.join(delta, on="con_id", how="full", coalesce=True)
            .with_columns(book=pl.col("book0").fill_null(0) + pl.col("d").fill_null(0))
            .select("con_id", "book", pl.col("book0").fill_null(0), pl.col("nfills").fill_null(0))
        )

    _LEG_COLS = (
        "leg_id", "strategy_id", "leg_index", "con_id", "ratio", "status", "sec_type",
        "symbol", "expiry", "strike", "right", "multiplier",
    )  # fmt: skip

    def _legs_by_contract(self) -> pl.DataFrame:
        """strategy_id, con_id -> _leg (a strategy holds a contract in at most one leg)."""
        if self._by_sc is None:
            self._by_sc = (
                self.legs.sort("leg_index")
                .unique(["strategy_id", "con_id"], keep="first")
                .select("strategy_id", "con_id", _leg="leg_id")
            )
        return self._by_sc

    def _strategy_facts(self) -> pl.DataFrame:
        return self.strategies.select(
            "strategy_id",
            pl.col("origin").alias("s_origin"),
            pl.col("managed").alias("s_managed"),
            pl.col("status").alias("s_status"),
            pl.col("quantity").alias("s_quantity"),
        )

    def _leg_book(self, cons: pl.DataFrame | None = None, key: str = "all") -> pl.DataFrame:
        return self._cached(f"leg_book:{key}", lambda: self._build_leg_book(cons))

    def _build_leg_book(self, cons: pl.DataFrame | None) -> pl.DataFrame:
        """Every leg with its quantity now and its strategy's facts, including the legs this
        run has booked fills to but not yet named (placeholders), so every pass sees them."""
        if self._base_legs is None:
            self._base_legs = (
                self.legs.select(self._LEG_COLS)
                .join(self.leg_qty0, on="leg_id", how="left")
                .with_columns(qty=pl.col("qty0").fill_null(0))
                .drop("qty0")
                .join(self._strategy_facts(), on="strategy_id", how="left")
            )
        base = self._base_legs
        new = self._new_fills()
        if cons is not None:
            base = base.join(cons, on="con_id", how="semi")
            new = new.join(cons, on="con_id", how="semi")
        if new.is_empty():
            return base
        real = new.filter(
            pl.col("leg_id").is_not_null() & ~pl.col("leg_id").str.starts_with(_NEW_LEG)
        )
        delta = real.group_by("leg_id").agg(d=pl.col("quantity").sum())
        strat = self._strategy_facts()
        known = (
            base.join(delta, on="leg_id", how="left")
            .with_columns(qty=pl.col("qty") + pl.col("d").fill_null(0))
            .drop("d")
        )
        pending = new.filter(
            pl.col("leg_id").is_null() | pl.col("leg_id").str.starts_with(_NEW_LEG)
        )
        if pending.height:
            placeholder = (
                pending.group_by("strategy_id", "con_id", maintain_order=True)
                .agg(
                    *[pl.col(c).first() for c in CONTRACT_COLUMNS if c != "con_id"],
                    qty=pl.col("quantity").sum(),
                    _q1=pl.col("quantity").first(),
                )
                .with_columns(
                    leg_id=pl.format("{}{}#{}", pl.lit(_NEW_LEG), "strategy_id", "con_id"),
                    leg_index=pl.lit(-1, dtype=pl.Int64),
                    ratio=pl.when(pl.col("qty") != 0)
                    .then(_sign(pl.col("qty")))
                    .otherwise(_sign(pl.col("_q1"))),
                    status=pl.lit(LegStatus.PENDING.value),
                )
            )
            placeholder = placeholder.join(strat, on="strategy_id", how="left")
            known = pl.concat([known, _conform(placeholder, known.schema)])
        ext = pl.DataFrame(
            {
                "strategy_id": [None],
                "s_origin": [Origin.EXTERNAL.value],
                "s_managed": [False],
                "s_status": [StrategyStatus.OPEN.value],
                "s_quantity": [0],
            },
            schema=strat.schema,
        )
        is_placeholder = pl.col("strategy_id").str.starts_with(_EXT_PREFIX)
        return known.with_columns(
            **{
                c: pl.when(is_placeholder).then(pl.lit(ext.get_column(c)[0])).otherwise(pl.col(c))
                for c in ("s_origin", "s_managed", "s_status", "s_quantity")
            }
        )

    def _con_now(self, cons: pl.DataFrame | None = None, key: str = "all") -> pl.DataFrame:
        """Per contract: book quantity now, broker quantity and average, base fingerprint."""
        broker = self._broker_qty()
        if cons is not None:
            broker = broker.join(cons, on="con_id", how="semi")
        return (
            self._con_book(cons, key)
            .join(broker, on="con_id", how="full", coalesce=True)
            .with_columns(
                pl.col("book").fill_null(0),
                pl.col("broker").fill_null(0),
                pl.col("book0").fill_null(0),
                pl.col("nfills").fill_null(0),
            )
        )

    def _stats_now(self) -> pl.DataFrame:
        """Average-cost stats per contract with the fills booked so far.

        The book's one-way aggregates are computed once and new fills are added to them;
        only contracts that now both bought and sold are re-run through the ordered pass
        (with their full history)."""
        return self._cached("stats", self._build_stats)

    def _build_stats(self) -> pl.DataFrame:
        cols = ["con_id", "exec_id", "time", "quantity", "price", "commission"]
        nf = self._new_fills().select(cols)
        agg = self._base_agg
        if nf.height:
            add = _side_aggregates(nf, "con_id")
            agg = (
                agg.join(add, on="con_id", how="full", coalesce=True, suffix="_n")
                .with_columns(
                    quantity=pl.col("quantity").fill_null(0) + pl.col("quantity_n").fill_null(0),
                    _buys=pl.col("_buys").fill_null(False) | pl.col("_buys_n").fill_null(False),
                    _sells=pl.col("_sells").fill_null(False) | pl.col("_sells_n").fill_null(False),
                    _notional=pl.col("_notional").fill_null(0.0)
                    + pl.col("_notional_n").fill_null(0.0),
                    _abs=pl.col("_abs").fill_null(0) + pl.col("_abs_n").fill_null(0),
                    _comm=pl.col("_comm").fill_null(0.0) + pl.col("_comm_n").fill_null(0.0),
                )
                .select(self._base_agg.columns)
            )
        schema = _stats_schema("con_id", pl.Int64())
        mixed = agg.filter(pl.col("_buys") & pl.col("_sells") & (pl.col("quantity") != 0))
        simple = _simple_stats(agg.join(mixed.select("con_id"), on="con_id", how="anti"), "con_id")
        if mixed.is_empty():
            return simple.cast(schema)  # type: ignore[arg-type]
        keys = mixed.select("con_id")
        history = pl.concat(
            [
                self.book.fills.select(cols).join(keys, on="con_id", how="semi"),
                nf.join(keys, on="con_id", how="semi"),
            ]
        )
        ordered = _ordered_stats(history, "con_id")
        return pl.concat([simple.cast(schema), ordered.cast(schema)])  # type: ignore[arg-type]

    def _broker_qty(self) -> pl.DataFrame:
        return self.positions.select("con_id", broker=pl.col("quantity"), broker_avg="broker_avg")

    # -- pass 1: executions ----------------------------------------------------------------
    def executions_pass(self, v6_only: bool = False) -> None:
        new = self._new_exec  # de-duplicated, minus what the book has (see __init__)
        if new.is_empty():
            return
        known = self.strategies.select("strategy_id", _known=pl.lit(True))
        intents = self.book.intents.select("order_ref", _isid=pl.col("strategy_id"))
        new = (
            new.join(intents, on="order_ref", how="left")
            .with_columns(
                _v6=v6_ref_expr(pl.col("order_ref")),
                strategy_id=pl.coalesce("_isid", ref_strategy_expr(pl.col("order_ref"))),
                quantity=pl.when(pl.col("side") == "BUY")
                .then(pl.col("quantity"))
                .otherwise(-pl.col("quantity")),
                break_id=pl.lit("ex-") + pl.col("exec_id"),
            )
            .join(known, on="strategy_id", how="left")
            .with_columns(
                _cat=pl.when(pl.col("_isid").is_not_null())
                .then(pl.lit("intent"))
                .when(
                    pl.any_horizontal(
                        pl.col("order_ref").fill_null("").str.starts_with(p)
                        for p in EXPIRY_REF_PREFIXES
                    )
                )
                .then(pl.lit("expiry"))
                .when(pl.col("_v6") & pl.col("_known").fill_null(False))
                .then(pl.lit("v6_no_intent"))
                .when(pl.col("_v6"))
                .then(pl.lit("unknown_v6"))
                .otherwise(pl.lit("external"))
            )
        )
        v6 = new.filter(pl.col("_cat").is_in(["intent", "v6_no_intent"]))
        other = new.filter(pl.col("_cat").is_in(["external", "unknown_v6", "expiry"]))

        if v6.height:
            # the leg, where the strategy already has one for this contract
            by_sc = self._legs_by_contract().rename({"_leg": "leg_id"})
            v6 = v6.join(by_sc, on=["strategy_id", "con_id"], how="left")
            self.fill_parts.append(
                _conform(
                    v6.with_columns(
                        source=pl.lit(FillSource.BROKER.value),
                        close_reason=pl.lit(CloseReason.CLOSED.value),
                    ),
                    _NF_SCHEMA,
                )
            )
            self.break_parts.append(
                _conform(
                    v6.with_columns(
                        kind=pl.lit(BreakKind.MISSING_FILL.value),
                        resolution=pl.lit(Resolution.RECORDED_FILL.value),
                        resolved=pl.lit(True),
                        severity=pl.lit(Severity.WARNING.value),
                        quantity_delta=pl.col("quantity"),
                        detail=pl.when(pl.col("_cat") == "intent")
                        .then(pl.lit("execution of a V6 order the book had not recorded"))
                        .otherwise(
                            pl.lit(
                                "execution of a V6 order whose intent is missing; "
                                "booked on the strategy its ref names"
                            )
                        ),
                    ),
                    _NB_SCHEMA,
                )
            )
        if other.height and not v6_only:
            self._external_executions(other)

    def _external_executions(self, other: pl.DataFrame) -> None:
        """Executions V6 did not place: close the leg they reduce, else book them EXTERNAL."""
        cons = other.select("con_id").unique()
        legs = self._leg_book(cons, "ext").filter(pl.col("qty") != 0)
        agg = self._con_book(cons, "ext").select("con_id", "book")
        # the largest leg on the contract on the side of the book's position
        closable = (
            legs.join(agg, on="con_id", how="inner")
            .filter(_sign(pl.col("qty")) == _sign(pl.col("book")))
            .sort(pl.col("qty").abs(), "leg_id", descending=[True, False])
            .unique("con_id", keep="first", maintain_order=True)
            .select(
                "con_id",
                _tleg="leg_id",
                _tsid="strategy_id",
                _tqty="qty",
                _tv6=pl.col("s_origin") == Origin.V6.value,
            )
        )
        ext_legs = (
            legs.filter((pl.col("s_origin") == Origin.EXTERNAL.value) & ~pl.col("s_managed"))
            .sort("leg_id")
            .unique("con_id", keep="first", maintain_order=True)
            .select("con_id", _eleg="leg_id", _esid="strategy_id")
        )
        o = (
            other.join(closable, on="con_id", how="left")
            .join(ext_legs, on="con_id", how="left")
            .with_columns(_expiry=pl.col("_cat") == "expiry")
            .with_columns(
                _reduces=pl.col("_tleg").is_not_null()
                & (_sign(pl.col("quantity")) == -_sign(pl.col("_tqty")))
            )
            .sort("time", "exec_id")
            .with_columns(
                # reductions in time order: a leg absorbs them only up to its size
                _cumred=pl.when(pl.col("_reduces"))
                .then(pl.col("quantity").abs())
                .otherwise(0)
                .cum_sum()
                .over("con_id")
            )
            .with_columns(
                # an expiry settles the whole contract: legs it overshoots are closed by the
                # expiry pass; any other outside execution closes at most one leg
                _closes=pl.col("_reduces")
                & (
                    ((pl.col("_cumred") <= pl.col("_tqty").abs()) & (pl.col("_cat") == "external"))
                    | pl.col("_expiry")
                )
            )
            .with_columns(
                leg_id=pl.when(pl.col("_closes")).then("_tleg").otherwise("_eleg"),
                strategy_id=pl.when(pl.col("_closes"))
                .then("_tsid")
                .when(pl.col("_eleg").is_not_null())
                .then("_esid")
                .otherwise(pl.lit(_EXT_PREFIX) + pl.col("symbol")),
                source=pl.when(pl.col("_expiry"))
                .then(pl.lit(FillSource.EXPIRY.value))
                .otherwise(pl.lit(FillSource.BROKER.value)),
                close_reason=pl.when(pl.col("_expiry"))
                .then(pl.lit(CloseReason.EXPIRED.value))
                .otherwise(pl.lit(CloseReason.CLOSED_EXTERNALLY.value)),
            )
        )
        self.fill_parts.append(_conform(o, _NF_SCHEMA))
        unknown = pl.col("_cat") == "unknown_v6"
        expired = pl.col("_expiry") & pl.col("_closes")
        self.break_parts.append(
            _conform(
                o.with_columns(
                    kind=pl.when(unknown)
                    .then(pl.lit(BreakKind.UNKNOWN_V6_REF.value))
                    .when(expired)
                    .then(pl.lit(BreakKind.MISSING_POSITION.value))
                    .otherwise(pl.lit(BreakKind.EXTERNAL_FILL.value)),
                    resolution=pl.when(expired)
                    .then(pl.lit(Resolution.CLOSED_EXPIRED.value))
                    .when(pl.col("_closes"))
                    .then(pl.lit(Resolution.CLOSED_EXTERNALLY.value))
                    .otherwise(pl.lit(Resolution.ADOPTED_EXTERNAL.value)),
                    resolved=~unknown,
                    severity=pl.when(unknown)
                    .then(pl.lit(Severity.URGENT.value))
                    .when(expired)
                    .then(pl.lit(Severity.INFO.value))
                    .otherwise(pl.lit(Severity.WARNING.value)),
                    quantity_delta=pl.col("quantity"),
                    detail=pl.when(unknown)
                    .then(
                        pl.lit(
                            "V6-style orderRef with no intent and no strategy: booked "
                            "EXTERNAL, needs a person"
                        )
                    )
                    .when(expired)
                    .then(pl.format("option expired; settled at {} by the broker", "price"))
                    .when(pl.col("_closes"))
                    .then(pl.lit("execution not placed by V6 reduced a book leg"))
                    .otherwise(pl.lit("execution not placed by V6: adopted as EXTERNAL")),
                ),
                _NB_SCHEMA,
            )
        )

    # -- pass 2+3: legs the broker no longer has (assignment, exercise, expiry) ----------------
    def vanished_pass(self) -> None:
        con = self._con_now(self._focus, "focus")
        legs = self._leg_book(self._focus, "focus").filter(
            (pl.col("qty") != 0) & pl.col("s_origin").is_not_null()
        )
        options = legs.filter(pl.col("sec_type") == "OPT")
        if options.is_empty():
            return
        # option contracts the broker holds fewer of (toward zero) than the book
        d = pl.col("broker") - pl.col("book")
        reduced = con.filter(
            (pl.col("book") != 0) & (d != 0) & (_sign(d) == -_sign(pl.col("book")))
        ).with_columns(_r=pl.min_horizontal(d.abs(), pl.col("book").abs()))
        stock = (
            con.filter(d != 0)
            .join(self.contracts.select("con_id", "symbol", "sec_type"), on="con_id", how="left")
            .filter(pl.col("sec_type") == "STK")
            .select("symbol", _scon="con_id", _sd=d)
            .unique("symbol", keep="first", maintain_order=True)
        )
        assigned = pl.DataFrame(schema={"leg_id": pl.String})
        if stock.height and reduced.height:
            gone = (
                options.join(
                    reduced.select("con_id", "_r", "book", "broker", "nfills"),
                    on="con_id",
                    how="inner",
                )
                .filter(_sign(pl.col("qty")) == _sign(pl.col("book")))
                .sort("con_id", pl.col("qty").abs(), "leg_id", descending=[False, True, False])
                .with_columns(
                    _before=pl.col("qty").abs().cum_sum().over("con_id") - pl.col("qty").abs()
                )
                .with_columns(
                    _gone=pl.min_horizontal(
                        pl.max_horizontal(pl.col("_r") - pl.col("_before"), pl.lit(0)),
                        pl.col("qty").abs(),
                    )
                )
                .filter(pl.col("_gone") > 0)
            )
            # contracts gone x multiplier, + for calls, - for puts, on the leg's side
            assigned = (
                gone.join(stock, on="symbol", how="inner")
                .with_columns(
                    _exp=_sign(pl.col("qty"))
                    * pl.col("_gone")
                    * pl.col("multiplier")
                    * pl.when(pl.col("right") == "C").then(1).otherwise(-1)
                )
                .filter(_sign(pl.col("_exp")) == _sign(pl.col("_sd")))
                .sort("symbol", pl.col("qty") > 0, "expiry", "strike", "leg_id")
                .with_columns(_cum=pl.col("_exp").abs().cum_sum().over("symbol"))
                .filter(pl.col("_cum") <= pl.col("_sd").abs())
            )
            if assigned.height:
                self._book_assignments(assigned)
        expired = (
            options.join(
                con.filter(pl.col("broker") == 0).select("con_id", "book0", "nfills"),
                on="con_id",
                how="inner",
            )
            .filter(pl.col("expiry") <= self.today)
            .join(assigned.select("leg_id"), on="leg_id", how="anti")
        )
        if expired.height:
            self._book_expiries(expired)

    def _book_assignments(self, a: pl.DataFrame) -> None:
        short = pl.col("qty") < 0
        a = a.with_columns(
            break_id=_ids(a, "as", ["leg_id", "con_id", "qty", "_gone", "_scon", "_sd", "nfills"]),
            _src=pl.when(short)
            .then(pl.lit(FillSource.ASSIGNMENT.value))
            .otherwise(pl.lit(FillSource.EXERCISE.value)),
            _reason=pl.when(short)
            .then(pl.lit(CloseReason.ASSIGNED.value))
            .otherwise(pl.lit(CloseReason.EXERCISED.value)),
        )
        common: dict[str, pl.Expr] = {
            "time": pl.lit(self.as_of).cast(UTC_US),
            "account": pl.lit(self.account or ""),
            "order_ref": pl.lit(""),
            "order_id": pl.lit(0),
            "perm_id": pl.lit(0),
            "source": pl.col("_src"),
            "close_reason": pl.col("_reason"),
        }
        option_close = a.with_columns(
            exec_id=pl.lit("recon-") + pl.col("break_id") + pl.lit("-o"),
            quantity=-_sign(pl.col("qty")) * pl.col("_gone"),
            price=pl.lit(0.0),
            **common,
        )
        stock_contract = self.contracts.rename(
            {c: f"_s_{c}" for c in CONTRACT_COLUMNS if c != "con_id"}
        )
        stock_open = a.join(
            stock_contract, left_on="_scon", right_on="con_id", how="left"
        ).with_columns(
            exec_id=pl.lit("recon-") + pl.col("break_id") + pl.lit("-s"),
            quantity=pl.col("_exp"),
            price=pl.col("strike"),
            con_id=pl.col("_scon"),
            leg_id=pl.lit(None, dtype=pl.String),
            **{c: pl.col(f"_s_{c}") for c in CONTRACT_COLUMNS if c != "con_id"},
            **common,
        )
        self.fill_parts += [_conform(option_close, _NF_SCHEMA), _conform(stock_open, _NF_SCHEMA)]
        self.break_parts.append(
            _conform(
                a.with_columns(
                    kind=pl.lit(BreakKind.ASSIGNMENT.value),
                    resolution=pl.when(short)
                    .then(pl.lit(Resolution.CLOSED_ASSIGNED.value))
                    .otherwise(pl.lit(Resolution.CLOSED_EXERCISED.value)),
                    resolved=pl.lit(True),
                    severity=pl.lit(Severity.URGENT.value),
                    exec_id=pl.lit("recon-") + pl.col("break_id") + pl.lit("-o"),
                    quantity_delta=-_sign(pl.col("qty")) * pl.col("_gone"),
                    detail=pl.format(
                        "{} option {}: stock {} {} shares booked at strike {} into the strategy",
                        pl.when(short).then(pl.lit("short")).otherwise(pl.lit("long")),
                        pl.col("_reason"),
                        pl.col("symbol"),
                        pl.col("_exp"),
                        pl.col("strike"),
                    ),
                ),
                _NB_SCHEMA,
            )
        )

    def _book_expiries(self, e: pl.DataFrame) -> None:
        e = e.with_columns(break_id=_ids(e, "xp", ["leg_id", "con_id", "qty", "book0", "nfills"]))
        fills = e.with_columns(
            exec_id=pl.lit("recon-") + pl.col("break_id"),
            quantity=-pl.col("qty"),
            price=pl.lit(0.0),
            time=pl.lit(self.as_of).cast(UTC_US),
            account=pl.lit(self.account or ""),
            order_ref=pl.lit(""),
            order_id=pl.lit(0),
            perm_id=pl.lit(0),
            source=pl.lit(FillSource.EXPIRY.value),
            close_reason=pl.lit(CloseReason.EXPIRED.value),
        )
        self.fill_parts.append(_conform(fills, _NF_SCHEMA))
        self.break_parts.append(
            _conform(
                e.with_columns(
                    kind=pl.lit(BreakKind.MISSING_POSITION.value),
                    resolution=pl.lit(Resolution.CLOSED_EXPIRED.value),
                    resolved=pl.lit(True),
                    severity=pl.lit(Severity.INFO.value),
                    exec_id=pl.lit("recon-") + pl.col("break_id"),
                    quantity_delta=-pl.col("qty"),
                    detail=pl.format("option expired on {}; closed at 0", pl.col("expiry")),
                ),
                _NB_SCHEMA,
            )
        )

    # -- pass 4: remaining quantity differences ---------------------------------------------
    def quantity_pass(self) -> None:
        con = (
            self._con_now(self._focus, "focus")
            .filter(pl.col("book") != pl.col("broker"))
            .with_columns(_d=pl.col("broker") - pl.col("book"))
            .with_columns(_s=_sign(pl.col("_d")))
        )
        if con.is_empty():
            return
        legs = (
            self._leg_book(self._focus, "focus")
            .filter(pl.col("status") != LegStatus.CLOSED.value)
            .filter(
                ~pl.col("s_status").is_in(
                    [StrategyStatus.CLOSED.value, StrategyStatus.CANCELLED.value]
                )
            )
            .select(
                "leg_id",
                "strategy_id",
                "con_id",
                "ratio",
                "qty",
                "s_origin",
                "s_managed",
                "s_quantity",
            )
            .join(con.select("con_id", "_s", "book"), on="con_id", how="inner")
        )
        s = pl.col("_s")
        qty = pl.col("qty")
        is_ext = (pl.col("s_origin") == Origin.EXTERNAL.value) & ~pl.col("s_managed")
        target = pl.col("ratio") * pl.col("s_quantity")
        reduce_cap = pl.max_horizontal((-qty * s), pl.lit(0))
        v6_cap = (
            pl.when(_sign(target) == s)
            .then(pl.max_horizontal((target - qty) * s, pl.lit(0)))
            .otherwise(reduce_cap)
        )
        ext_cap = (
            pl.when(_sign(qty) == -s)
            .then(qty.abs())
            .when(_sign(pl.col("ratio")) == s)
            .then(pl.lit(_UNLIMITED))
            .otherwise(0)
        )
        reducing = _sign(pl.col("book")) == -s
        legs = (
            legs.with_columns(
                _cap=pl.when(is_ext).then(ext_cap).otherwise(v6_cap).cast(pl.Int64),
                # reductions come off EXTERNAL holdings first, increases go to V6 legs first
                _order=pl.when(reducing).then(~is_ext).otherwise(is_ext),
            )
            .filter(pl.col("_cap") > 0)
            .sort("con_id", "_order", qty.abs(), "leg_id", descending=[False, False, True, False])
        )
        alloc = (
            legs.join(con.select("con_id", "_d"), on="con_id", how="inner")
            .with_columns(_before=pl.col("_cap").cum_sum().over("con_id") - pl.col("_cap"))
            .with_columns(
                _take=pl.min_horizontal(
                    pl.max_horizontal(pl.col("_d").abs() - pl.col("_before"), pl.lit(0)),
                    pl.col("_cap"),
                )
            )
            .filter(pl.col("_take") > 0)
            .with_columns(quantity=pl.col("_take") * pl.col("_s"), _isext=is_ext)
            .select("con_id", "leg_id", "strategy_id", "quantity", "_isext")
        )
        taken = alloc.group_by("con_id").agg(_taken=pl.col("quantity").sum())
        residual = (
            con.join(taken, on="con_id", how="left")
            .with_columns(quantity=pl.col("_d") - pl.col("_taken").fill_null(0))
            .filter(pl.col("quantity") != 0)
            .join(self.contracts.select("con_id", "symbol"), on="con_id", how="left")
            .select(
                "con_id",
                leg_id=pl.lit(None, dtype=pl.String),
                strategy_id=pl.lit(_EXT_PREFIX) + pl.col("symbol"),
                quantity="quantity",
                _isext=pl.lit(True),
            )
        )
        rows = pl.concat([alloc, residual]).join(
            con.select("con_id", "book", "broker", "book0", "nfills", "broker_avg"),
            on="con_id",
            how="left",
        )
        rows = self._with_leg_avg(rows)
        rows = rows.with_columns(
            break_id=_ids(
                rows,
                "qm",
                ["con_id", "strategy_id", "leg_id", "quantity", "book0", "broker", "nfills"],
            ),
            _incr=_sign(pl.col("quantity")) == _sign(pl.col("broker")),
        )
        # increases at the broker's average; reductions at the leg's own (no invented P&L)
        price = (
            pl.when(pl.col("_incr"))
            .then(pl.coalesce(pl.col("broker_avg"), pl.col("leg_avg"), pl.lit(0.0)))
            .otherwise(pl.coalesce(pl.col("leg_avg"), pl.col("broker_avg"), pl.lit(0.0)))
        )
        rows = rows.join(self.contracts, on="con_id", how="left").with_columns(
            exec_id=pl.lit("recon-") + pl.col("break_id"),
            price=pl.max_horizontal(price, pl.lit(0.0)),
            time=pl.lit(self.as_of).cast(UTC_US),
            account=pl.lit(self.account or ""),
            order_ref=pl.lit(""),
            order_id=pl.lit(0),
            perm_id=pl.lit(0),
            source=pl.lit(FillSource.RECONCILIATION.value),
            close_reason=pl.lit(CloseReason.CLOSED_EXTERNALLY.value),
        )
        self.fill_parts.append(_conform(rows, _NF_SCHEMA))
        flipped = (
            (pl.col("book") != 0)
            & (pl.col("broker") != 0)
            & (_sign(pl.col("book")) != _sign(pl.col("broker")))
        )
        kind = (
            pl.when(pl.col("broker") == 0)
            .then(pl.lit(BreakKind.MISSING_POSITION.value))
            .when(pl.col("book") == 0)
            .then(pl.lit(BreakKind.EXTERNAL_POSITION.value))
            .otherwise(pl.lit(BreakKind.QUANTITY_MISMATCH.value))
        )
        resolution = (
            pl.when(pl.col("broker") == 0)
            .then(pl.lit(Resolution.CLOSED_EXTERNALLY.value))
            .when(pl.col("_isext") & pl.col("_incr"))
            .then(pl.lit(Resolution.ADOPTED_EXTERNAL.value))
            .when(pl.col("book") == 0)
            .then(pl.lit(Resolution.RECORDED_FILL.value))
            .otherwise(pl.lit(Resolution.ADJUSTED.value))
        )
        self.break_parts.append(
            _conform(
                rows.with_columns(
                    kind=kind,
                    resolution=pl.when(flipped)
                    .then(pl.lit(Resolution.UNRESOLVED.value))
                    .otherwise(resolution),
                    resolved=~flipped,
                    severity=pl.when(flipped)
                    .then(pl.lit(Severity.URGENT.value))
                    .otherwise(pl.lit(Severity.WARNING.value)),
                    quantity_delta=pl.col("quantity"),
                    book_avg_price=pl.col("leg_avg"),
                    broker_avg_price=pl.col("broker_avg"),
                    detail=pl.when(flipped)
                    .then(
                        pl.lit(
                            "book and broker are on opposite sides; book forced to the "
                            "broker, cause unknown"
                        )
                    )
                    .when(pl.col("broker") == 0)
                    .then(pl.lit("broker no longer holds it and no execution explains it"))
                    .when(pl.col("_isext"))
                    .then(pl.lit("broker holds more than V6 placed: booked as EXTERNAL"))
                    .otherwise(pl.lit("book quantity adjusted to the broker's")),
                ),
                _NB_SCHEMA,
            )
        )

    def _with_leg_avg(self, rows: pl.DataFrame) -> pl.DataFrame:
        """Add `leg_avg`: the average price of each row's leg (only the legs involved)."""
        leg_ids = rows.select("leg_id").drop_nulls()
        if leg_ids.is_empty():
            return rows.with_columns(leg_avg=pl.lit(None, dtype=pl.Float64))
        cols = ["leg_id", "exec_id", "time", "quantity", "price", "commission"]
        fills = pl.concat(
            [
                self.book.fills.select(cols).join(leg_ids, on="leg_id", how="semi"),
                self._new_fills().select(cols).join(leg_ids, on="leg_id", how="semi"),
            ]
        )
        stats = position_stats(fills, "leg_id").select("leg_id", leg_avg="avg_price")
        return rows.join(stats, on="leg_id", how="left")

    # -- pass 5: average prices ---------------------------------------------------------------
    def price_pass(self) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Compare average prices where quantities agree; returns (con stats, legs adjusted)."""
        stats = self._stats_now()
        cmp = (
            stats.join(self._broker_qty(), on="con_id", how="inner")
            .join(self.contracts.select("con_id", "multiplier"), on="con_id", how="left")
            .with_columns(
                book_cost=pl.col("avg_price")
                + _sign(pl.col("quantity")).cast(pl.Float64)
                * pl.col("open_commission")
                / (pl.col("open_qty") * pl.col("multiplier"))
            )
        )
        tol = pl.max_horizontal(
            pl.lit(self.tol.avg_price_abs), pl.col("broker_avg").abs() * self.tol.avg_price_rel
        )
        off = cmp.filter(
            (pl.col("quantity") == pl.col("broker"))
            & (pl.col("quantity") != 0)
            & pl.col("broker_avg").is_not_null()
            & pl.col("avg_price").is_not_null()
            & ((pl.col("avg_price") - pl.col("broker_avg")).abs() > tol)
            & ((pl.col("book_cost") - pl.col("broker_avg")).abs() > tol)
        )
        if off.is_empty():
            return stats, off
        legs = (
            self._leg_book(off.select("con_id"), "price")
            .filter(pl.col("qty") != 0)
            .join(off.select("con_id", "broker_avg", con_avg="avg_price"), on="con_id", how="inner")
            .join(self.con_qty0.select("con_id", "nfills"), on="con_id", how="left")
        )
        legs = self._with_leg_avg(legs)
        legs = legs.with_columns(
            break_id=_ids(legs, "pm", ["leg_id", "con_id", "qty", "broker_avg", "nfills"]),
            leg_avg=pl.coalesce("leg_avg", "con_avg", pl.lit(0.0)),
        )
        common = {
            "time": pl.lit(self.as_of).cast(UTC_US),
            "account": pl.lit(self.account or ""),
            "order_ref": pl.lit(""),
            "order_id": pl.lit(0),
            "perm_id": pl.lit(0),
            "source": pl.lit(FillSource.RECONCILIATION.value),
            "close_reason": pl.lit(None, dtype=pl.String),
        }
        close = legs.with_columns(
            exec_id=pl.lit("recon-") + pl.col("break_id") + pl.lit("-c"),
            quantity=-pl.col("qty"),
            price=pl.col("leg_avg"),
            **common,
        )
        reopen = legs.with_columns(
            exec_id=pl.lit("recon-") + pl.col("break_id") + pl.lit("-o"),
            quantity=pl.col("qty"),
            price=pl.col("broker_avg"),
            **common,
        ).with_columns(
            # after every close: the contract goes flat, so the average restarts at the broker's
            time=pl.lit(self.as_of + timedelta(microseconds=1)).cast(UTC_US)
        )
        self.fill_parts += [_conform(close, _NF_SCHEMA), _conform(reopen, _NF_SCHEMA)]
        self.break_parts.append(
            _conform(
                legs.with_columns(
                    kind=pl.lit(BreakKind.PRICE_MISMATCH.value),
                    resolution=pl.lit(Resolution.ADJUSTED.value),
                    resolved=pl.lit(True),
                    severity=pl.lit(Severity.INFO.value),
                    exec_id=pl.lit("recon-") + pl.col("break_id") + pl.lit("-o"),
                    quantity_delta=pl.lit(0),
                    book_avg_price=pl.col("leg_avg"),
                    broker_avg_price=pl.col("broker_avg"),
                    detail=pl.lit(
                        "average price differs from the broker's: closed at the book's, "
                        "reopened at the broker's (no P&L booked)"
                    ),
                ),
                _NB_SCHEMA,
            )
        )
        return stats, off

    # -- finalize: name new strategies and legs, derive states ---------------------------------
    def finalize_targets(self) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
        """Resolve every new fill to a leg; returns (fills, new strategies, new legs)."""
        nf = self._new_fills().with_columns(
            leg_id=pl.when(pl.col("leg_id").str.starts_with(_NEW_LEG))
            .then(None)
            .otherwise(pl.col("leg_id"))
        )
        self.break_parts = [
            b.with_columns(
                leg_id=pl.when(pl.col("leg_id").str.starts_with(_NEW_LEG))
                .then(None)
                .otherwise(pl.col("leg_id"))
            )
            for b in self.break_parts
        ]
        new_strats = pl.DataFrame(schema=table_schema("strategies"))
        ext = nf.filter(pl.col("strategy_id").str.starts_with(_EXT_PREFIX))
        if ext.height:
            groups = ext.group_by("strategy_id", "symbol").agg(pl.col("con_id").unique().sort())
            mapping = {
                row[0]: external_strategy_id(row[1], row[2], self.today, self.n_book_fills)
                for row in groups.iter_rows()
            }
            old = pl.Series(list(mapping.keys()), dtype=pl.String)
            new = pl.Series(list(mapping.values()), dtype=pl.String)
            nf = nf.with_columns(pl.col("strategy_id").replace(old, new))
            self.break_parts = [
                b.with_columns(pl.col("strategy_id").replace(old, new)) for b in self.break_parts
            ]
            underlying = groups.select(pl.col("strategy_id").replace(old, new), underlying="symbol")
            new_strats = _conform(
                underlying.with_columns(
                    account=pl.lit(self.account or ""),
                    strategy_type=pl.lit(StrategyType.EXTERNAL.value),
                    origin=pl.lit(Origin.EXTERNAL.value),
                    managed=pl.lit(False),
                    status=pl.lit(StrategyStatus.OPEN.value),
                    quantity=pl.lit(0),
                    created_at=pl.lit(self.as_of).cast(UTC_US),
                    note=pl.lit("adopted from the broker by reconciliation; tag it to trade it"),
                    updated_at=pl.lit(self.as_of).cast(UTC_US),
                ),
                table_schema("strategies"),
            )
        # legs by (strategy, contract); a strategy holds a contract in at most one leg
        by_sc = self._legs_by_contract()
        nf = (
            nf.join(by_sc, on=["strategy_id", "con_id"], how="left")
            .with_columns(leg_id=pl.coalesce("leg_id", "_leg"))
            .drop("_leg")
        )
        missing = nf.filter(pl.col("leg_id").is_null())
        new_legs = pl.DataFrame(schema=table_schema("legs"))
        if missing.height:
            max_index = self.legs.group_by("strategy_id").agg(_max=pl.col("leg_index").max())
            specs = (
                missing.group_by("strategy_id", "con_id", maintain_order=True)
                .agg(
                    *[pl.col(c).first() for c in CONTRACT_COLUMNS if c != "con_id"],
                    _q=pl.col("quantity").sum(),
                    _q1=pl.col("quantity").first(),
                )
                .sort("strategy_id", "con_id")
                .join(max_index, on="strategy_id", how="left")
                .with_columns(
                    leg_index=pl.col("_max").fill_null(-1)
                    + pl.col("con_id").rank("ordinal").over("strategy_id").cast(pl.Int64),
                    ratio=pl.when(pl.col("_q") != 0)
                    .then(_sign(pl.col("_q")))
                    .otherwise(_sign(pl.col("_q1"))),
                )
                .with_columns(
                    leg_id=pl.col("strategy_id")
                    + pl.lit(":L")
                    + pl.col("leg_index").cast(pl.String)
                )
            )
            new_legs = _conform(
                specs.with_columns(
                    pl.col("exchange").fill_null("SMART"),
                    pl.col("currency").fill_null("USD"),
                    pl.col("local_symbol").fill_null(""),
                    pl.col("trading_class").fill_null(""),
                    status=pl.lit(LegStatus.PENDING.value),
                    updated_at=pl.lit(self.as_of).cast(UTC_US),
                ),
                table_schema("legs"),
            )
            nf = (
                nf.join(
                    new_legs.select("strategy_id", "con_id", _leg="leg_id"),
                    on=["strategy_id", "con_id"],
                    how="left",
                )
                .with_columns(leg_id=pl.coalesce("leg_id", "_leg"))
                .drop("_leg")
            )
        return nf, new_strats, new_legs

    def leg_and_strategy_updates(
        self, nf: pl.DataFrame, new_strats: pl.DataFrame, new_legs: pl.DataFrame
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Rows to upsert in `legs` and `strategies` for everything the new fills touched."""
        if nf.is_empty():
            return new_legs, new_strats
        now = pl.lit(self.as_of).cast(UTC_US)
        # only the strategies the fills touched, with all of their legs
        sids = nf.select("strategy_id").unique()
        all_legs = pl.concat([self.legs.join(sids, on="strategy_id", how="semi"), new_legs])
        touched_legs = nf.select("leg_id").unique()
        last = (
            nf.sort("time", "exec_id")
            .group_by("leg_id")
            .agg(
                _d=pl.col("quantity").sum(),
                _first=pl.col("time").min(),
                _reason=pl.col("close_reason").drop_nulls().last(),
            )
        )
        legs = (
            all_legs.join(touched_legs, on="leg_id", how="semi")
            .join(
                self.leg_qty0.join(touched_legs, on="leg_id", how="semi"), on="leg_id", how="left"
            )
            .join(last, on="leg_id", how="left")
            .with_columns(_q=pl.col("qty0").fill_null(0) + pl.col("_d").fill_null(0))
        )
        flat = pl.col("_q") == 0
        legs = legs.with_columns(
            status=pl.when(~flat)
            .then(pl.lit(LegStatus.OPEN.value))
            .otherwise(pl.lit(LegStatus.CLOSED.value)),
            opened_at=pl.coalesce("opened_at", "_first"),
            closed_at=pl.when(flat).then(pl.coalesce("closed_at", now)).otherwise(None),
            close_reason=pl.when(flat)
            .then(pl.coalesce("_reason", pl.lit(CloseReason.CLOSED.value)))
            .otherwise(None),
            updated_at=now,
        )
        leg_rows = _conform(legs, table_schema("legs"))
        # strategies: from all of their legs (touched legs with their new state)
        state = (
            pl.concat([all_legs.join(leg_rows.select("leg_id"), on="leg_id", how="anti"), leg_rows])
            .with_columns(
                _rank=pl.col("close_reason")
                .fill_null("")
                .replace_strict(_REASON_RANK, default=99, return_dtype=pl.Int64)
            )
            .group_by("strategy_id")
            .agg(
                _any_open=(pl.col("status") == LegStatus.OPEN.value).any(),
                _all_closed=(pl.col("status") == LegStatus.CLOSED.value).all(),
                _opened=pl.col("opened_at").min(),
                _reason=pl.col("close_reason").sort_by("_rank").first(),
            )
        )
        strategies = pl.concat(
            [
                self.strategies.join(sids, on="strategy_id", how="semi").join(
                    new_strats.select("strategy_id"), on="strategy_id", how="anti"
                ),
                new_strats,
            ]
        )
        rows = strategies.join(state, on="strategy_id", how="inner").with_columns(
            status=pl.when(pl.col("_any_open"))
            .then(pl.lit(StrategyStatus.OPEN.value))
            .when(pl.col("_all_closed"))
            .then(pl.lit(StrategyStatus.CLOSED.value))
            .otherwise(pl.col("status")),
        )
        closed = pl.col("status") == StrategyStatus.CLOSED.value
        rows = rows.with_columns(
            opened_at=pl.coalesce("opened_at", "_opened"),
            closed_at=pl.when(closed).then(pl.coalesce("closed_at", now)).otherwise(None),
            close_reason=pl.when(closed).then(pl.col("_reason")).otherwise(None),
            updated_at=now,
        )
        return leg_rows, _conform(rows, table_schema("strategies"))

    # -- orders ------------------------------------------------------------------------------
    def orders_pass(self, nf: pl.DataFrame) -> pl.DataFrame:
        now = pl.lit(self.as_of).cast(UTC_US)
        oo = self.open_orders.with_columns(
            _v6=v6_ref_expr(pl.col("order_ref")),
        )
        intents = self.book.intents.select(
            "order_ref",
            "strategy_id",
            _iqty="quantity",
            _iaction="action",
            _icon="con_id",
            _ilimit="limit_price",
        )
        book_orders = self.book.orders
        known_sids = self.strategies.select("strategy_id")
        # V6 orders working at the broker
        v6oo = (
            oo.filter(pl.col("_v6"))
            .join(intents, on="order_ref", how="left")
            .with_columns(
                strategy_id=pl.coalesce("strategy_id", ref_strategy_expr(pl.col("order_ref")))
            )
            .with_columns(
                _known=pl.col("strategy_id").is_in(known_sids.get_column("strategy_id").implode())
            )
            .with_columns(
                _inbook=pl.col("order_ref").is_in(book_orders.get_column("order_ref").implode())
            )
        )
        live = v6oo.filter(pl.col("_known")).with_columns(
            avg_fill_price=pl.when(pl.col("avg_fill_price").is_finite())
            .then(pl.col("avg_fill_price"))
            .otherwise(None),
            updated_at=now,
        )
        breaks: list[pl.DataFrame] = []
        missing = live.filter(~pl.col("_inbook"))
        if missing.height:
            breaks.append(
                missing.with_columns(
                    break_id=pl.lit("mo-") + pl.col("order_ref"),
                    kind=pl.lit(BreakKind.MISSING_ORDER.value),
                    resolution=pl.lit(Resolution.RECORDED_ORDER.value),
                    resolved=pl.lit(True),
                    severity=pl.lit(Severity.WARNING.value),
                    quantity_delta=pl.lit(0),
                    detail=pl.lit("V6 order working at the broker that the book had not recorded"),
                )
            )
        strays = v6oo.filter(~pl.col("_known"))
        if strays.height:
            breaks.append(
                strays.with_columns(
                    break_id=pl.lit("uo-") + pl.col("order_ref"),
                    strategy_id=pl.lit(None, dtype=pl.String),
                    kind=pl.lit(BreakKind.UNKNOWN_V6_REF.value),
                    resolution=pl.lit(Resolution.UNRESOLVED.value),
                    resolved=pl.lit(False),
                    severity=pl.lit(Severity.URGENT.value),
                    quantity_delta=pl.lit(0),
                    detail=pl.lit("working order with a V6-style ref naming no known strategy"),
                )
            )
        ext = oo.filter(~pl.col("_v6"))
        if ext.height:
            breaks.append(
                ext.with_columns(
                    break_id=pl.format("eo-{}-{}", pl.col("order_id"), pl.col("perm_id")),
                    kind=pl.lit(BreakKind.EXTERNAL_ORDER.value),
                    resolution=pl.lit(Resolution.NOTED.value),
                    resolved=pl.lit(True),
                    severity=pl.lit(Severity.WARNING.value),
                    quantity_delta=pl.lit(0),
                    detail=pl.format(
                        "order not placed by V6: {} {} (status {})",
                        pl.col("action"),
                        pl.col("quantity"),
                        pl.col("status"),
                    ),
                )
            )
        # book orders the broker no longer works: filled or cancelled
        open_refs = oo.get_column("order_ref")
        stale = book_orders.filter(pl.col("status").is_in(["PENDING", "SUBMITTED"])).filter(
            ~pl.col("order_ref").is_in(open_refs.implode())
        )
        new_refs = nf.filter(pl.col("source") == FillSource.BROKER.value).select("order_ref")
        # filled quantity (max over the order's legs) only for the orders that need it
        refs = pl.concat([stale.select("order_ref"), new_refs]).unique()
        broker_fills = pl.concat(
            [
                self.book.fills.select("order_ref", "con_id", "quantity", "source").join(
                    refs, on="order_ref", how="semi"
                ),
                nf.select("order_ref", "con_id", "quantity", "source"),
            ]
        ).filter((pl.col("source") == FillSource.BROKER.value) & (pl.col("order_ref") != ""))
        filled = (
            broker_fills.group_by("order_ref", "con_id")
            .agg(_f=pl.col("quantity").abs().sum())
            .group_by("order_ref")
            .agg(_filled=pl.col("_f").max())
        )
        stale = (
            stale.join(filled, on="order_ref", how="left")
            .with_columns(
                filled=pl.min_horizontal(pl.col("_filled").fill_null(0), pl.col("quantity")),
            )
            .with_columns(
                status=pl.when(pl.col("filled") >= pl.col("quantity"))
                .then(pl.lit("FILLED"))
                .otherwise(pl.lit("CANCELLED")),
                updated_at=now,
            )
        )
        if stale.height:
            breaks.append(
                stale.with_columns(
                    break_id=pl.lit("so-") + pl.col("order_ref"),
                    kind=pl.lit(BreakKind.STALE_ORDER.value),
                    resolution=pl.lit(Resolution.ORDER_UPDATED.value),
                    resolved=pl.lit(True),
                    severity=pl.lit(Severity.INFO.value),
                    quantity_delta=pl.lit(0),
                    detail=pl.format("broker no longer works it: marked {}", pl.col("status")),
                )
            )
        # V6 orders seen only through executions (never recorded, already done)
        seen = (
            nf.filter(
                (pl.col("source") == FillSource.BROKER.value)
                & (ref_strategy_expr(pl.col("order_ref")) == pl.col("strategy_id"))
            )
            .group_by("order_ref")
            .agg(
                order_id=pl.col("order_id").first(),
                perm_id=pl.col("perm_id").first(),
                _strategy=pl.col("strategy_id").first(),
                _con=pl.col("con_id").first(),
                _avg=(pl.col("price") * pl.col("quantity").abs()).sum()
                / pl.col("quantity").abs().sum(),
                _side=pl.col("quantity").first(),
            )
            .join(book_orders.select("order_ref"), on="order_ref", how="anti")
            .filter(~pl.col("order_ref").is_in(open_refs.implode()))
            .join(intents, on="order_ref", how="left")
            .join(filled, on="order_ref", how="left")
            .with_columns(
                strategy_id=pl.coalesce("strategy_id", "_strategy"),
                con_id=pl.coalesce("_icon", "_con"),
                action=pl.coalesce(
                    "_iaction",
                    pl.when(pl.col("_side") > 0).then(pl.lit("BUY")).otherwise(pl.lit("SELL")),
                ),
                quantity=pl.coalesce("_iqty", "_filled"),
                limit_price="_ilimit",
                avg_fill_price="_avg",
                message=pl.lit("recorded by reconciliation from its executions"),
                updated_at=now,
            )
            .with_columns(
                filled=pl.min_horizontal(pl.col("_filled").fill_null(0), pl.col("quantity")),
            )
            .with_columns(
                status=pl.when(pl.col("filled") >= pl.col("quantity"))
                .then(pl.lit("FILLED"))
                .otherwise(pl.lit("CANCELLED")),
            )
        )
        if breaks:
            b = pl.concat([_conform(x, _NB_SCHEMA) for x in breaks])
            self.break_parts.append(b)
        order_schema = table_schema("orders")
        # only rows whose state differs from the book (an unchanged order is not rewritten)
        live_rows = _conform(live, order_schema)
        cols = [
            "order_ref",
            "order_id",
            "perm_id",
            "status",
            "filled",
            "avg_fill_price",
            "limit_price",
            "quantity",
            "message",
        ]
        live_rows = live_rows.join(book_orders.select(cols), on=cols, how="anti", nulls_equal=True)
        return pl.concat(
            [live_rows, _conform(stale, order_schema), _conform(seen, order_schema)]
        ).unique("order_ref", keep="first", maintain_order=True)

    # -- snapshot and breaks ----------------------------------------------------------------------
    def snapshot(self, nf: pl.DataFrame, stats: pl.DataFrame) -> pl.DataFrame:
        delta = nf.group_by("con_id").agg(_d=pl.col("quantity").sum())
        con = (
            self.con_qty0.join(delta, on="con_id", how="full", coalesce=True)
            .join(self._broker_qty(), on="con_id", how="full", coalesce=True)
            .with_columns(
                book_quantity_before=pl.col("book0").fill_null(0),
                book_quantity=pl.col("book0").fill_null(0) + pl.col("_d").fill_null(0),
                broker_quantity=pl.col("broker").fill_null(0),
            )
            .filter(
                (pl.col("book_quantity_before") != 0)
                | (pl.col("book_quantity") != 0)
                | (pl.col("broker_quantity") != 0)
            )
        )
        # the average after this run's adjustments: the broker's where it was adjusted
        con = (
            con.join(stats.select("con_id", _avg="avg_price"), on="con_id", how="left")
            .join(self.contracts, on="con_id", how="left")
            .with_columns(
                run_id=pl.lit(self.run_id),
                as_of=pl.lit(self.as_of).cast(UTC_US),
                broker_avg_price=pl.col("broker_avg"),
                book_avg_price=pl.col("_avg"),
                agrees=pl.col("book_quantity") == pl.col("broker_quantity"),
            )
            .with_columns(
                pl.col("symbol").fill_null("?"),
                pl.col("sec_type").fill_null("STK"),
                pl.col("multiplier").fill_null(1),
            )
        )
        return _conform(
            con.with_columns(date=pl.col("as_of").dt.date()), table_schema("positions_snapshots")
        )

    def break_rows(self, nf: pl.DataFrame) -> pl.DataFrame:
        if not self.break_parts:
            return pl.DataFrame(schema=table_schema("reconciliation_breaks"))
        b = pl.concat(self.break_parts)
        # legs named by the fills each break produced; synthetic breaks name them by break_id
        leg_of = (
            nf.filter(pl.col("break_id").is_not_null())
            .sort("exec_id")
            .unique("break_id", keep="first", maintain_order=True)
            .select("break_id", _leg="leg_id", _sid="strategy_id")
        )
        broker = self._broker_qty().select("con_id", "broker", "broker_avg")
        b = (
            b.join(leg_of, on="break_id", how="left")
            .with_columns(
                leg_id=pl.coalesce("leg_id", "_leg"), strategy_id=pl.coalesce("strategy_id", "_sid")
            )
            .join(self.con_qty0.select("con_id", "book0"), on="con_id", how="left")
            .join(broker, on="con_id", how="left")
            .join(
                self.contracts.select("con_id", "symbol", "sec_type", "expiry", "strike", "right"),
                on="con_id",
                how="left",
            )
            .with_columns(
                run_id=pl.lit(self.run_id),
                detected_at=pl.lit(self.as_of).cast(UTC_US),
                book_quantity=pl.when(pl.col("con_id").is_not_null()).then(
                    pl.col("book0").fill_null(0)
                ),
                broker_quantity=pl.when(pl.col("con_id").is_not_null()).then(
                    pl.col("broker").fill_null(0)
                ),
                broker_avg_price=pl.coalesce("broker_avg_price", "broker_avg"),
                contract=_describe_expr(),
            )
            .unique("break_id", keep="first", maintain_order=True)
        )
        return _conform(b, table_schema("reconciliation_breaks"))

    def run_fills_only(self) -> ReconcileResult:
        self.executions_pass(v6_only=True)
        nf, new_strats, new_legs = self.finalize_targets()
        legs, strategies = self.leg_and_strategy_updates(nf, new_strats, new_legs)
        return ReconcileResult(
            run_id=self.run_id,
            as_of=self.as_of,
            fills=self._fill_rows(nf),
            strategies=strategies,
            legs=legs,
            orders=pl.DataFrame(schema=table_schema("orders")),
            breaks=pl.DataFrame(schema=table_schema("reconciliation_breaks")),
            snapshot=pl.DataFrame(schema=table_schema("positions_snapshots")),
            duplicate_reports=self.duplicates,
        )

    def _fill_rows(self, nf: pl.DataFrame) -> pl.DataFrame:
        return _conform(
            nf.with_columns(
                side=pl.when(pl.col("quantity") > 0).then(pl.lit("BUY")).otherwise(pl.lit("SELL")),
                recorded_at=pl.lit(self.as_of).cast(UTC_US),
                order_ref=pl.col("order_ref").fill_null(""),
                order_id=pl.col("order_id").fill_null(0),
                perm_id=pl.col("perm_id").fill_null(0),
                account=pl.col("account").fill_null(""),
                commission=pl.when(pl.col("commission").is_finite()).then(pl.col("commission")),
            ).filter(pl.col("quantity") != 0),
            table_schema("fills"),
        )

    def focus(self) -> None:
        """After the executions pass, only contracts where book and broker disagree, or where
        the broker holds nothing but a leg still does, can need a resolution."""
        con = self._con_now()
        disagree = con.filter(pl.col("book") != pl.col("broker")).select("con_id")
        # legs that offset each other on a contract the broker no longer holds (e.g. two
        # strategies long and short the same option at expiry): flat in sum, held per leg
        touched = self._new_fills().select("con_id").unique()
        flat_gone = con.filter((pl.col("broker") == 0) & (pl.col("book") == 0)).select("con_id")
        maybe = pl.concat(
            [self.con_qty0.filter(pl.col("_legs_held")).select("con_id"), touched]
        ).join(flat_gone, on="con_id", how="semi")
        held = (
            self._leg_book(maybe, "held").filter(pl.col("qty") != 0).select("con_id")
            if maybe.height
            else maybe
        )
        self._focus = pl.concat([disagree, held]).unique()

    def run(self) -> ReconcileResult:
        self.executions_pass()
        self.focus()
        self.vanished_pass()
        self.quantity_pass()
        self.price_pass()
        nf, new_strats, new_legs = self.finalize_targets()
        legs, strategies = self.leg_and_strategy_updates(nf, new_strats, new_legs)
        orders = self.orders_pass(nf)
        breaks = self.break_rows(nf)
        snapshot = self.snapshot(nf, self._stats_now())
        fills = self._fill_rows(nf)
        result = ReconcileResult(
            run_id=self.run_id,
            as_of=self.as_of,
            fills=fills,
            strategies=strategies,
            legs=legs,
            orders=orders,
            breaks=breaks,
            snapshot=snapshot,
            duplicate_reports=self.duplicates,
        )
        if result.breaks.height:
            log.info(
                "reconciliation %s: %d break(s), %d unresolved, %d fill(s) booked",
                self.run_id,
                result.breaks.height,
                result.unresolved_breaks,
                fills.height,
            )
        return result


_REASON_RANK = {
    CloseReason.ASSIGNED.value: 0,
    CloseReason.EXERCISED.value: 1,
    CloseReason.CLOSED_EXTERNALLY.value: 2,
    CloseReason.EXPIRED.value: 3,
    CloseReason.CLOSED.value: 4,
    CloseReason.CANCELLED.value: 5,
}


def _describe_expr() -> pl.Expr:
    """'SPY 2026-04-17 480P' for options, 'SPY STK' otherwise (Contract.describe, vectorised)."""
    strike = pl.col("strike").cast(pl.String).str.replace(r"\.0$", "")
    return (
        pl.when(pl.col("sec_type") == "OPT")
        .then(pl.format("{} {} {}{}", "symbol", pl.col("expiry").cast(pl.String), strike, "right"))
        .when(pl.col("symbol").is_not_null())
        .then(pl.format("{} {}", "symbol", "sec_type"))
        .otherwise(None)
    )


def executions_since(last_as_of: datetime | None, overlap: timedelta) -> datetime | None:
    """Where to start asking the broker for executions: the last reconciliation minus an
    overlap (exec_ids de-duplicate, so overlap is free and guards against clock skew)."""
    return None if last_as_of is None else last_as_of - overlap
