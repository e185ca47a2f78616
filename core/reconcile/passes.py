"""The reconciliation passes that book fills."""

from __future__ import annotations

import math
from datetime import timedelta

import polars as pl

from core.domain.breaks import BreakKind, Resolution, Severity
from core.domain.frames import (
    CONTRACT_COLUMNS,
)
from core.domain.order_refs import ref_strategy_expr, v6_ref_expr
from core.domain.strategies import (
    CloseReason,
    FillSource,
    LegStatus,
    Origin,
    StrategyStatus,
    StrategyType,
    external_strategy_id,
)
from core.domain.timezones import UTC_US
from core.reconcile.model import (
    _EXT_PREFIX,
    _NB_SCHEMA,
    _NEW_LEG,
    _NF_SCHEMA,
    _NULL_STR,
    _REASON_RANK,
    _UNLIMITED,
    EXPIRY_REF_PREFIXES,
    _conform,
    _ids,
    _schema,
    _sign,
)
from core.reconcile.views import _Views

ACKED_SUFFIX = "-acked"  # the id of the break row that books an acknowledged one


class _Passes(_Views):
    """Passes 1-5: executions, assignment/exercise and expiry, quantities, average prices;
    then naming the new strategies and legs and deriving their states."""

    # -- pass 1: executions ----------------------------------------------------------------
    def conflicts_pass(self) -> None:
        """Executions whose execId the book has booked with other content: an urgent,
        unresolved break with the broker's fields, never silently dropped as a repeat."""
        c = self._conflicts
        if c.is_empty():
            return
        log_detail = pl.format(
            "execId booked as {} x{} at {}; the broker now reports {} {} x{} at {}",
            "_bcon", "_bqty", "_btime", "symbol", "con_id", "quantity", "time",
        )  # fmt: skip
        self.break_parts.append(
            _conform(
                c.with_columns(
                    break_id=pl.lit("conflict-") + pl.col("exec_id"),
                    kind=pl.lit(BreakKind.EXECUTION_CONFLICT.value),
                    resolution=pl.lit(Resolution.NOTED.value),
                    resolved=pl.lit(False),
                    severity=pl.lit(Severity.URGENT.value),
                    strategy_id=pl.col("_bsid"),
                    leg_id=pl.col("_bleg"),
                    quantity_delta=pl.col("quantity"),
                    detail=log_detail,
                ),
                _NB_SCHEMA,
            )
        )

    def unbookable_pass(self) -> None:
        """Executions naming no contract V6 knows (no conId) cannot be booked: each is an
        urgent, unresolved break carrying the broker's raw fields."""
        u = self._unbookable
        if u.is_empty():
            return
        fields = (
            "exec_id", "order_ref", "order_id", "perm_id", "account", "symbol", "sec_type",
            "local_symbol", "con_id", "side", "quantity", "price", "time",
        )  # fmt: skip
        raw = pl.format(
            "execution names no contract V6 can book: " + ", ".join(f"{f}={{}}" for f in fields),
            *(pl.col(f).cast(pl.String).fill_null("?") for f in fields),
        )
        self.break_parts.append(
            _conform(
                u.with_columns(
                    break_id=pl.lit("unbookable-") + pl.col("exec_id"),
                    kind=pl.lit(BreakKind.UNKNOWN_CONTRACT.value),
                    resolution=pl.lit(Resolution.NOTED.value),
                    resolved=pl.lit(False),
                    severity=pl.lit(Severity.URGENT.value),
                    con_id=pl.lit(None, pl.Int64),
                    quantity_delta=pl.lit(0, pl.Int64),
                    detail=raw,
                ),
                _NB_SCHEMA,
            )
        )

    def corrections_pass(self) -> None:
        """A correction replaces the version the book booked: that version is reversed by a
        synthetic fill on its leg (commission refunded with it) and recorded as a resolved
        break; the correcting execution itself is booked by the executions pass."""
        r = self._replaced
        if r.is_empty():
            return
        r = r.with_columns(break_id=pl.lit("corr-") + pl.col("_new_id"))
        self.fill_parts.append(
            _conform(
                r.with_columns(
                    exec_id=pl.lit("recon-") + pl.col("break_id"),
                    quantity=-pl.col("quantity"),
                    commission=-pl.col("commission"),
                    time=pl.col("_new_time"),
                    source=pl.lit(FillSource.RECONCILIATION.value),
                    close_reason=pl.lit(CloseReason.CLOSED.value),
                    _ref_sid=pl.lit(None, pl.String),
                ),
                _NF_SCHEMA,
            )
        )
        self.break_parts.append(
            _conform(
                r.with_columns(
                    kind=pl.lit(BreakKind.EXECUTION_CORRECTION.value),
                    resolution=pl.lit(Resolution.ADJUSTED.value),
                    resolved=pl.lit(True),
                    severity=pl.lit(Severity.INFO.value),
                    quantity_delta=-pl.col("quantity"),
                    detail=pl.format("execution {} corrected by {}", "exec_id", "_new_id"),
                ),
                _NB_SCHEMA,
            )
        )

    def executions_pass(self, v6_only: bool = False) -> None:
        new = self._new_exec  # de-duplicated, minus what the book has (see __init__)
        if new.is_empty():
            return
        known_sid = pl.coalesce("_isid", "_ref_sid").is_in(
            self.strategies.get_column("strategy_id").implode()
        )
        intents = self.book.intents.select("order_ref", _isid=pl.col("strategy_id"))
        new = (
            new.join(intents, on="order_ref", how="left")
            .with_columns(
                _v6=v6_ref_expr(pl.col("order_ref")),
                _ref_sid=ref_strategy_expr(pl.col("order_ref")),
                quantity=pl.when(pl.col("side") == "BUY")
                .then(pl.col("quantity"))
                .otherwise(-pl.col("quantity")),
                break_id=pl.lit("ex-") + pl.col("exec_id"),
            )
            .with_columns(
                strategy_id=pl.coalesce("_isid", "_ref_sid"),
                _cat=pl.when(pl.col("_isid").is_not_null())
                .then(pl.lit("intent"))
                .when(
                    pl.any_horizontal(
                        pl.col("order_ref").fill_null("").str.starts_with(p)
                        for p in EXPIRY_REF_PREFIXES
                    )
                )
                .then(pl.lit("expiry"))
                .when(pl.col("_v6") & known_sid.fill_null(False))
                .then(pl.lit("v6_no_intent"))
                .when(pl.col("_v6"))
                .then(pl.lit("unknown_v6"))
                .otherwise(pl.lit("external")),
            )
        )
        v6 = new.filter(pl.col("_cat").is_in(["intent", "v6_no_intent"]))
        other = new.filter(pl.col("_cat").is_in(["external", "unknown_v6", "expiry"]))

        if v6.height:
            # the leg, where the strategy already has one for this contract
            v6 = self._with_leg(v6)
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
        agg = self._con_now(cons, "ext").select("con_id", "book")
        # the largest leg on the contract on the side of the book's position
        closable = (
            legs.join(agg, on="con_id", how="inner")
            .filter(_sign(pl.col("qty")) == _sign(pl.col("book")))
            .sort(pl.col("qty").abs(), "leg_id", descending=[True, False])
            .filter(pl.col("con_id").is_first_distinct())
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
            .filter(pl.col("con_id").is_first_distinct())
            .select("con_id", _eleg="leg_id", _esid="strategy_id")
        )
        o = other.join(closable, on="con_id", how="left")
        if ext_legs.height:
            o = o.join(ext_legs, on="con_id", how="left")
        else:
            o = o.with_columns(_eleg=_NULL_STR, _esid=_NULL_STR)
        o = (
            o.with_columns(_expiry=pl.col("_cat") == "expiry")
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

    def focus(self) -> None:
        """After the executions pass, only contracts where book and broker disagree, or where
        the broker holds nothing but a leg still does, can need a resolution."""
        con = self._con_now()
        disagree = con.filter(pl.col("book") != pl.col("broker")).select("con_id")
        # legs that offset each other on a contract the broker no longer holds (e.g. two
        # strategies long and short the same option at expiry): flat in sum, held per leg
        touched = self._delta().select("con_id")
        flat_gone = con.filter((pl.col("broker") == 0) & (pl.col("book") == 0)).select("con_id")
        maybe = flat_gone
        if flat_gone.height:
            maybe = pl.concat(
                [self.info.filter(pl.col("_legs_held")).select("con_id"), touched]
            ).join(flat_gone, on="con_id", how="semi")
        held = (
            self._leg_book(maybe, "held").filter(pl.col("qty") != 0).select("con_id")
            if maybe.height
            else maybe
        )
        self._focus = pl.concat([disagree, held]).unique()

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
            con.filter((d != 0) & (pl.col("sec_type") == "STK"))
            .select("symbol", _scon="con_id", _sd=d)
            .filter(pl.col("symbol").is_first_distinct())
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
        expired = options.join(
            con.filter(pl.col("broker") == 0).select("con_id", "book0", "nfills"),
            on="con_id",
            how="inner",
        ).filter(pl.col("expiry") <= self.today)
        if assigned.height:
            expired = expired.join(assigned.select("leg_id"), on="leg_id", how="anti")
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
            "time": self.now,
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
                    kind=pl.when(short)
                    .then(pl.lit(BreakKind.ASSIGNMENT.value))
                    .otherwise(pl.lit(BreakKind.EXERCISE.value)),
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
            time=self.now,
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
            .join(con.select("con_id", "_s", "book", "_d"), on="con_id", how="inner")
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
            legs.with_columns(_before=pl.col("_cap").cum_sum().over("con_id") - pl.col("_cap"))
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
            .select(
                "con_id",
                leg_id=pl.lit(None, dtype=pl.String),
                strategy_id=pl.lit(_EXT_PREFIX) + pl.col("symbol"),
                quantity="quantity",
                _isext=pl.lit(True),
            )
        )
        rows = pl.concat([alloc, residual]).join(
            con.select("book", "broker", "book0", "nfills", "broker_avg", *CONTRACT_COLUMNS),
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
        rows = rows.with_columns(
            exec_id=pl.lit("recon-") + pl.col("break_id"),
            price=pl.max_horizontal(price, pl.lit(0.0)),
            time=self.now,
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

    # -- hold: what waits for a person (see core.reconcile.screen) ----------------------------
    def hold_pass(self) -> None:
        """Un-book vanished positions and large unknown adoptions nobody acknowledged: their
        fills go, their breaks stay, AWAITING_ACK (unresolved, urgent)."""
        if not self.break_parts:
            return
        breaks = pl.concat(self.break_parts)
        vanished = (pl.col("kind") == BreakKind.MISSING_POSITION.value) & (
            pl.col("resolution") == Resolution.CLOSED_EXTERNALLY.value
        )
        adopted = pl.col("resolution") == Resolution.ADOPTED_EXTERNAL.value
        cand = breaks.filter(vanished | adopted).select("break_id", _vanished=vanished)
        if cand.is_empty():
            return
        b = self.bounds
        size = b.account_size
        limit = math.inf if size is None else b.adopt_max_pct / 100 * size
        cost = (
            self._new_fills()
            .join(cand, on="break_id", how="semi")
            .group_by("break_id")
            .agg(
                _cost=(
                    pl.col("quantity").abs()
                    * pl.col("price").abs()
                    * pl.max_horizontal(pl.col("multiplier").fill_null(1), pl.lit(1))
                ).sum()
            )
        )
        cand = cand.join(cost, on="break_id", how="left").filter(
            pl.col("_vanished") | (pl.col("_cost").fill_null(0.0) > limit)
        )
        if cand.is_empty():
            return
        cand = cand.join(self._hold_keys(cand), on="break_id", how="left").with_columns(
            _ack=pl.col("_key").is_in(list(b.acknowledged)), _hold=pl.lit(True)
        )
        held = cand.filter(~pl.col("_ack")).get_column("break_id").implode()
        # a booked acknowledgement is a new break row beside the awaiting one (breaks are
        # insert-only: the record of what waited stays)
        cand = cand.with_columns(
            _key=pl.when("_ack").then(pl.col("_key") + ACKED_SUFFIX).otherwise("_key")
        )
        rename = cand.select("break_id", "_key")
        kept = (
            p.filter(~pl.col("break_id").is_in(held))
            .join(rename, on="break_id", how="left")
            .with_columns(break_id=pl.coalesce("_key", "break_id"))
            .drop("_key")
            for p in self.fill_parts
        )
        self.fill_parts = [p for p in kept if p.height]
        self._memo.clear()
        ack = "`v6 breaks ack {} --reason TEXT`"
        pct = 100 * pl.col("_cost") / (size or math.nan)
        breaks = breaks.join(cand, on="break_id", how="left").with_columns(
            break_id=pl.coalesce("_key", "break_id")
        )
        waits = pl.col("_hold").fill_null(False) & ~pl.col("_ack").fill_null(False)
        self.break_parts = [
            _conform(
                breaks.with_columns(
                    resolution=pl.when(waits)
                    .then(pl.lit(Resolution.AWAITING_ACK.value))
                    .otherwise("resolution"),
                    resolved=pl.when(waits).then(pl.lit(False)).otherwise("resolved"),
                    severity=pl.when(waits)
                    .then(pl.lit(Severity.URGENT.value))
                    .otherwise("severity"),
                    quantity_delta=pl.when(waits).then(pl.lit(0)).otherwise("quantity_delta"),
                    strategy_id=pl.when(waits & pl.col("strategy_id").str.starts_with(_EXT_PREFIX))
                    .then(_NULL_STR)
                    .otherwise("strategy_id"),
                    detail=pl.when(waits & pl.col("_vanished"))
                    .then(
                        pl.format(
                            "broker no longer holds it and no execution, assignment or expiry "
                            "explains it (a dropped report looks the same): not booked; if it "
                            f"was really closed, {ack}",
                            "break_id",
                        )
                    )
                    .when(waits)
                    .then(
                        pl.format(
                            "unknown position costing {} USD ({}% of net liquidation, over "
                            f"{b.adopt_max_pct:g}%): not adopted; to adopt it as EXTERNAL, {ack}",
                            pl.col("_cost").round(2),
                            pct.round(1),
                            "break_id",
                        )
                    )
                    .when(pl.col("_ack").fill_null(False))
                    .then(pl.format("{}; acknowledged by a person (v6 breaks ack)", "detail"))
                    .otherwise("detail"),
                ),
                _NB_SCHEMA,
            )
        ]

    def _hold_keys(self, cand: pl.DataFrame) -> pl.DataFrame:
        """break_id -> _key: the id a held break is acknowledged by, stable across runs.

        A quantity-pass id hashes the book as it was before the run, which this run's other
        fills on the contract change; the key hashes the book after them (what the next run
        starts from), so the next run over the same state derives the same key. An
        execution's break keeps its id (ex-EXEC_ID: stable already)."""
        nf = self._new_fills()
        ids = cand.get_column("break_id").implode()
        others = (
            nf.filter(~pl.col("break_id").is_in(ids))
            .group_by("con_id")
            .agg(_d=pl.col("quantity").sum(), _n=pl.len().cast(pl.Int64))
        )
        rows = (
            nf.filter(pl.col("break_id").is_in(ids))
            .group_by("break_id")
            .agg(
                pl.col("con_id", "strategy_id", "leg_id").first(),
                _q=pl.col("quantity").sum(),
            )
            .join(self.info.select("con_id", "book0", "nfills", "broker"), on="con_id", how="left")
            .join(others, on="con_id", how="left")
            .with_columns(
                _book=pl.col("book0").fill_null(0) + pl.col("_d").fill_null(0),
                _nn=pl.col("nfills").fill_null(0) + pl.col("_n").fill_null(0),
            )
        )
        keys = _ids(rows, "ak", ["con_id", "strategy_id", "leg_id", "_q", "_book", "broker", "_nn"])
        return rows.select(
            "break_id",
            _key=pl.when(pl.col("break_id").str.starts_with("ex-"))
            .then(pl.col("break_id"))
            .otherwise(keys),
        )

    # -- pass 5: average prices ---------------------------------------------------------------
    def price_pass(self) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Compare average prices where quantities agree; returns (con stats, legs adjusted)."""
        stats = self._stats_now()
        cmp = stats.join(
            self.info.filter(pl.col("broker").is_not_null()).select(
                "con_id", "broker", "broker_avg", "multiplier"
            ),
            on="con_id",
            how="inner",
        ).with_columns(
            book_cost=pl.col("avg_price")
            + _sign(pl.col("quantity")).cast(pl.Float64)
            * pl.col("open_commission")
            / (pl.col("open_qty") * pl.col("multiplier"))
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
            .join(self.info.select("con_id", "nfills"), on="con_id", how="left")
        )
        legs = self._with_leg_avg(legs)
        legs = legs.with_columns(
            break_id=_ids(legs, "pm", ["leg_id", "con_id", "qty", "broker_avg", "nfills"]),
            leg_avg=pl.coalesce("leg_avg", "con_avg", pl.lit(0.0)),
        )
        common = {
            "time": self.now,
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
        unnamed = pl.when(pl.col("leg_id").str.starts_with(_NEW_LEG)).then(None)
        nf = self._new_fills().with_columns(leg_id=unnamed.otherwise(pl.col("leg_id")))
        breaks = (
            pl.concat(self.break_parts) if self.break_parts else pl.DataFrame(schema=_NB_SCHEMA)
        )
        breaks = breaks.with_columns(leg_id=unnamed.otherwise(pl.col("leg_id")))
        new_strats = pl.DataFrame(schema=_schema("strategies"))
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
            breaks = breaks.with_columns(pl.col("strategy_id").replace(old, new))
            underlying = groups.select(pl.col("strategy_id").replace(old, new), underlying="symbol")
            new_strats = _conform(
                underlying.with_columns(
                    account=pl.lit(self.account or ""),
                    strategy_type=pl.lit(StrategyType.EXTERNAL.value),
                    origin=pl.lit(Origin.EXTERNAL.value),
                    managed=pl.lit(False),
                    status=pl.lit(StrategyStatus.OPEN.value),
                    quantity=pl.lit(0),
                    created_at=self.now,
                    note=pl.lit("adopted from the broker by reconciliation; tag it to trade it"),
                    updated_at=self.now,
                ),
                _schema("strategies"),
            )
        self.break_parts = [breaks] if breaks.height else []
        # legs by (strategy, contract); a strategy holds a contract in at most one leg (only
        # fills without a leg look theirs up, among their strategies' legs)
        unnamed_sids = nf.filter(pl.col("leg_id").is_null()).get_column("strategy_id")
        if unnamed_sids.len():
            by_sc = self._legs_by_contract().filter(
                pl.col("strategy_id").is_in(unnamed_sids.implode())
            )
            if by_sc.height:
                nf = (
                    nf.join(by_sc, on=["strategy_id", "con_id"], how="left")
                    .with_columns(leg_id=pl.coalesce("leg_id", "_leg"))
                    .drop("_leg")
                )
        missing = nf.filter(pl.col("leg_id").is_null())
        new_legs = pl.DataFrame(schema=_schema("legs"))
        if missing.height:
            # the highest leg index of the strategies that get a leg (new ones have none)
            sids = missing.get_column("strategy_id").implode()
            max_index = (
                self.legs.filter(pl.col("strategy_id").is_in(sids))
                .group_by("strategy_id")
                .agg(_max=pl.col("leg_index").max())
            )
            specs = (
                missing.group_by("strategy_id", "con_id", maintain_order=True)
                .agg(
                    *[pl.col(c).first() for c in CONTRACT_COLUMNS if c != "con_id"],
                    _q=pl.col("quantity").sum(),
                    _q1=pl.col("quantity").first(),
                )
                .sort("strategy_id", "con_id")
            )
            if max_index.height:
                specs = specs.join(max_index, on="strategy_id", how="left")
            else:
                specs = specs.with_columns(_max=pl.lit(None, dtype=max_index.schema["_max"]))
            specs = specs.with_columns(
                leg_index=pl.col("_max").fill_null(-1)
                + pl.col("con_id").rank("ordinal").over("strategy_id").cast(pl.Int64),
                ratio=pl.when(pl.col("_q") != 0)
                .then(_sign(pl.col("_q")))
                .otherwise(_sign(pl.col("_q1"))),
            ).with_columns(
                leg_id=pl.col("strategy_id") + pl.lit(":L") + pl.col("leg_index").cast(pl.String)
            )
            new_legs = _conform(
                specs.with_columns(
                    pl.col("exchange").fill_null("SMART"),
                    pl.col("currency").fill_null("USD"),
                    pl.col("local_symbol").fill_null(""),
                    pl.col("trading_class").fill_null(""),
                    status=pl.lit(LegStatus.PENDING.value),
                    updated_at=self.now,
                ),
                _schema("legs"),
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
        now = self.now
        # only the strategies the fills touched, with all of their legs
        sids = nf.get_column("strategy_id").unique()
        all_legs = self.legs_q.filter(pl.col("strategy_id").is_in(sids.implode()))
        if new_legs.height:
            new_legs_q = new_legs.with_columns(qty0=pl.lit(None, dtype=pl.Int64))
            all_legs = pl.concat([all_legs, new_legs_q])
        legs = all_legs.join(self._leg_changes(nf), on="leg_id", how="left")
        touched = pl.col("_d").is_not_null()  # a sum: never null for a leg the fills touched
        flat = (pl.col("qty0").fill_null(0) + pl.col("_d")) == 0
        legs = legs.with_columns(
            status=pl.when(touched)
            .then(
                pl.when(~flat)
                .then(pl.lit(LegStatus.OPEN.value))
                .otherwise(pl.lit(LegStatus.CLOSED.value))
            )
            .otherwise(pl.col("status")),
            opened_at=pl.when(touched)
            .then(pl.coalesce("opened_at", "_first"))
            .otherwise(pl.col("opened_at")),
            closed_at=pl.when(touched)
            .then(pl.when(flat).then(pl.coalesce("closed_at", now)))
            .otherwise(pl.col("closed_at")),
            close_reason=pl.when(touched)
            .then(pl.when(flat).then(pl.coalesce("_reason", pl.lit(CloseReason.CLOSED.value))))
            .otherwise(pl.col("close_reason")),
            updated_at=pl.when(touched).then(now).otherwise(pl.col("updated_at")),
        )
        leg_rows = _conform(legs.filter(touched), _schema("legs"))
        # strategies: from all of their legs (touched legs with their new state)
        state = (
            legs.select("strategy_id", "status", "opened_at", "close_reason")
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
        # every strategy in `state` is one the fills touched (legs of others are not in it)
        strategies = self.strategies
        if new_strats.height:
            strategies = pl.concat(
                [
                    strategies.join(new_strats.select("strategy_id"), on="strategy_id", how="anti"),
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
        return leg_rows, _conform(rows, _schema("strategies"))

    @staticmethod
    def _leg_changes(nf: pl.DataFrame) -> pl.DataFrame:
        """Per leg the fills touch: what they add (_d), when it first traded (_first) and the
        close reason of its last fill in time order (_reason). Only legs whose fills give
        different reasons need that order, so only their fills are sorted."""
        reason = pl.col("close_reason").drop_nulls()
        last = nf.group_by("leg_id").agg(
            _d=pl.col("quantity").sum(),
            _first=pl.col("time").min(),
            _reason=reason.last(),
            _reasons=reason.n_unique(),
        )
        multi = last.filter(pl.col("_reasons") > 1).get_column("leg_id")
        if multi.len():
            ordered = (
                nf.filter(pl.col("leg_id").is_in(multi.implode(), nulls_equal=True))
                .select("leg_id", "time", "exec_id", "close_reason")
                .sort("time", "exec_id")
                .group_by("leg_id")
                .agg(_r=reason.last())
            )
            last = last.join(ordered, on="leg_id", how="left", nulls_equal=True).with_columns(
                _reason=pl.coalesce("_r", "_reason")
            )
        return last.select("leg_id", "_d", "_first", "_reason")
