"""`v6 status` and `v6 breaker ...`: what V6 holds, how it is doing, whether it may trade.

Everything here reads V6's own Delta tables (the truth for positions and the breaker)
and, when a server is configured, Prefect's API for the last run of each flow. Each part
degrades on its own: an empty book says so, a missing server says so, and the rest of
the report still prints. A book that cannot be read (a lost, rolled-back or broken table)
ends the report with one line naming the table and the fix, never "no positions".
"""

from __future__ import annotations

import asyncio
import getpass
import os
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import polars as pl
from polars.exceptions import PanicException
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from core.book.ledger import Book
from core.config import Settings
from core.identity import os_identity
from core.risk.breaker import (
    Breaker,
    BreakerState,
    BreakerStatus,
    BreakerUnavailable,
    IllegalTransition,
    Transition,
)
from core.store import DeltaStore, StoreError
from deployments.catalog import CATALOG
from deployments.errors import UserError

# A broken table surfaces from deltalake/polars as many types (OSError, DeltaError,
# ComputeError, a Rust panic, which is a BaseException): one line for each, not a traceback.
STORE_READ_ERRORS: tuple[type[BaseException], ...] = (Exception, PanicException)

_STATE_STYLE = {
    BreakerState.CLOSED: "green",
    BreakerState.OPEN: "bold red",
    BreakerState.HALF_OPEN: "yellow",
    BreakerState.HALTED: "bold white on red",
}


def default_actor() -> str:
    """Who is at the keyboard: $USER, else the login name."""
    user = os.environ.get("USER") or os.environ.get("USERNAME")
    if user:
        return user
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


# -- breaker --------------------------------------------------------------------------------


def _breaker(settings: Settings, store: DeltaStore | None = None) -> Breaker:
    return Breaker(store or DeltaStore.from_settings(settings), settings.breaker)


def breaker_status(settings: Settings, store: DeltaStore | None = None) -> BreakerStatus:
    try:
        return _breaker(settings, store).status()
    except BreakerUnavailable as exc:
        raise UserError(f"breaker state unavailable: {exc}") from None


def breaker_change(
    settings: Settings, action: str, reason: str | None, actor: str | None
) -> Transition:
    """Manual trip/reset through the breaker core: audited with reason and actor."""
    if reason is None or not reason.strip():
        raise UserError(
            f"breaker {action}: --reason is required (it is audited); "
            f'e.g. v6 breaker {action} --reason "checked the positions by hand"'
        )
    b = _breaker(settings)
    try:
        run_by = f"cli {os_identity()}"
        return (
            b.trip(reason, actor or default_actor(), run_by=run_by)
            if action == "trip"
            else b.reset(reason, actor or default_actor(), run_by=run_by)
        )
    except (BreakerUnavailable, IllegalTransition) as exc:
        raise UserError(f"breaker {action} not recorded: {exc}") from None
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _fmt_ts(ts: datetime | None, tz: ZoneInfo) -> str:
    return "-" if ts is None else ts.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z")


def breaker_line(status: BreakerStatus, tz: ZoneInfo) -> str:
    style = _STATE_STYLE[status.state]
    state = f"[{style}]{status.state.value}[/{style}]"
    if not status.transitions and status.state is BreakerState.CLOSED:
        return f"{state} (never tripped)"
    text = f"{state} since {_fmt_ts(status.since, tz)}"
    text += f" — {escape(status.reason)}"
    if status.actor:
        text += f" (by {escape(status.actor)})"
    if status.cooldown_until is not None:
        text += f"; probe allowed after {_fmt_ts(status.cooldown_until, tz)}"
    if status.state is BreakerState.HALTED:
        halt = status.transitions[-1] if status.transitions else None
        exits = halt is not None and halt.halt_allows_exits
        text += "; exits still run" if exits else "; nothing trades"
        text += "; only `v6 breaker reset` re-opens trading"
    elif status.state is not BreakerState.CLOSED:
        text += "; exits still run (reducing mode)" if status.reducing_mode else "; nothing trades"
    return text


def transitions_table(status: BreakerStatus, tz: ZoneInfo) -> Table:
    table = Table(title="breaker transitions (latest last)")
    for col in ("#", "at", "from", "to", "trigger", "actor (run by)", "reason"):
        table.add_column(col, overflow="fold")
    for t in status.transitions:
        table.add_row(
            str(t.seq),
            _fmt_ts(t.ts, tz),
            t.from_state.value,
            t.to_state.value,
            t.trigger,
            f"{t.actor} ({t.run_by})" if t.run_by else t.actor,
            t.reason,
        )
    return table


def print_breaker_status(settings: Settings, console: Console) -> BreakerStatus:
    tz = ZoneInfo(settings.schedules.timezone)
    status = breaker_status(settings)
    console.print(f"breaker: {breaker_line(status, tz)}")
    if status.transitions:
        console.print(transitions_table(status, tz))
    else:
        console.print("no transitions recorded: the breaker has never tripped")
    return status


# -- positions and P&L ----------------------------------------------------------------------


