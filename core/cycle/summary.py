"""What a trading cycle shows its owner: one markdown page (outcome, breaker state, health,
then tables of decisions, orders, rejections and positions), and the same tables as plain
rows.

One page rather than one artifact per table: on the local SQLite server each artifact costs
a serialized write of ~0.1 s, the largest share of the flow's overhead. Pure (no Prefect):
the flow publishes the page; a backtest or the demo can print or store the same data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import polars as pl

from core.cycle.report import all_results, order_rows
from core.cycle.run import CycleRun
from core.domain import OrderStatus
from core.execution.results import ExecStatus

DECISION_COLUMNS = (
    "strategy_id", "strategy_type", "underlying", "regime", "action", "urgency", "rule",
    "reason", "profit_pct", "dte", "net_delta", "iv", "iv_percentile", "vix",
    "underlying_move_1h_pct", "missing_inputs",
)  # fmt: skip


@dataclass(frozen=True)
class CycleArtifacts:
    description: str
    markdown: str
    tables: dict[str, list[dict[str, Any]]]  # positions, decisions, orders, rejections


def _plain(frame: pl.DataFrame) -> list[dict[str, Any]]:
    """Rows with JSON-safe values: dates/times as ISO text, NaN as null, floats rounded."""
    if frame.is_empty():
        return []
    exprs = []
    for name, dtype in frame.schema.items():
        col = pl.col(name)
        if dtype.is_float():
            exprs.append(pl.when(col.is_finite()).then(col.round(4)).alias(name))
        elif dtype.is_temporal():
            exprs.append(col.cast(pl.String).alias(name))
        else:
            exprs.append(col)
    return frame.select(exprs).to_dicts()


MAX_ROWS = 200  # per table on the page; the Delta tables hold everything


def markdown_table(rows: list[dict[str, Any]], limit: int = MAX_ROWS) -> str:
    """Rows as a markdown table ('none' when empty; '|' in text escaped)."""
    if not rows:
        return "_none_"
    cols = list(rows[0])

    def cell(v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, float):
            return f"{v:,.4g}" if abs(v) < 1e5 else f"{v:,.0f}"
        return str(v).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(cell(r.get(c)) for c in cols) + " |" for r in rows[:limit]]
    if len(rows) > limit:
        out.append(f"\n_{len(rows) - limit} more row(s) not shown_")
    return "\n".join(out)


def _fmt(x: float | None, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:,.{digits}f}"


def artifacts_for(run: CycleRun) -> CycleArtifacts:
    report, gate, outcome = run.report, run.gate, run.outcome
    tables: dict[str, list[dict[str, Any]]] = {
        "positions": [],
        "decisions": [],
        "orders": [],
        "rejections": [],
    }
    lines = [
        f"# Trading cycle {run.run_id}: {outcome.name}",
        "",
        f"{outcome.message}",
        "",
        "## Circuit breaker",
        "",
        "| | |",
        "|---|---|",
        f"| gate | {gate.mode.value} |",
        f"| state at start | {gate.state.value if gate.state else 'UNREADABLE'} |",
        f"| reason | {gate.reason} |",
    ]
    if run.transition is not None:
        t = run.transition
        lines.append(
            f"| transition | {t.from_state.value} -> {t.to_state.value} ({t.trigger}): {t.reason} |"
        )
    if report is None:
        lines += ["", "The broker was not touched."]
        return CycleArtifacts(f"cycle {run.run_id}: {outcome.name}", "\n".join(lines), tables)

    h = run.health
    summary = report.summary
    if summary is not None:
        tables["positions"] = _plain(summary.positions)
    if report.rules is not None and report.rules.run is not None:
        dec = report.rules.decisions
        tables["decisions"] = _plain(dec.select([c for c in DECISION_COLUMNS if c in dec.columns]))
    results = all_results(report)
    tables["orders"] = order_rows(results)
    rejections: list[dict[str, Any]] = []
    if report.plan is not None and report.plan.plan is not None:
        for lr in report.plan.plan.rejections:
            for row in _plain(lr.rejection_rows(run_id=run.run_id, now=datetime.now(UTC))):
                row.pop("ts", None)
                rejections.append({"kind": "limit", **row})
    for r in () if report.entries is None else report.entries.results:
        if r.status is ExecStatus.BLOCKED:  # refused before sending: hard cap, what-if margin
            rejections.append({"kind": "entry", "strategy_id": r.strategy_id, "detail": r.message})
    for r in results:
        for a in r.attempts:
            if a.status == OrderStatus.REJECTED:
                rejections.append(
                    {"kind": "broker", "strategy_id": r.strategy_id, "detail": a.message}
                )
    tables["rejections"] = rejections

    counts: dict[str, int] = {}
    if report.rules is not None and report.rules.run is not None:
        counts = {k: v for k, v in report.rules.run.counts.items() if v}
    filled = sum(1 for r in results if r.filled > 0)
    on = gate.entries_allowed and not report.exits_only
    entries = report.entries_skipped or ("allowed" if on else "off (exits only)")
    lines += [
        "",
        "## Cycle",
        "",
        "| | |",
        "|---|---|",
        f"| steps | {', '.join(report.steps)} |",
        f"| failure | {report.failure or 'none'} |",
        f"| entries | {entries} |",
        f"| decisions | {', '.join(f'{k} {v}' for k, v in counts.items()) or 'none'} |",
        f"| exits worked | {0 if report.exits is None else len(report.exits.orders)} |",
        f"| entries sent | {0 if report.entries is None else len(report.entries.results)} |",
        f"| orders / strategies filled | {len(tables['orders'])} / {filled} |",
        f"| limit rejections | {sum(1 for r in rejections if r['kind'] == 'limit')} |",
    ]
    if h is not None:
        lines += [
            "",
            "## Health (breaker inputs)",
            "",
            "| | |",
            "|---|---|",
            f"| net liquidation | {_fmt(h.net_liq)} USD |",
            f"| daily P&L | {_fmt(h.daily_pnl)} USD |",
            f"| order rejections | {h.rejections} |",
            f"| disconnected | {_fmt(h.disconnected_s, 1)} s |",
            f"| unresolved breaks | {h.unresolved_breaks} |",
            f"| failed / data items (NO_DATA, suspect reports, withheld quotes) | "
            f"{h.data_quality_failures} / {h.data_points} |",
        ]
    if report.market is not None and report.market.slots:
        s = report.market.slots
        lines.append(
            f"\nMarket data: {s.get('quoted', 0)} contracts quoted in batches within "
            f"{s.get('cap', 0)} of {s.get('budget', 0)} lines."
        )
    if report.market is not None and report.market.data_note:
        lines.append(f"\n**Market data quality**: {report.market.data_note}.")
    for title, name in (
        ("Decisions", "decisions"),
        ("Orders", "orders"),
        ("Rejections", "rejections"),
        ("Positions", "positions"),
    ):
        lines += ["", f"## {title}", "", markdown_table(tables[name])]
    description = (
        f"cycle {run.run_id}: {outcome.name}; {len(tables['decisions'])} decision(s), "
        f"{len(tables['orders'])} order(s), {len(tables['positions'])} position leg(s)"
    )
    return CycleArtifacts(description, "\n".join(lines), tables)


__all__ = ["CycleArtifacts", "artifacts_for", "markdown_table"]
