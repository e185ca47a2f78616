"""The operator's artifacts in the Prefect UI, refreshed by every trading cycle and
reconciliation: `positions-<installation>` (a table of open strategies) and
`equity-<installation>` (the equity curve as an SVG image, with the daily numbers).

Keyed per installation (`core.identity.installation_id` of the store root), so two V6
homes on one Prefect server never overwrite each other's "latest"."""

from __future__ import annotations

import base64
from zoneinfo import ZoneInfo

import polars as pl
from prefect import get_run_logger
from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact

from core.identity import installation_id
from core.runtime import Runtime
from core.views import open_strategies
from core.views.equity import equity_by_date, equity_svg

_TABLE_COLUMNS = (
    "strategy_id", "strategy_type", "underlying", "units", "credit_usd", "mark_usd",
    "unrealised_usd", "profit_pct", "dte", "net_delta", "net_gamma", "regime",
    "profit_target_pct", "action", "rule",
)  # fmt: skip


def artifact_keys(rt: Runtime) -> tuple[str, str]:
    """(positions key, equity key) of this installation."""
    home = installation_id(str(rt.store.root))
    return f"positions-{home}", f"equity-{home}"


def equity_markdown(rt: Runtime) -> str:
    tz = ZoneInfo(rt.settings.schedules.timezone)
    frame = equity_by_date(rt.store, tz)
    if frame.is_empty():
        return "### Equity\n\nNo trading cycle has recorded net liquidation yet.\n"
    svg = base64.b64encode(equity_svg(frame).encode()).decode()
    rows = "\n".join(
        f"| {r['date']} | {r['net_liq']:,.2f} | "
        + ("-" if r["day_pnl"] is None else f"{r['day_pnl']:+,.2f}")
        + " |"
        for r in frame.iter_rows(named=True)
    )
    return (
        f"### Equity (net liquidation, USD) of {rt.store.root}\n\n"
        f"![equity curve](data:image/svg+xml;base64,{svg})\n\n"
        "| market date | net liquidation | day P&L |\n|---|---:|---:|\n" + rows + "\n"
    )


async def publish_console_artifacts(rt: Runtime) -> tuple[str, str] | None:
    """Refresh this installation's positions table and equity page; returns their keys.
    A failure is logged as a warning on the run and changes nothing else: these pages
    are a view, the run's outcome is decided before them."""
    try:
        return await _publish(rt)
    except Exception as exc:
        get_run_logger().warning(
            "positions/equity artifacts not refreshed: %s: %s", type(exc).__name__, exc
        )
        return None


async def _publish(rt: Runtime) -> tuple[str, str]:
    positions_key, equity_key = artifact_keys(rt)
    frame = open_strategies(rt.store).select(_TABLE_COLUMNS)
    frame = frame.with_columns(pl.col(pl.Float64).round(2))
    await acreate_table_artifact(
        key=positions_key,
        table=frame.to_dicts(),
        description=f"open strategies of {rt.store.root}, as of the last cycle",
    )
    await acreate_markdown_artifact(
        key=equity_key,
        markdown=equity_markdown(rt),
        description=f"equity curve and daily P&L of {rt.store.root}",
    )
    return positions_key, equity_key