def open_positions(store: DeltaStore) -> pl.DataFrame:
    """Open legs with their quantity derived from fills (empty if the book has none)."""
    legs = Book(store).leg_positions(open_only=True)
    if legs.is_empty():
        return legs
    return legs.filter(pl.col("quantity") != 0)


def strategies_on_record(store: DeltaStore) -> int:
    """How many strategies the book has ever held (0 before the first entry)."""
    if not store.exists("strategies"):
        return 0
    return store.read("strategies", columns=["strategy_id"]).collect().height


def positions_table(legs: pl.DataFrame) -> Table:
    n = legs.get_column("strategy_id").n_unique()
    table = Table(title=f"open positions ({n} {'strategy' if n == 1 else 'strategies'})")
    cols = ("strategy", "type", "underlying", "contract", "qty", "avg price", "managed")
    for col in cols:
        table.add_column(col, justify="right" if col in ("qty", "avg price") else "left")
    view = legs.select(
        "strategy_id",
        "strategy_type",
        "underlying",
        pl.concat_str(
            pl.col("symbol"),
            pl.col("expiry").dt.to_string("%Y-%m-%d").fill_null(""),
            pl.col("strike").round(2).cast(pl.String).fill_null(""),
            pl.col("right").fill_null(""),
            separator=" ",
        )
        .str.strip_chars()
        .alias("contract"),
        "quantity",
        "avg_price",
        "managed",
    )
    for row in view.iter_rows():
        sid, stype, und, contract, qty, avg, managed = row
        table.add_row(
            str(sid),
            str(stype or "-"),
            str(und or "-"),
            str(contract),
            str(qty),
            "-" if avg is None else f"{avg:,.2f}",
            "yes" if managed else "NO (external)",
        )
    return table


@dataclass(frozen=True)
class PnL:
    realised_today: float | None
    realised_30d: float | None
    realised_total: float | None
    trades_total: int
    daily_pnl: float | None  # last trading cycle's daily P&L from the broker
    net_liq: float | None
    daily_as_of: datetime | None
    as_of_date: date | None = None  # the market date "today" means: the latest close's


def pnl_summary(store: DeltaStore, now: datetime, tz: ZoneInfo) -> PnL:
    """Realised P&L from closed trades; today's P&L as the last trading cycle saw it.

    "Today" and "the last 30 days" follow the data, not the wall clock: they end at the
    latest close on record (a simulated book lives on its own dates; the line names the
    date), and at `now` only before the first close."""
    closed_local = pl.col("closed_at").dt.convert_time_zone(str(tz)).dt.date()
    trades = store.read("trades", columns=["closed_at", "pnl"])
    latest = trades.select(pl.col("closed_at").max()).collect().item()
    anchor = latest if isinstance(latest, datetime) else now
    local_today = anchor.astimezone(tz).date()
    agg = trades.select(
        today=pl.col("pnl").filter(closed_local == local_today).sum(),
        d30=pl.col("pnl").filter(pl.col("closed_at") > anchor - timedelta(days=30)).sum(),
        total=pl.col("pnl").sum(),
        n=pl.len(),
    ).collect()
    n = int(agg.item(0, "n"))
    health = (
        store.read("cycle_health", columns=["ts", "daily_pnl", "net_liq"])
        .filter(pl.col("daily_pnl").is_not_null())
        .sort("ts")
        .tail(1)
        .collect()
    )
    daily = health.row(0, named=True) if health.height else None
    return PnL(
        realised_today=float(agg.item(0, "today")) if n else None,
        realised_30d=float(agg.item(0, "d30")) if n else None,
        realised_total=float(agg.item(0, "total")) if n else None,
        trades_total=n,
        daily_pnl=daily["daily_pnl"] if daily else None,
        net_liq=daily["net_liq"] if daily else None,
        daily_as_of=daily["ts"] if daily else None,
        as_of_date=local_today if n else None,
    )


def _usd(x: float | None) -> str:
    return "-" if x is None else f"{x:+,.2f} USD"


def pnl_lines(pnl: PnL, tz: ZoneInfo) -> list[str]:
    lines: list[str] = []
    if pnl.daily_pnl is not None:
        liq = f" of net liquidation {pnl.net_liq:,.2f} USD" if pnl.net_liq else ""
        lines.append(
            f"daily, as the last trading cycle saw it ({_fmt_ts(pnl.daily_as_of, tz)}): "
            f"{_usd(pnl.daily_pnl)}{liq}"
        )
    if pnl.trades_total:
        lines.append(
            f"realised (closed trades): on {pnl.as_of_date} (the latest close) "
            f"{_usd(pnl.realised_today)}, 30 days to then {_usd(pnl.realised_30d)}, "
            f"all {pnl.trades_total} trades {_usd(pnl.realised_total)}"
        )
    return lines or ["no P&L recorded yet (no closed trades, no trading cycle)"]


