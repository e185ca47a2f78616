"""The steps of a trading cycle, each at an I/O boundary, each returning what it learnt.

Read-only or idempotent (safe to retry): `reconcile` (broker reads, then idempotent book
merges), `market_data`, `exit_rules` (decisions insert-only on a fixed evaluation time),
`entry_candidates` (chain snapshots; rejections insert-only per run), `summarise`.
Order-placing (never retried blindly; the executor's orderRef idempotency covers a crash):
`execute_exits`, `execute_entries`.

A step raises when it cannot do its job (the cycle then fails and stops); per-order
outcomes (rejected, not filled, interrupted) are results, counted by the breaker.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

import polars as pl

from core.analysis.futures import latest_signal
from core.analysis.weights import read_strategy_weights
from core.book.against_broker import reconcile_against_broker
from core.calendar import MarketCalendar
from core.cycle.context import CycleContext
from core.cycle.market import MarketView, load_market
from core.cycle.report import (
    CycleReport,
    EntriesStep,
    EntryStep,
    ExitOrder,
    ExitsStep,
    ReconcileStep,
    RulesStep,
    SummaryStep,
)
from core.cycle.snapshot import entry_values, strategy_snapshot
from core.domain import AccountSummary
from core.domain.strategies import IntentPurpose, Origin, StrategyStatus, StrategyType
from core.domain.timezones import MARKET_TZ
from core.execution.intents import sent_today
from core.execution.results import ExecStatus, ExecutionResult
from core.marketdata.iv_history import record_atm_iv
from core.risk.limits import record_rejections
from core.rules.engine import RulesEngine
from core.rules.vocab import ExitAction, Urgency
from core.strategy.candidates import Candidate, EntrySignals, build_candidates
from core.strategy.chain import snapshot_chain
from core.strategy.pipeline import held_structures, plan_entries, risk_book

log = logging.getLogger(f"v6.{__name__}")

BASELINE_TABLE = "account_daily"
_ROLLABLE = frozenset(
    t.value
    for t in (StrategyType.IRON_CONDOR, StrategyType.BULL_PUT_SPREAD, StrategyType.BEAR_CALL_SPREAD)
)


# -- baseline --------------------------------------------------------------------------------


def start_of_day(ctx: CycleContext, account: AccountSummary, at: datetime) -> float:
    """Today's start-of-day net liquidation: written once (insert-only) by the first cycle
    of the market date, read back by every later one."""
    day = at.astimezone(MARKET_TZ).date()
    acct = account.account or ""
    if math.isfinite(account.net_liquidation) and account.net_liquidation > 0:
        row = pl.DataFrame(
            {
                "date": [day],
                "account": [acct],
                "start_net_liq": [float(account.net_liquidation)],
                "start_ts": [at],
                "run_id": [ctx.run_id],
            },
            schema=ctx.store.spec(BASELINE_TABLE).schema,
        )
        ctx.store.merge(BASELINE_TABLE, row, update=False)
    got = ctx.store.read(
        BASELINE_TABLE,
        where=(pl.col("date") == day) & (pl.col("account") == acct),
        columns=["start_net_liq"],
    ).collect()
    return float(got.item(0, 0)) if got.height else math.nan


# -- steps ------------------------------------------------------------------------------------


async def reconcile_step(ctx: CycleContext) -> ReconcileStep:
    """Connect if needed; read the account; make the book agree with the broker (the same
    core composition as the position_reconciliation flow); read today's baseline."""
    await ctx.broker.ensure_connected()
    broker_now = await ctx.broker.current_time()
    skew = (broker_now - ctx.clock.now()).total_seconds()  # reported; fills match by identity
    account = await ctx.broker.account_summary()
    ctx.net_liquidation = account.net_liquidation  # the executor's max-loss caps scale with it
    rec = await reconcile_against_broker(
        ctx.book(),
        ctx.broker,
        ctx.settings,
        ctx.run_id,
        account=account.account or None,
        summary=account,
    )
    ctx.account = rec.account or ""
    baseline = start_of_day(ctx, account, rec.result.as_of)
    pending = rec.before.strategies.filter(
        (pl.col("status") == StrategyStatus.PENDING.value) & (pl.col("origin") == Origin.V6.value)
    ).height
    return ReconcileStep(rec.result, account, baseline, pending, clock_skew_s=skew)


async def market_data(ctx: CycleContext) -> MarketView:
    """Quotes and greeks of every held leg (through the slot registry), and the context."""
    await ctx.broker.ensure_connected()
    view = await load_market(ctx.broker, ctx.store, ctx.settings, ctx.clock)
    report = ctx.broker.registry.report()
    slots = {
        "budget": ctx.broker.registry.budget,
        "cap": ctx.broker.registry.cap,
        "quoted": view.quoted,
        "account_in_use": ctx.broker.registry.pool.in_use(),
    }
    if report is not None:
        slots |= report.as_dict()
    return replace(view, slots=slots)


