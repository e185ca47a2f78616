"""`v6 positions`, `v6 trades`, `v6 strategy ID`: the book at a glance, as rich tables that
fit 100 columns. Read from V6's own tables only (no broker connection): the marks, P&L %,
greeks and rule decisions are those of the last trading cycle, and say when that was."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import polars as pl
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from core.config import Settings
from core.store import DeltaStore
from core.views import UnknownStrategy, closed_trades, open_legs, open_strategies, strategy_life
from deployments.errors import UserError

WIDTH = 100


def _num(x: object, fmt: str = "{:,.2f}") -> str:
    if x is None or (isinstance(x, float) and x != x):
        return "-"
    return fmt.format(x)


def _ts(x: object, tz: ZoneInfo, fmt: str = "%m-%d %H:%M") -> str:
    return x.astimezone(tz).strftime(fmt) if isinstance(x, datetime) else "-"


def _table(title: str, cols: list[tuple[str, str]]) -> Table:
    """Light borders (no vertical rules) to fit 100 columns; ids never wrap, text folds."""
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for name, justify in cols:
        whole = name in ("strategy", "type", "ref", "closed", "sent", "time", "at")
        whole = whole or justify == "right"  # ids, times and numbers never break
        table.add_column(
            name,
            justify=justify,  # type: ignore[arg-type]
            overflow="ellipsis" if whole else "fold",
            no_wrap=whole,
        )
    return table


def _contract(legs: pl.DataFrame) -> pl.Series:
    return legs.select(
        pl.concat_str(
            pl.col("expiry").dt.to_string("%y-%m-%d").fill_null(""),
            pl.col("strike").round(1).cast(pl.String).fill_null(""),
            pl.col("right").fill_null(""),
            separator=" ",
        ).str.strip_chars()
    ).to_series()


def print_positions(settings: Settings, console: Console) -> int:
    """Open strategies, the last cycle's verdict on each, and their legs; returns how many."""
    tz = ZoneInfo(settings.schedules.timezone)
    store = DeltaStore.from_settings(settings)
    strategies = open_strategies(store)
    if strategies.is_empty():
        console.print("no open strategies")
        return 0
    money = _table(
        f"open strategies ({strategies.height}); marks and greeks as of the last cycle",
        [("strategy", "left"), ("qty", "right"), ("credit", "right"), ("mark", "right"),
         ("P&L", "right"), ("%", "right"), ("DTE", "right"), ("Δ", "right"), ("Γ", "right")],
    )  # fmt: skip
    rules = _table(
        "what the rules said last cycle (regime, its profit target, the deciding rule)",
        [("strategy", "left"), ("type", "left"), ("at", "left"), ("regime", "left"),
         ("target", "right"), ("action", "left"), ("rule / why", "left")],
    )  # fmt: skip
    for r in strategies.iter_rows(named=True):
        sid = str(r["strategy_id"])
        pnl = r["unrealised_usd"]
        style = "" if pnl is None else ("green" if pnl >= 0 else "red")
        money.add_row(
            sid, str(r["units"]),
            _num(r["credit_usd"]), _num(r["mark_usd"]),
            f"[{style}]{_num(pnl, '{:+,.2f}')}[/]" if style else "-",
            _num(r["profit_pct"], "{:+.0f}%"), _num(r["dte"], "{}"),
            _num(r["net_delta"], "{:+.2f}"), _num(r["net_gamma"], "{:+.3f}"),
        )  # fmt: skip
        why = " / ".join(str(x) for x in (r["rule"], r["reason"]) if x)
        rules.add_row(
            sid, str(r["strategy_type"]) + ("" if r["managed"] else " (external)"),
            _ts(r["evaluated_at"], tz), str(r["regime"] or "-"),
            _num(r["profit_target_pct"], "{:.0f}%"), str(r["action"] or "never evaluated"),
            escape(why) or "-",
        )  # fmt: skip
    legs = open_legs(store)
    leg_table = _table(
        "legs",
        [("strategy", "left"), ("symbol", "left"), ("contract", "left"), ("qty", "right"),
         ("avg price", "right")],
    )  # fmt: skip
    for r, contract in zip(legs.iter_rows(named=True), _contract(legs), strict=True):
        leg_table.add_row(
            str(r["strategy_id"]), str(r["symbol"]), contract or str(r["sec_type"]),
            str(r["quantity"]), _num(r["avg_price"]),
        )  # fmt: skip
    for t in (money, rules, leg_table):
        console.print(t)
    console.print(
        "credit: what opening took in (USD, negative = paid); mark: what closing would cost "
        "at the last cycle's mid; Δ, Γ: net per share-equivalent"
    )
    return strategies.height


