"""The state and shared views of one reconciliation run."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime

import polars as pl

from core.domain.frames import (
    CONTRACT_COLUMNS,
    CONTRACT_SCHEMA,
)
from core.domain.strategies import FillSource, LegStatus
from core.domain.timezones import UTC_US
from core.reconcile.model import (
    _ENGINE,
    _EXT_FACTS,
    _EXT_PREFIX,
    _NEW_LEG,
    _NF_SCHEMA,
    BookFrames,
    BrokerFrames,
    Tolerance,
    _conform,
    _sign,
)
from core.reconcile.screen import ReportBounds
from core.reconcile.stats import (
    _add_aggregates,
    _ordered_stats,
    _side_aggregates,
    _side_aggs,
    _split_mixed,
    _stats_schema,
)

# IB's execIds: everything before the final period names one fill, the digits after it are
# the version a correction bumps (ids without such a suffix are their own fill, version 0)
_FILL_KEY = pl.col("exec_id").str.replace(r"\.\d+$", "")
_VERSION = pl.col("exec_id").str.extract(r"\.(\d+)$", 1).cast(pl.Int64).fill_null(0)


class _Views:
    """State shared by the passes of one reconciliation (frames only, no I/O): the book's
    and the broker's frames, the whole-book scans, and the views the passes read as they
    book fills (each rebuilt only when a pass has added some)."""

    def __init__(
        self,
        book: BookFrames,
        broker: BrokerFrames,
        as_of: datetime,
        run_id: str,
        today: date,
        tol: Tolerance,
        account: str | None,
        bounds: ReportBounds,
        fills_only: bool = False,
    ) -> None:
        self.book = book
        self.bounds = bounds
        self.as_of = as_of
        self.run_id = run_id
        self.today = today
        self.tol = tol
        self.account = account
        self.now = pl.lit(as_of).cast(UTC_US)
        self.fill_parts: list[pl.DataFrame] = []
        self.break_parts: list[pl.DataFrame] = []
        self.open_orders = broker.open_orders
        self.n_book_fills = book.fills.height
        self.legs = book.legs
        self.strategies = book.strategies
        self._memo: dict[str, tuple[int, pl.DataFrame]] = {}
        self._fixed: dict[str, pl.DataFrame] = {}
        self._focus: pl.DataFrame | None = None  # None = every contract

        # The whole-book scans, planned together and collected once so polars runs them side
        # by side (common subplans are computed once): leg and contract quantities with the
        # one-way price aggregates, the executions the book lacks, the broker's positions.
        pos_lf = broker.positions.lazy()
        if account is not None:
            pos_lf = pos_lf.filter(pl.col("account") == account)
        pos_lf = (
            pos_lf.filter((pl.col("quantity") != 0) & (pl.col("sec_type") != "BAG"))
            .filter(pl.col("con_id").is_first_distinct())
            .with_columns(
                broker_avg=pl.when(pl.col("avg_cost").is_finite())
                .then(pl.col("avg_cost") / pl.col("multiplier"))
                .otherwise(None)
            )
        )
        book_lf = book.fills.lazy()
        q = pl.col("quantity")
        by_leg_lf = book_lf.group_by("leg_id").agg(
            qty0=q.sum(),
            con_id=pl.col("con_id").first(),
            _n=pl.len().cast(pl.Int64),
            # a leg's fills are all on its contract (checked: _cmin == _cmax), so the one-way
            # price aggregates per contract are sums of these per-leg parts
            _cmin=pl.col("con_id").min(),
            _cmax=pl.col("con_id").max(),
            **_side_aggs(),
        )
        con_lf = by_leg_lf.group_by("con_id").agg(
            book0=pl.col("qty0").sum(),
            nfills=pl.col("_n").sum(),
            _legs_held=(pl.col("qty0") != 0).any(),
            quantity=pl.col("qty0").sum(),
            _buys=pl.col("_buys").any(),
            _sells=pl.col("_sells").any(),
            _notional=pl.col("_notional").sum(),
            _abs=pl.col("_abs").sum(),
            _comm=pl.col("_comm").sum(),
            _split=(pl.col("_cmin") != pl.col("_cmax")).any(),
        )
        ex_lf = broker.executions.lazy().with_columns(_first=pl.col("exec_id").is_first_distinct())
        # other accounts and BAG-level reports are dropped after the anti-join (few rows left)
        keep = (pl.col("sec_type") != "BAG") & (pl.col("con_id") > 0)
        if account is not None:
            keep = keep & (pl.col("account") == account)
        # corrections: a fill is one execId up to the final period; the highest version the
        # broker reports counts, and one the book has a lower version of replaces it
        latest_lf = (
            ex_lf.filter("_first")
            .filter(keep)
            .with_columns(_key=_FILL_KEY, _ver=_VERSION)
            .filter(pl.col("_ver") == pl.col("_ver").max().over("_key"))
        )
        # per fill the book booked from the broker: its highest version and that version's
        # execId (the last among equal versions); full rows are read only for the few fills
        # a correction replaces (after the collect)
        booked_ver_lf = (
            book_lf.filter(pl.col("source") == FillSource.BROKER.value)
            .select("exec_id", _key=_FILL_KEY, _ver=_VERSION)
            .sort("_ver", "exec_id")
            .group_by("_key")
            .agg(_bver=pl.col("_ver").last(), _bid=pl.col("exec_id").last())
        )
        new_exec_lf = (
            latest_lf.join(book_lf.select("exec_id"), on="exec_id", how="anti")
            .join(booked_ver_lf, on="_key", how="left")
            .filter(pl.col("_bver").is_null() | (pl.col("_bver") < pl.col("_ver")))
            .drop("_first")
        )
        # an execId the book has, reported with another contract, side, quantity or time:
        # never a repeat to drop, a conflict to surface (e.g. a simulator that restarted
        # its numbering)
        booked = book_lf.select(
            "exec_id", _bcon="con_id", _bqty="quantity", _btime="time", _bleg="leg_id",
            _bsid="strategy_id",
        )  # fmt: skip
        signed = (
            pl.when(pl.col("side") == "BUY").then(pl.col("quantity")).otherwise(-pl.col("quantity"))
        )
        conflict_lf = (
            ex_lf.filter("_first")
            .filter(keep)
            .join(booked, on="exec_id", how="inner")
            .filter(
                (pl.col("con_id") != pl.col("_bcon"))
                | (signed != pl.col("_bqty"))
                | (pl.col("time") != pl.col("_btime"))
            )
            .with_columns(quantity=signed)
        )
        # strategy_id, con_id -> _leg (a strategy holds a contract in at most one leg)
        by_sc_lf = (
            self.legs.lazy()
            .sort("leg_index")
            .filter(pl.struct("strategy_id", "con_id").is_first_distinct())
            .select("strategy_id", "con_id", _leg="leg_id")
        )
        plans = [
            by_leg_lf.select("leg_id", pl.col("qty0").alias("quantity"), *_side_aggs()),
            ex_lf.select(pl.len().alias("raw"), pl.col("_first").sum().alias("unique")),
            new_exec_lf,
            by_sc_lf,
            conflict_lf,
        ]
        # executions that name no contract V6 can book (no conId): kept as breaks
        mine = pl.lit(True) if account is None else pl.col("account") == account
        unbookable_lf = ex_lf.filter("_first").filter(
            mine & (pl.col("sec_type") != "BAG") & ~(pl.col("con_id") > 0).fill_null(False)
        )
        if not fills_only:
            plans += [con_lf, pos_lf, unbookable_lf]
        out = pl.collect_all(plans, engine=_ENGINE)
        # per leg: the book's quantity and one-way price aggregates (see position_stats)
        self._leg_agg, counted, new_exec, self._by_sc, self._conflicts = out[:5]
        # the booked versions corrections replace, with the correcting execId
        fixes = new_exec.filter(pl.col("_bver").is_not_null()).select(
            "_bid", _new_id="exec_id", _new_time="time"
        )
        self._replaced = fixes.join(book.fills, left_on="_bid", right_on="exec_id").rename(
            {"_bid": "exec_id"}
        )
        self._new_exec = new_exec.drop("_key", "_ver", "_bver", "_bid")
        self.duplicates = int(counted.item(0, "raw") - counted.item(0, "unique"))
        # the book's legs with their quantity before this run (qty0; null: never filled)
        self.legs_q = self.legs.join(
            self._leg_agg.select("leg_id", qty0="quantity"), on="leg_id", how="left"
        )
        if fills_only:
            return
        con_qty0, self.positions, self._unbookable = out[5:]
        agg_cols = ["con_id", "quantity", *_side_aggs()]
        if con_qty0.get_column("_split").any():  # a leg with fills on two contracts
            fills = book.fills.select("con_id", "quantity", "price", "commission")
            self._base_agg = _side_aggregates(fills, "con_id")
        else:
            self._base_agg = con_qty0.select(agg_cols)
        con_qty0 = con_qty0.select("con_id", "book0", "nfills", "_legs_held")
        # con_id -> contract columns, from the broker first, then the book's legs (the
        # executions the book already has are on its legs: only new ones add contracts);
        # the broker's rows carry its position (broker, broker_avg)
        contract_schema = pl.Schema(CONTRACT_SCHEMA)
        held = self.positions.select(
            *CONTRACT_COLUMNS, broker=pl.col("quantity"), broker_avg="broker_avg"
        )
        catalogue = pl.concat(
            [held]
            + [
                _conform(p.select(CONTRACT_COLUMNS), contract_schema)
                for p in (self._new_exec, self.legs)
            ],
            how="diagonal",
        )
        valid = pl.col("con_id") > 0
        catalogue = catalogue.filter(valid).filter(pl.col("con_id").is_first_distinct())
        self.contracts = catalogue.select(CONTRACT_COLUMNS)
        # per contract: the book's quantity before this run (book0, nfills, _legs_held), the
        # broker's position and the contract's description; positions without a valid con_id
        # have no description but still count
        odd = held.filter(~valid.fill_null(False)).select("con_id", "broker", "broker_avg")
        if odd.height:
            catalogue = pl.concat([catalogue, odd], how="diagonal")
        self.info = con_qty0.join(catalogue, on="con_id", how="full", coalesce=True)
        self._base_legs = self.legs_q.select(*self._LEG_COLS, qty=pl.col("qty0").fill_null(0)).join(
            self._strategy_facts(), on="strategy_id", how="left"
        )

    # -- shared views ---------------------------------------------------------------------
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

    def _delta(self) -> pl.DataFrame:
        """con_id -> d: the quantity the fills booked so far add to each contract."""
        return self._cached(
            "delta",
            lambda: self._new_fills().group_by("con_id").agg(d=pl.col("quantity").sum()),
        )

    # Views are restricted to a set of contracts (`cons`, a frame of con_id) where a pass
    # only cares about some: after the executions pass, only contracts where book and broker
    # disagree (the "focus") can need anything, which keeps later passes small.
    def _con_now(self, cons: pl.DataFrame | None = None, key: str = "all") -> pl.DataFrame:
        """Per contract: book quantity now (base + fills booked by earlier passes), before
        this run, fill count, broker quantity and average, and the contract's columns."""
        return self._cached(f"con_now:{key}", lambda: self._build_con_now(cons, key))

    def _restricted(
        self, name: str, frame: pl.DataFrame, cons: pl.DataFrame, key: str
    ) -> pl.DataFrame:
        """`frame` (fixed for the run) restricted to the contracts `cons` of `key`, once."""
        memo = f"{name}:{key}"
        hit = self._fixed.get(memo)
        if hit is None:
            hit = self._fixed[memo] = frame.join(cons, on="con_id", how="semi")
        return hit

    def _new_in(self, cons: pl.DataFrame, key: str) -> pl.DataFrame:
        """The fills booked so far on the contracts `cons` (shared by the views of `key`);
        a later generation only restricts the parts added since."""
        name = f"new_in:{key}"
        generation = len(self.fill_parts)
        hit = self._memo.get(name)
        if hit is not None and hit[0] == generation:
            return hit[1]
        if hit is None or not self.fill_parts:
            frame = self._new_fills().join(cons, on="con_id", how="semi")
        else:
            added = pl.concat(self.fill_parts[hit[0] :]).join(cons, on="con_id", how="semi")
            frame = pl.concat([hit[1], added]) if added.height else hit[1]
        self._memo[name] = (generation, frame)
        return frame

    def _build_con_now(self, cons: pl.DataFrame | None, key: str) -> pl.DataFrame:
        everything = self._memo.get("con_now:all")
        if cons is not None and everything is not None and everything[0] == len(self.fill_parts):
            return everything[1].join(cons, on="con_id", how="semi")
        facts = self.info
        if cons is None:
            delta = self._delta()
        else:
            facts = self._restricted("info", self.info, cons, key)
            delta = self._new_in(cons, key).group_by("con_id").agg(d=pl.col("quantity").sum())
        return facts.join(delta, on="con_id", how="full", coalesce=True).select(
            "con_id",
            (pl.col("book0").fill_null(0) + pl.col("d").fill_null(0)).alias("book"),
            pl.col("book0").fill_null(0),
            pl.col("nfills").fill_null(0),
            pl.col("broker").fill_null(0),
            "broker_avg",
            *[c for c in CONTRACT_COLUMNS if c != "con_id"],
        )

    _LEG_COLS = (
        "leg_id", "strategy_id", "leg_index", "con_id", "ratio", "status", "sec_type",
        "symbol", "expiry", "strike", "right", "multiplier",
    )  # fmt: skip

    def _legs_by_contract(self) -> pl.DataFrame:
        """strategy_id, con_id -> _leg (a strategy holds a contract in at most one leg)."""
        return self._by_sc

    def _with_leg(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Add `leg_id`: the leg of each row's (strategy_id, con_id), if the strategy has one.

        When no two legs share a contract (the usual book) the lookup joins on con_id alone
        and checks the strategy, which is much cheaper than a join on both columns."""
        by_sc = self._by_sc
        if by_sc.get_column("con_id").n_unique() == by_sc.height:
            return frame.join(
                by_sc.select("con_id", _lsid="strategy_id", _leg="_leg"), on="con_id", how="left"
            ).select(
                pl.exclude("_lsid", "_leg"),
                leg_id=pl.when(pl.col("_lsid") == pl.col("strategy_id")).then(pl.col("_leg")),
            )
        return frame.join(
            by_sc.rename({"_leg": "leg_id"}), on=["strategy_id", "con_id"], how="left"
        )

    def _strategy_facts(self) -> pl.DataFrame:
        return self.strategies.select(
            "strategy_id",
            pl.col("origin").alias("s_origin"),
            pl.col("managed").alias("s_managed"),
            pl.col("status").alias("s_status"),
            pl.col("quantity").alias("s_quantity"),
        )

    def _leg_book(self, cons: pl.DataFrame | None = None, key: str = "all") -> pl.DataFrame:
        return self._cached(f"leg_book:{key}", lambda: self._build_leg_book(cons, key))

    def _build_leg_book(self, cons: pl.DataFrame | None, key: str) -> pl.DataFrame:
        """Every leg with its quantity now and its strategy's facts, including the legs this
        run has booked fills to but not yet named (placeholders), so every pass sees them."""
        base = self._base_legs
        new = self._new_fills()
        if cons is not None:
            base = self._restricted("legs", base, cons, key)
            new = self._new_in(cons, key)
        if new.is_empty():
            return base
        placeholder_leg = pl.col("leg_id").is_null() | pl.col("leg_id").str.starts_with(_NEW_LEG)
        delta = new.filter(~placeholder_leg).group_by("leg_id").agg(d=pl.col("quantity").sum())
        strat = self._strategy_facts()
        known = (
            base.join(delta, on="leg_id", how="left")
            .with_columns(qty=pl.col("qty") + pl.col("d").fill_null(0))
            .drop("d")
        )
        pending = new.filter(placeholder_leg)
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
        is_placeholder = pl.col("strategy_id").str.starts_with(_EXT_PREFIX)
        return known.with_columns(
            **{
                c: pl.when(is_placeholder).then(pl.lit(v)).otherwise(pl.col(c))
                for c, v in _EXT_FACTS.items()
            }
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
            agg = _add_aggregates(agg, _side_aggregates(nf, "con_id"), "con_id")
        schema = _stats_schema("con_id", pl.Int64())
        mixed, simple = _split_mixed(agg, "con_id")
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

    def _with_leg_avg(self, rows: pl.DataFrame) -> pl.DataFrame:
        """Add `leg_avg`: the average price of each row's leg (only the legs involved)."""
        leg_ids = rows.get_column("leg_id").drop_nulls()
        if leg_ids.is_empty():
            return rows.with_columns(leg_avg=pl.lit(None, dtype=pl.Float64))
        # position_stats over the legs' fills, from the book's per-leg aggregates (see
        # __init__) plus this run's fills; only legs that both bought and sold read their
        # history for the time-ordered pass
        of_legs = pl.col("leg_id").is_in(leg_ids.implode())
        cols = ["leg_id", "exec_id", "time", "quantity", "price", "commission"]
        new = self._new_fills().select(cols).filter(of_legs)
        agg = self._leg_agg.filter(of_legs)
        if new.height:
            agg = _add_aggregates(agg, _side_aggregates(new, "leg_id"), "leg_id")
        schema = _stats_schema("leg_id", pl.String())
        mixed, simple = _split_mixed(agg, "leg_id")
        stats = simple.cast(schema)  # type: ignore[arg-type]
        if mixed.height:
            keys = mixed.select("leg_id")
            history = pl.concat(
                [
                    self.book.fills.select(cols).join(keys, on="leg_id", how="semi"),
                    new.join(keys, on="leg_id", how="semi"),
                ]
            )
            ordered = _ordered_stats(history, "leg_id").cast(schema)  # type: ignore[arg-type]
            stats = pl.concat([stats, ordered])
        return rows.join(stats.select("leg_id", leg_avg="avg_price"), on="leg_id", how="left")