def print_book(store: DeltaStore, console: Console, now: datetime, tz: ZoneInfo) -> None:
    legs = open_positions(store)
    if not legs.is_empty():
        console.print(positions_table(legs))
    elif n := strategies_on_record(store):
        noun = "strategy" if n == 1 else "strategies"
        console.print(f"positions: none open ({n} {noun} on record, all closed or unfilled)")
    else:
        console.print("positions: no positions recorded yet")
    for line in pnl_lines(pnl_summary(store, now, tz), tz):
        console.print(f"P&L: {line}")


# -- flow runs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FlowRunInfo:
    flow: str
    last_state: str | None
    last_state_type: str | None
    last_at: datetime | None
    duration_s: float | None
    message: str
    next_at: datetime | None


async def flow_runs(names: list[str], home: str | None = None) -> list[FlowRunInfo]:
    """Last run (anything past Scheduled/Pending) and next scheduled run of each flow;
    with `home` (a `home:v6-<id>` tag), only this installation's runs."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    not_started = [StateType.SCHEDULED, StateType.PENDING]
    mine = FlowRunFilterTags(all_=[home]) if home else None
    out: list[FlowRunInfo] = []
    async with get_client() as client:
        for name in names:
            by_flow = FlowFilter(name=FlowFilterName(any_=[name]))
            last = await client.read_flow_runs(
                flow_filter=by_flow,
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(not_any_=not_started)),
                    tags=mine,
                ),
                sort=FlowRunSort.EXPECTED_START_TIME_DESC,
                limit=1,
            )
            upcoming = await client.read_flow_runs(
                flow_filter=by_flow,
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(
                        type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])
                    ),
                    tags=mine,
                ),
                sort=FlowRunSort.EXPECTED_START_TIME_ASC,
                limit=1,
            )
            run = last[0] if last else None
            state = run.state if run else None
            out.append(
                FlowRunInfo(
                    flow=name,
                    last_state=state.name if state else None,
                    last_state_type=state.type.value if state else None,
                    last_at=(run.start_time or run.expected_start_time) if run else None,
                    duration_s=run.total_run_time.total_seconds() if run else None,
                    message=(state.message or "") if state else "",
                    next_at=upcoming[0].expected_start_time if upcoming else None,
                )
            )
    return out


_RUN_STYLE = {"COMPLETED": "green", "FAILED": "red", "CRASHED": "red", "CANCELLED": "yellow"}


def flow_runs_table(infos: list[FlowRunInfo], tz: ZoneInfo) -> Table:
    table = Table(title="flows (last run / next scheduled)")
    for col in ("flow", "last run", "state", "took", "message", "next"):
        table.add_column(col, overflow="fold")
    for i in infos:
        style = _RUN_STYLE.get(i.last_state_type or "", "white")
        table.add_row(
            i.flow,
            _fmt_ts(i.last_at, tz) if i.last_at else "never",
            f"[{style}]{i.last_state}[/{style}]" if i.last_state else "-",
            "-" if i.duration_s is None else f"{i.duration_s:.1f}s",
            i.message[:120],
            _fmt_ts(i.next_at, tz) if i.next_at else "-",
        )
    return table


# -- the report ----------------------------------------------------------------------------


def print_status(settings: Settings, console: Console, now: datetime | None = None) -> None:
    from deployments.serve import configured_api_url, server_problem

    tz = ZoneInfo(settings.schedules.timezone)
    now = now or datetime.now(UTC)
    store = DeltaStore.from_settings(settings)
    console.rule(f"[bold]V6 status[/bold] {_fmt_ts(now, tz)}")

    try:
        console.print(f"breaker: {breaker_line(breaker_status(settings, store), tz)}")
    except UserError as exc:
        console.print(f"breaker: [bold red]UNAVAILABLE[/bold red] — {exc}; nothing trades")

    try:
        print_book(store, console, now, tz)
    except StoreError:
        raise  # already one line naming the table and the fix
    except STORE_READ_ERRORS as exc:
        text = (str(exc).strip().splitlines() or [""])[0]
        raise UserError(
            f"cannot read the book ({type(exc).__name__}: {text}); `v6 tables` shows which "
            "table is broken"
        ) from None

    url = configured_api_url()
    if url is None:
        console.print(
            "flows: Prefect server not configured (PREFECT_API_URL is unset); "
            "`prefect server start` and `export PREFECT_API_URL=http://127.0.0.1:4200/api`"
        )
        return
    problem = server_problem(url)
    if problem is not None:
        console.print(f"flows: Prefect server at {url} is unreachable ({problem})")
        return
    from deployments.installation import home_tag

    tag = home_tag(settings)
    infos = asyncio.run(flow_runs([e.name for e in CATALOG], tag))
    console.print(flow_runs_table(infos, tz))
    console.print(f"flows: only this home's runs (tag {tag}) on {url}")


__all__ = [
    "FlowRunInfo",
    "PnL",
    "breaker_change",
    "breaker_line",
    "breaker_status",
    "default_actor",
    "flow_runs",
    "open_positions",
    "pnl_summary",
    "print_breaker_status",
    "print_status",
]