def parse_since(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UserError(
            f"--since: {value!r} is not a date; give the first market date to show as "
            "YYYY-MM-DD, e.g. --since 2026-03-02"
        ) from None


def print_trades(settings: Settings, console: Console, since: date | None) -> int:
    tz = ZoneInfo(settings.schedules.timezone)
    trades = closed_trades(DeltaStore.from_settings(settings), since=since, tz=tz)
    if trades.is_empty():
        console.print("no closed trades" + (f" since {since}" if since else ""))
        return 0
    table = _table(
        f"closed trades ({trades.height})" + (f" since {since}" if since else "")
        + "; credit and debit per share, P&L in USD",
        [("closed", "left"), ("strategy", "left"), ("qty", "right"),
         ("credit", "right"), ("debit", "right"), ("P&L", "right"), ("%", "right"),
         ("days", "right"), ("exit", "left")],
    )  # fmt: skip
    for r in trades.iter_rows(named=True):
        pnl = r["pnl"]
        style = "green" if (pnl or 0) >= 0 else "red"
        table.add_row(
            _ts(r["closed_at"], tz, "%m-%d %H:%M"), str(r["strategy_id"]),
            str(r["quantity"]), _num(r["entry_credit"]),
            _num(r["exit_debit"]), f"[{style}]{_num(pnl, '{:+,.2f}')}[/]",
            _num(r["pnl_pct"], "{:+.0f}%"), _num(r["holding_days"], "{:.1f}"),
            escape(str(r["exit_reason"] or "-")),
        )  # fmt: skip
    console.print(table)
    total = float(trades.get_column("pnl").sum())
    console.print(f"total realised: {total:+,.2f} USD over {trades.height} trade(s)")
    return trades.height


def print_strategy(settings: Settings, console: Console, strategy_id: str) -> None:
    tz = ZoneInfo(settings.schedules.timezone)
    try:
        life = strategy_life(DeltaStore.from_settings(settings), strategy_id)
    except UnknownStrategy:
        raise UserError(
            f"no strategy {strategy_id!r} in the book; `v6 positions` and `v6 trades` list ids"
        ) from None
    s = life.strategy
    console.print(
        f"[bold]{escape(strategy_id)}[/bold]: {s['strategy_type']} on {s['underlying']}, "
        f"{s['status']}, {s['quantity']} unit(s), origin {s['origin']}; opened "
        f"{_ts(s['opened_at'], tz, '%Y-%m-%d %H:%M %Z')}"
        + (f", closed {_ts(s['closed_at'], tz, '%Y-%m-%d %H:%M %Z')}" if s["closed_at"] else "")
        + (f" ({escape(str(s['close_reason']))})" if s["close_reason"] else ""),
    )
    if s.get("note"):
        console.print(f"intent: {escape(str(s['note']))}")
    legs = _table("legs", [("#", "right"), ("symbol", "left"), ("contract", "left"),
                           ("ratio", "right"), ("status", "left")])  # fmt: skip
    for r, contract in zip(life.legs.iter_rows(named=True), _contract(life.legs), strict=True):
        legs.add_row(str(r["leg_index"]), str(r["symbol"]), contract or str(r["sec_type"]),
                     str(r["ratio"]), str(r["status"]))  # fmt: skip
    orders = _table(
        "orders (intent before sending, then the broker's last word)",
        [("sent", "left"), ("ref", "left"), ("purpose", "left"), ("side", "left"),
         ("qty", "right"), ("limit", "right"), ("status", "left"), ("filled", "right"),
         ("avg", "right")],
    )  # fmt: skip
    for r in life.orders.iter_rows(named=True):
        ref = str(r["order_ref"]).removeprefix(f"v6:{strategy_id}:")
        orders.add_row(
            _ts(r["created_at"], tz, "%m-%d %H:%M:%S"), ref, str(r["purpose"] or "-"),
            str(r["action"] or "-"), _num(r["quantity"], "{}"),
            _num(r["limit_price"] if r["limit_price"] is not None else r["intent_limit"]),
            str(r["status"] or "not seen"), _num(r["filled"], "{}"), _num(r["avg_fill_price"]),
        )  # fmt: skip
    fills = _table("fills", [("time", "left"), ("symbol", "left"), ("con_id", "right"),
                             ("side", "left"), ("qty", "right"), ("price", "right"),
                             ("comm.", "right"), ("source", "left")])  # fmt: skip
    for r in life.fills.iter_rows(named=True):
        fills.add_row(
            _ts(r["time"], tz, "%m-%d %H:%M:%S"), str(r["symbol"]), str(r["con_id"]),
            str(r["side"]), str(r["quantity"]), _num(r["price"]), _num(r["commission"]),
            str(r["source"]),
        )  # fmt: skip
    decisions = _table("rule decisions", [("at", "left"), ("action", "left"), ("P&L %", "right"),
                                          ("DTE", "right"), ("rule / why", "left")])  # fmt: skip
    for r in life.decisions.iter_rows(named=True):
        why = " / ".join(str(x) for x in (r["rule"], r["reason"]) if x)
        decisions.add_row(
            _ts(r["evaluated_at"], tz), str(r["action"]), _num(r["profit_pct"], "{:+.0f}%"),
            _num(r["dte"], "{}"), escape(why) or "-",
        )  # fmt: skip
    for t in (legs, orders, fills, decisions):
        if t.row_count:
            console.print(t)
    if life.trade is not None:
        t = life.trade
        console.print(
            f"closed: P&L {_num(t['pnl'], '{:+,.2f}')} USD ({_num(t['pnl_pct'], '{:+.0f}%')} "
            f"of credit) after {_num(t['holding_days'], '{:.1f}')} days; exit "
            f"{escape(str(t['exit_reason']))}",
        )