async def exit_rules(ctx: CycleContext, view: MarketView) -> RulesStep:
    """Decide every held strategy (decisions and rule state are written by the engine)."""
    snap = strategy_snapshot(view.legs, view.context, view.as_of)
    if snap.is_empty():
        return RulesStep(None, snap)
    engine = RulesEngine(ctx.store, ctx.settings.rules)
    run = engine.run(snap, view.as_of, evaluation_id=ctx.run_id)
    return RulesStep(run, snap)


async def execute_exits(ctx: CycleContext, rules: RulesStep, view: MarketView) -> ExitsStep:
    """Settle interrupted entries, then work every CLOSE/REDUCE/ROLL, most urgent first.

    REDUCE closes half the units (at least one). ROLL moves the strategy to the same
    structure near `roll_target_dte` in one combo; without such a candidate it closes.
    A REDUCE that fills nothing re-arms the partial take-profit.
    """
    ex = ctx.executor()
    resumed = await ex.resume_pending()
    if rules.run is None:
        return ExitsStep(tuple(resumed))
    units = dict(rules.snapshot.select("strategy_id", "units").iter_rows())
    book_types = dict(rules.snapshot.select("strategy_id", "book_type").iter_rows())
    engine = RulesEngine(ctx.store, ctx.settings.rules)
    chains: dict[str, pl.DataFrame] = {}
    orders: list[ExitOrder] = []
    # a ladder from a 15-minute-old mid only spends its rungs: on delayed quotes an exit
    # goes straight at natural (still bounded by it), unless delayed data is trusted
    at_natural = view.delayed > 0 and not ctx.settings.broker.allow_entries_on_delayed_data
    for row in rules.run.actionable().iter_rows(named=True):
        sid, action = row["strategy_id"], row["action"]
        urgent = row["urgency"] == Urgency.IMMEDIATE.value or at_natural
        reason = row["reason"] or ""
        try:
            if action == ExitAction.REDUCE.value:
                n = max(1, int(units.get(sid) or 0) // 2)
                res = await ex.execute_exit(
                    sid, quantity=n, purpose=IntentPurpose.REDUCE, urgent=urgent
                )
                if res.filled == 0:
                    engine.clear_reduced([sid], ctx.clock.now())
            elif action == ExitAction.ROLL.value:
                res = await _roll(ctx, sid, str(book_types.get(sid)), row["underlying"],
                                  urgent, chains)  # fmt: skip
            else:
                res = await ex.execute_exit(sid, purpose=IntentPurpose.CLOSE, urgent=urgent)
            orders.append(ExitOrder(sid, action, row["urgency"], reason, res))
        except Exception as exc:  # one strategy's failure must not stop the others' exits
            log.exception("exit of %s (%s) failed", sid, action)
            orders.append(
                ExitOrder(sid, action, row["urgency"], reason, None, f"{type(exc).__name__}: {exc}")
            )
    return ExitsStep(tuple(resumed), tuple(orders))


async def _roll(
    ctx: CycleContext,
    sid: str,
    book_type: str,
    underlying: str,
    urgent: bool,
    chains: dict[str, pl.DataFrame],
) -> ExecutionResult:
    ex = ctx.executor()
    target = None
    if book_type in _ROLLABLE:
        target = await roll_target(ctx, underlying, book_type, chains)
    if target is None:
        log.info("%s: no %s roll target on %s; closing instead", sid, book_type, underlying)
        return await ex.execute_exit(sid, purpose=IntentPurpose.CLOSE, urgent=urgent)
    return await ex.execute_roll(sid, target, max_debit=None)


async def roll_target(
    ctx: CycleContext, underlying: str, structure: str, chains: dict[str, pl.DataFrame]
) -> Candidate | None:
    """The best `structure` candidate near `rules.roll_target_dte` (no score floor: the
    rules already chose to roll), from one chain snapshot per underlying per cycle."""
    st = ctx.settings.strategies
    target = ctx.settings.rules.roll_target_dte
    roll_st = st.model_copy(
        update={
            "target_dte": target,
            "dte_min": min(st.dte_min, target),
            "dte_max": max(st.dte_max, target),
            "enabled": [structure],
            "min_score": 0.0,
        }
    )
    settings = ctx.settings.model_copy(update={"strategies": roll_st})
    now = ctx.clock.now()
    if underlying not in chains:
        chains[underlying] = await snapshot_chain(ctx.broker, underlying, roll_st, now)
    chain = chains[underlying]
    if chain.is_empty():
        return None
    eligible = [
        c
        for c in build_candidates(chain, now, settings).eligible
        if c.strategy_type == structure and c.underlying == underlying
    ]
    return eligible[0] if eligible else None


async def entry_candidates(ctx: CycleContext, view: MarketView, rec: ReconcileStep) -> EntryStep:
    """Chain snapshots -> candidates -> portfolio limits; rejections are recorded."""
    st = ctx.settings.strategies
    if not st.enabled or st.entries_per_underlying == 0:
        return EntryStep(None, 0, "no structure enabled or entries_per_underlying = 0")
    now = ctx.clock.now()
    chains = [
        await snapshot_chain(ctx.broker, u, st, now) for u in ctx.settings.universe.underlyings
    ]
    book = ctx.book()
    strategies = book.strategies()
    deltas = _chain_deltas(chains) | view.deltas()
    rbook = risk_book(book.leg_positions(open_only=False), strategies, deltas, now)
    held = held_structures(strategies, book.legs())
    day = sent_today(ctx.store, now)
    unds = ctx.settings.universe.underlyings
    signals = EntrySignals(
        regimes=view.regimes(),
        iv_rank={u: view.iv_ranks().get(u) for u in unds},
        lead={u: latest_signal(ctx.store, u, now=now) for u in unds},
    )
    weights = read_strategy_weights(ctx.store, st.enabled)
    plan = plan_entries(
        chains,
        rbook,
        rec.account,
        ctx.settings,
        signals,
        weights,
        now,
        bars=view.bars,
        day_contracts=day.contracts,
        day_notional=day.notional,
        day_max_loss=day.max_loss,
        held=held,
    )
    record_rejections(ctx.store, plan.rejections, run_id=ctx.run_id, now=now)
    skew = plan.candidates.skew
    if skew.height:  # today's ATM IV before the broker's daily IV bar is final
        record_atm_iv(
            ctx.store,
            skew.select("underlying", "atm_iv", "T"),
            now=now,
            calendar=MarketCalendar(ctx.settings.schedules),
        )
    return EntryStep(plan, sum(c.height for c in chains))


def _chain_deltas(chains: Sequence[pl.DataFrame]) -> dict[int, float]:
    frames = [c.select("con_id", "delta") for c in chains if c.height]
    if not frames:
        return {}
    return dict(pl.concat(frames).unique("con_id").iter_rows())


async def execute_entries(ctx: CycleContext, step: EntryStep, view: MarketView) -> EntriesStep:
    """Open each accepted candidate as one combo; record entry IV/VIX for the rules."""
    if step.plan is None or not step.plan.accepted:
        return EntriesStep()
    ex = ctx.executor()
    results: list[ExecutionResult] = []
    entered: list[dict[str, object]] = []
    for cand in step.plan.accepted:
        res = await ex.execute_entry(cand)
        results.append(res)
        if res.filled > 0:
            entered.append(entry_values(cand, view.vix) | {"strategy_id": res.strategy_id})
        if res.status is ExecStatus.INTERRUPTED:
            log.warning(
                "entry %s interrupted: %s; no further entries", cand.describe(), res.message
            )
            break
    if entered:
        frame = pl.DataFrame(
            entered,
            schema={"strategy_id": pl.String, "entry_iv": pl.Float64, "entry_vix": pl.Float64},
        )
        RulesEngine(ctx.store, ctx.settings.rules).record_entries(frame, ctx.clock.now())
    return EntriesStep(tuple(results))


async def summarise(ctx: CycleContext, report: CycleReport) -> SummaryStep:
    """The account after the cycle's orders, and the positions with their marks."""
    account: AccountSummary | None = None
    if ctx.broker.is_connected:
        account = await ctx.broker.account_summary()
    net_liq = account.net_liquidation if account is not None else math.nan
    start = report.reconcile.start_net_liq if report.reconcile is not None else math.nan
    if not math.isfinite(start) and account is not None:
        start = start_of_day(ctx, account, ctx.clock.now())
    positions = _positions(ctx, report.market)
    return SummaryStep(account, net_liq, start, positions, ctx.clock.now())


def _positions(ctx: CycleContext, view: MarketView | None) -> pl.DataFrame:
    """Open strategies' legs after the cycle, marked with this cycle's quotes."""
    book = ctx.book()
    legs = book.leg_positions(open_only=True).filter(pl.col("quantity") != 0)
    strategies = book.strategies(
        status=[StrategyStatus.OPEN.value, StrategyStatus.PENDING.value]
    ).select("strategy_id", "status")
    marks = (
        view.legs.select("con_id", "mid", "delta").unique("con_id")
        if view is not None and view.legs.height
        else pl.DataFrame(schema={"con_id": pl.Int64, "mid": pl.Float64, "delta": pl.Float64})
    )
    return (
        legs.join(strategies, on="strategy_id", how="left")
        .join(marks, on="con_id", how="left")
        .select(
            "strategy_id",
            "strategy_type",
            "underlying",
            "con_id",
            "expiry",
            "strike",
            "right",
            "quantity",
            "avg_price",
            "mid",
            "delta",
            (
                (pl.col("mid") - pl.col("avg_price")) * pl.col("quantity") * pl.col("multiplier")
            ).alias("unrealized_pnl"),
        )
    )


__all__ = [
    "entry_candidates",
    "execute_entries",
    "execute_exits",
    "exit_rules",
    "market_data",
    "reconcile_step",
    "roll_target",
    "start_of_day",
    "summarise",
]
