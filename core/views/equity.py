"""The equity curve and daily P&L by market date, and an SVG chart of it.

Net liquidation per market date is the last one a trading cycle recorded that day
(`cycle_health.net_liq`); the day's P&L is the change from the day's start-of-day baseline
(`account_daily`), falling back to the previous day's close where a baseline is missing.
Dates are market dates (New York), the data's own: a simulated book shows its simulated
days. The chart is plain SVG (no plotting library): an axis per side labelled with the
dates and the USD range, one point per date.
"""

from __future__ import annotations

from datetime import date
from zoneinfo import ZoneInfo

import polars as pl

from core.book.ledger import TableStore

c = pl.col


def equity_by_date(store: TableStore, tz: ZoneInfo) -> pl.DataFrame:
    """date, net_liq (end of day), start_net_liq, day_pnl; oldest first."""
    health = (
        store.read("cycle_health", columns=["ts", "net_liq"])
        .filter(c("net_liq").is_not_null())
        .with_columns(c("ts").dt.convert_time_zone(str(tz)).dt.date().alias("date"))
        .sort("ts")
        .group_by("date")
        .agg(c("net_liq").last())
        .collect()
    )
    if health.is_empty():
        return pl.DataFrame(
            schema={
                "date": pl.Date,
                "net_liq": pl.Float64,
                "start_net_liq": pl.Float64,
                "day_pnl": pl.Float64,
            }
        )
    starts = (
        store.read("account_daily", columns=["date", "start_net_liq"])
        .group_by("date")
        .agg(c("start_net_liq").first())
        .collect()
    )
    out = health.join(starts, on="date", how="left").sort("date")
    base = c("start_net_liq").fill_null(c("net_liq").shift(1))
    return out.with_columns((c("net_liq") - base).alias("day_pnl")).select(
        "date", "net_liq", "start_net_liq", "day_pnl"
    )


def equity_svg(frame: pl.DataFrame, *, width: int = 640, height: int = 240) -> str:
    """The equity curve as an SVG document: x = market dates, y = net liquidation (USD)."""
    pad_l, pad_r, pad_t, pad_b = 80, 16, 16, 40
    w, h = width - pad_l - pad_r, height - pad_t - pad_b
    values = [float(v) for v in frame.get_column("net_liq").to_list()]
    dates: list[date] = frame.get_column("date").to_list()
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 1.0, hi + 1.0
    n = len(values)

    def x(i: int) -> float:
        return pad_l + (w * i / (n - 1) if n > 1 else w / 2)

    def y(v: float) -> float:
        return pad_t + h * (1 - (v - lo) / (hi - lo))

    pts = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{pad_t + h}" stroke="#555"/>',
        f'<line x1="{pad_l}" y1="{pad_t + h}" x2="{pad_l + w}" y2="{pad_t + h}" stroke="#555"/>',
    ]
    for v in (lo, (lo + hi) / 2, hi):
        parts.append(f'<text x="{pad_l - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:,.0f}</text>')
    step = max(1, n // 6)
    for i in range(0, n, step):
        parts.append(
            f'<text x="{x(i):.1f}" y="{pad_t + h + 16}" text-anchor="middle">'
            f"{dates[i]:%m-%d}</text>"
        )
    parts.append(
        f'<text x="{pad_l + w / 2:.1f}" y="{height - 6}" text-anchor="middle">'
        "market date (New York)</text>"
    )
    if n:
        parts.append(f'<polyline fill="none" stroke="#1f6feb" stroke-width="2" points="{pts}"/>')
        parts += [
            f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3" fill="#1f6feb"/>'
            for i, v in enumerate(values)
        ]
    parts.append("</svg>")
    return "\n".join(parts)
