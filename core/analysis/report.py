"""The report the owner reads: one self-contained HTML page, and a markdown summary.

The HTML has no external assets (inline SVG drawn here, no plotting library), so it
can be mailed, archived or opened from a Prefect artifact link years later. Plot data
is prepared with numpy (histograms, down-sampled cumulative sums), never row by row.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from core.analysis.variance import ALL, HIST, LIVE, TESTS_WITH_P, VarianceReport

LIVE_COLOR = "#d9480f"
HIST_COLOR = "#1c7ed6"
HIST_BINS = 40
MAX_POINTS = 400
TABLE_COLUMNS = (
    "metric",
    "test",
    "strategy_type",
    "regime",
    "n_live",
    "n_hist",
    "live_value",
    "hist_value",
    "statistic",
    "p_value",
    "p_adjusted",
    "ci_low",
    "ci_high",
    "drift",
    "status",
)


# -- plot data -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    name: str
    x: np.ndarray
    y: np.ndarray
    color: str


@dataclass(frozen=True)
class PlotData:
    pnl_edges: np.ndarray  # histogram bin edges of P&L %, shared by both sides
    pnl_live: np.ndarray  # share of live trades per bin
    pnl_hist: np.ndarray
    cum_live: Series  # cumulative P&L over close time (x: epoch seconds)
    cum_hist: Series


def plot_data(live_trades: pl.DataFrame, hist_trades: pl.DataFrame) -> PlotData:
    """Histogram and cumulative-P&L arrays for the report (vectorised)."""
    live = _col(live_trades, "pnl_pct")
    hist = _col(hist_trades, "pnl_pct")
    both = np.concatenate([live, hist])
    if both.size:
        lo, hi = np.percentile(both, [0.5, 99.5])
        if hi <= lo:
            lo, hi = lo - 1.0, hi + 1.0
    else:
        lo, hi = -100.0, 100.0
    edges = np.linspace(lo, hi, HIST_BINS + 1)
    return PlotData(
        pnl_edges=edges,
        pnl_live=_shares(np.clip(live, lo, hi), edges),
        pnl_hist=_shares(np.clip(hist, lo, hi), edges),
        cum_live=_cumulative(live_trades, "live", LIVE_COLOR),
        cum_hist=_cumulative(hist_trades, "historical", HIST_COLOR),
    )


def _col(frame: pl.DataFrame, name: str) -> np.ndarray:
    if name not in frame.columns or frame.is_empty():
        return np.empty(0)
    return frame.get_column(name).drop_nulls().cast(pl.Float64).to_numpy()


def _shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    counts, _ = np.histogram(values, bins=edges)
    return counts / max(values.size, 1)


def _cumulative(trades: pl.DataFrame, name: str, color: str) -> Series:
    if trades.is_empty() or "closed_at" not in trades.columns:
        return Series(name, np.empty(0), np.empty(0), color)
    ordered = trades.select("closed_at", "pnl").sort("closed_at")
    x = ordered.get_column("closed_at").dt.epoch("s").to_numpy().astype(float)
    y = np.cumsum(ordered.get_column("pnl").fill_null(0.0).to_numpy())
    if x.size > MAX_POINTS:  # keep the shape, drop the ink: evenly spaced samples + last
        keep = np.unique(np.linspace(0, x.size - 1, MAX_POINTS).astype(int))
        x, y = x[keep], y[keep]
    return Series(name, x, y, color)


# -- SVG -----------------------------------------------------------------------------------

W, H = 640, 300
ML, MR, MT, MB = 70, 20, 46, 46


def nice_ticks(lo: float, hi: float, count: int = 5) -> np.ndarray:
    """Round tick values covering [lo, hi] (1, 2, 5 x 10^k steps)."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return np.array([0.0])
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(count, 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    return np.arange(start, hi + step * 0.5, step)


MIN_TIME_SPAN_S = 3600.0
# Tick steps for a time axis, seconds: whole minutes, hours, days, weeks, ~months, ~years.
_TIME_STEPS = (
    60, 300, 900, 1800, 3600, 7200, 10800, 21600, 43200,
    86400, 2 * 86400, 7 * 86400, 14 * 86400, 30 * 86400, 91 * 86400, 182 * 86400, 365 * 86400,
)  # fmt: skip


def time_ticks(x0: float, x1: float, count: int = 5) -> list[tuple[float, str]]:
    """Ticks on round UTC times in [x0, x1] (epoch seconds), each label distinct.

    The step is the smallest round one giving at most `count` intervals; under a day the
    labels carry the time of day, so trades closed within one session do not all read the
    same date."""
    span = max(x1 - x0, 1.0)
    step = next((s for s in _TIME_STEPS if span / s <= count), _TIME_STEPS[-1])
    while span / step > count:  # decades of data: keep the tick count bounded
        step *= 2
    ticks = np.arange(math.ceil(x0 / step) * step, x1 + 1e-6, step, dtype=float)
    fmt = "%Y-%m-%d" if step >= 86400 else "%m-%d %H:%M"
    return [(t, datetime.fromtimestamp(t, UTC).strftime(fmt)) for t in ticks.tolist()]


@dataclass(frozen=True)
class _Frame:
    x0: float
    x1: float
    y0: float
    y1: float

    def px(self, x: np.ndarray) -> np.ndarray:
        span = self.x1 - self.x0 or 1.0
        return ML + (np.asarray(x, dtype=float) - self.x0) / span * (W - ML - MR)

    def py(self, y: np.ndarray) -> np.ndarray:
        span = self.y1 - self.y0 or 1.0
        return H - MB - (np.asarray(y, dtype=float) - self.y0) / span * (H - MT - MB)


def _fmt_tick(v: float) -> str:
    if v != 0 and (abs(v) >= 1e9 or abs(v) < 1e-3):
        return f"{v:.1e}"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.4g}"


def _axes(
    frame: _Frame,
    title: str,
    xlabel: str,
    ylabel: str,
    xticks: Sequence[tuple[float, str]],
    yticks: np.ndarray,
    yfmt: str = "",
) -> list[str]:
    e = html.escape
    out = [
        f'<text x="{W / 2}" y="20" text-anchor="middle" class="t">{e(title)}</text>',
        f'<line x1="{ML}" y1="{H - MB}" x2="{W - MR}" y2="{H - MB}" class="ax"/>',
        f'<line x1="{ML}" y1="{MT}" x2="{ML}" y2="{H - MB}" class="ax"/>',
        f'<text x="{W / 2}" y="{H - 8}" text-anchor="middle" class="l">{e(xlabel)}</text>',
        f'<text x="12" y="{H / 2}" text-anchor="middle" class="l" '
        f'transform="rotate(-90 12 {H / 2})">{e(ylabel)}</text>',
    ]
    for y, py in zip(yticks, frame.py(yticks), strict=True):
        label = f"{y:.0%}" if yfmt == "%" else _fmt_tick(float(y))
        out.append(f'<line x1="{ML}" y1="{py:.1f}" x2="{W - MR}" y2="{py:.1f}" class="g"/>')
        out.append(
            f'<text x="{ML - 6}" y="{py + 4:.1f}" text-anchor="end" class="k">{e(label)}</text>'
        )
    for x, label in xticks:
        px = float(frame.px(np.array([x]))[0])
        anchor = "end" if px > W - MR - 30 else ("start" if px < ML + 30 else "middle")
        out.append(
            f'<text x="{px:.1f}" y="{H - MB + 16}" text-anchor="{anchor}" class="k">'
            f"{e(label)}</text>"
        )
    return out


def _legend(items: Sequence[tuple[str, str]]) -> list[str]:
    out = []
    for k, (name, color) in enumerate(items):
        x = W - MR - 150 + k * 80
        out.append(f'<rect x="{x}" y="{MT - 16}" width="10" height="10" fill="{color}"/>')
        out.append(f'<text x="{x + 14}" y="{MT - 7}" class="k">{html.escape(name)}</text>')
    return out


def _svg(parts: list[str]) -> str:
    body = "\n".join(parts)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" '
        f'height="{H}" role="img">\n{body}\n</svg>'
    )


def svg_histograms(
    edges: np.ndarray, series: Sequence[tuple[str, np.ndarray, str]], title: str, xlabel: str
) -> str:
    """Overlaid histograms (shares per bin) on shared bins."""
    top = max([float(np.max(v)) for _, v, _ in series if v.size] + [1e-9])
    yticks = nice_ticks(0.0, top * 1.1, 4)
    frame = _Frame(float(edges[0]), float(edges[-1]), 0.0, float(yticks[-1]))
    xt = nice_ticks(float(edges[0]), float(edges[-1]), 6)
    xt = xt[(xt >= edges[0]) & (xt <= edges[-1])]
    parts = _axes(
        frame, title, xlabel, "share of trades", [(x, _fmt_tick(x)) for x in xt], yticks, "%"
    )
    left, right = frame.px(edges[:-1]), frame.px(edges[1:])
    for _, values, color in series:
        tops = frame.py(values)
        base = H - MB
        parts += [
            f'<rect x="{x0:.1f}" y="{y:.1f}" width="{max(x1 - x0 - 0.5, 0.5):.1f}" '
            f'height="{base - y:.1f}" fill="{color}" fill-opacity="0.45"/>'
            for x0, x1, y in zip(left.tolist(), right.tolist(), tops.tolist(), strict=True)
            if base - y > 0.05
        ]
    parts += _legend([(name, color) for name, _, color in series])
    return _svg(parts)


def svg_lines(series: Sequence[Series], title: str, ylabel: str) -> str:
    """Lines over time (x = epoch seconds); empty series are skipped."""
    drawn = [s for s in series if s.x.size]
    if not drawn:
        return _svg(
            [
                f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle" class="l">'
                f"{html.escape(title)}: no trades</text>"
            ]
        )
    xs = np.concatenate([s.x for s in drawn])
    ys = np.concatenate([s.y for s in drawn] + [np.zeros(1)])
    yticks = nice_ticks(float(ys.min()), float(ys.max()), 5)
    x0, x1 = float(xs.min()), float(xs.max())
    if x1 - x0 < MIN_TIME_SPAN_S:  # one close, or a burst: centre a readable window on it
        mid = (x0 + x1) / 2
        x0, x1 = mid - MIN_TIME_SPAN_S / 2, mid + MIN_TIME_SPAN_S / 2
    frame = _Frame(x0, x1, float(yticks[0]), float(yticks[-1]))
    parts = _axes(frame, title, "close time (UTC)", ylabel, time_ticks(x0, x1), yticks)
    for s in drawn:
        pts = " ".join(
            f"{a:.1f},{b:.1f}"
            for a, b in zip(frame.px(s.x).tolist(), frame.py(s.y).tolist(), strict=True)
        )
        parts.append(
            f'<polyline points="{pts}" fill="none" stroke="{s.color}" stroke-width="1.6"/>'
        )
    parts += _legend([(s.name, s.color) for s in drawn])
    return _svg(parts)


def svg_grouped_bars(
    categories: Sequence[str],
    series: Sequence[tuple[str, np.ndarray, str]],
    title: str,
    ylabel: str,
) -> str:
    """Side-by-side bars per category; NaN bars are left out (insufficient data)."""
    vals = np.concatenate([v for _, v, _ in series] + [np.zeros(1)])
    vals = vals[np.isfinite(vals)]
    yticks = nice_ticks(float(vals.min()), float(vals.max()), 5)
    frame = _Frame(0.0, float(max(len(categories), 1)), float(yticks[0]), float(yticks[-1]))
    xt = [(k + 0.5, c) for k, c in enumerate(categories)]
    parts = _axes(frame, title, "regime", ylabel, xt, yticks)
    width = 0.8 / max(len(series), 1)
    zero = float(frame.py(np.zeros(1))[0])
    for j, (_, values, color) in enumerate(series):
        xs = frame.px(np.arange(len(categories)) + 0.1 + j * width)
        ys = frame.py(values)
        bw = float(frame.px(np.array([width]))[0] - ML)
        for x, y, v in zip(xs.tolist(), ys.tolist(), values.tolist(), strict=True):
            if math.isfinite(v):
                parts.append(
                    f'<rect x="{x:.1f}" y="{min(y, zero):.1f}" width="{bw:.1f}" '
                    f'height="{abs(zero - y):.1f}" fill="{color}"/>'
                )
    parts += _legend([(name, color) for name, _, color in series])
    return _svg(parts)


# -- HTML ----------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1320px;color:#222}
h1{font-size:22px} h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:12px} td,th{padding:3px 7px;border-bottom:1px solid #eee;
text-align:right} th{background:#f4f4f4;position:sticky;top:0} td.s,th.s{text-align:left}
tr.drift td{background:#fff0f0} tr.short td{color:#888}
.cards{display:flex;gap:12px;flex-wrap:wrap} .card{border:1px solid #ddd;border-radius:6px;
padding:8px 14px;min-width:150px} .card b{display:block;font-size:20px}
.plots{display:flex;flex-wrap:wrap;gap:8px}
svg .t{font-size:14px;font-weight:600} svg .l{font-size:12px} svg .k{font-size:10px;fill:#444}
svg .ax{stroke:#333} svg .g{stroke:#eee}
"""


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, float):
        if not math.isfinite(v):
            return "–"
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6):
            return f"{v:.3g}"
        return f"{v:,.4f}".rstrip("0").rstrip(".")
    return html.escape(str(v))


def _table(frame: pl.DataFrame, row_class: list[str] | None = None) -> str:
    text_cols = {c for c, d in frame.schema.items() if d == pl.String}
    head = "".join(
        f'<th class="{"s" if c in text_cols else ""}">{html.escape(c)}</th>' for c in frame.columns
    )
    rows = []
    for k, row in enumerate(frame.iter_rows()):
        cls = f' class="{row_class[k]}"' if row_class and row_class[k] else ""
        cells = "".join(
            f'<td class="{"s" if c in text_cols else ""}">{_fmt(v)}</td>'
            for c, v in zip(frame.columns, row, strict=True)
        )
        rows.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def significance_tests(report: VarianceReport) -> pl.DataFrame:
    """The test rows (no descriptive rows), drift first, then by adjusted p-value."""
    return (
        report.results.filter(pl.col("test").is_in(TESTS_WITH_P))
        .sort(
            ["drift", "p_adjusted", "metric", "strategy_type", "regime"],
            descending=[True, False, False, False, False],
            nulls_last=True,
        )
        .select(TABLE_COLUMNS)
    )


def render_html(
    report: VarianceReport, plots: PlotData, weights: pl.DataFrame | None = None
) -> str:
    """The whole report as one HTML string."""
    e = html.escape
    h = report.headline()
    tests = significance_tests(report)
    classes = [
        "drift" if d else ("short" if s.startswith("insufficient") else "")
        for d, s in zip(
            tests.get_column("drift").to_list(), tests.get_column("status").to_list(), strict=True
        )
    ]
    errs = report.prediction_errors.filter(
        (pl.col("strategy_type") == ALL) & (pl.col("target") == "expected_return_pct")
    )
    regimes = [*sorted(set(errs.get_column("regime").to_list()) - {ALL}), ALL]

    def by_regime(side: str, stat: str) -> np.ndarray:
        sub = errs.filter(pl.col("side") == side)
        lookup = dict(
            zip(sub.get_column("regime").to_list(), sub.get_column(stat).to_list(), strict=True)
        )
        return np.array(
            [np.nan if lookup.get(r) is None else lookup[r] for r in regimes], dtype=float
        )

    plots_html = [
        svg_histograms(
            plots.pnl_edges,
            [("live", plots.pnl_live, LIVE_COLOR), ("historical", plots.pnl_hist, HIST_COLOR)],
            "P&L % per trade: live vs historical",
            "P&L % of entry credit",
        ),
        svg_lines([plots.cum_live], "Cumulative P&L, live window", "USD"),
        svg_lines([plots.cum_hist], "Cumulative P&L, historical run", "USD"),
        svg_grouped_bars(
            regimes,
            [
                ("live", by_regime(LIVE, "bias"), LIVE_COLOR),
                ("historical", by_regime(HIST, "bias"), HIST_COLOR),
            ],
            "Expected-return error by regime (bias)",
            "predicted − realised, pts",
        ),
        svg_grouped_bars(
            regimes,
            [
                ("live", by_regime(LIVE, "mae"), LIVE_COLOR),
                ("historical", by_regime(HIST, "mae"), HIST_COLOR),
            ],
            "Expected-return error by regime (MAE)",
            "mean |error|, pts",
        ),
    ]
    cards = [
        ("live trades", f"{h['n_live']:,}"),
        ("historical trades", f"{h['n_hist']:,}"),
        ("win rate live / hist", f"{_pct(h['live_win_rate'])} / {_pct(h['hist_win_rate'])}"),
        (
            "mean P&L % live / hist",
            f"{_num(h['live_mean_pnl_pct'])} / {_num(h['hist_mean_pnl_pct'])}",
        ),
        ("drift flags", f"{h['drift_flags']} of {h['tests']} tests"),
        ("insufficient data", f"{h['insufficient']} rows"),
    ]
    sections = [
        f"<h1>V6 variance analysis — {e(report.run_date.isoformat())}</h1>",
        f"<p>Live: trades closed in the analysis window. Historical: backtest run "
        f"<code>{e(str(report.hist_run_id))}</code> (config <code>{e(str(report.config_hash))}"
        f"</code>). Tests are Holm-adjusted over the run; drift = adjusted p &lt; "
        f"significance.</p>",
        '<div class="cards">'
        + "".join(f'<div class="card">{e(k)}<b>{e(v)}</b></div>' for k, v in cards)
        + "</div>",
        "<h2>Plots</h2>",
        '<div class="plots">' + "".join(plots_html) + "</div>",
        "<h2>Drift flags</h2>",
        _table(report.drifts.select(TABLE_COLUMNS))
        if report.drifts.height
        else "<p>No drift flagged.</p>",
    ]
    if weights is not None and weights.height:
        sections += [
            "<h2>Strategy-type weights</h2>",
            _table(
                weights.select(
                    "strategy_type",
                    "previous_weight",
                    "weight",
                    "action",
                    "n_live",
                    "n_hist",
                    "pnl_pct_diff",
                    "win_rate_diff",
                    "p_value",
                )
            ),
        ]
    sections += [
        "<h2>Summary by cell</h2>",
        _table(report.summary),
        "<h2>Prediction error (predicted − realised)</h2>",
        _table(report.prediction_errors),
        "<h2>Exit-reason mix</h2>",
        _table(report.exit_mix),
        "<h2>All tests</h2>",
        _table(tests, classes),
    ]
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>V6 variance {e(report.run_date.isoformat())}</title><style>{_CSS}</style>"
        f"</head><body>\n" + "\n".join(sections) + "\n</body></html>\n"
    )


def report_path(reports_dir: str | Path, report: VarianceReport) -> Path:
    return Path(reports_dir) / f"variance-{report.run_date.isoformat()}.html"


def write_html_report(
    report: VarianceReport,
    live_trades: pl.DataFrame,
    hist_trades: pl.DataFrame,
    reports_dir: str | Path,
    weights: pl.DataFrame | None = None,
) -> Path:
    """Write `<reports_dir>/variance-YYYY-MM-DD.html` (replacing a re-run's) and return it."""
    path = report_path(reports_dir, report)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = render_html(report, plot_data(live_trades, hist_trades), weights)
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)  # atomic: a reader never sees half a report
    return path


# -- markdown and artifact tables ----------------------------------------------------------


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v:.1%}"


def _num(v: float | None) -> str:
    return "–" if v is None else f"{v:,.2f}"


def markdown_summary(
    report: VarianceReport,
    weights: pl.DataFrame | None = None,
    report_uri: str | None = None,
    max_drifts: int = 10,
) -> str:
    """The key numbers for the Prefect markdown artifact."""
    h = report.headline()
    lines = [
        f"# Variance analysis {report.run_date.isoformat()}",
        "",
        f"Historical side: backtest run `{report.hist_run_id or 'not recorded'}` "
        f"(config `{report.config_hash or 'not recorded'}`).",
        "",
        "| | live | historical |",
        "|---|---:|---:|",
        f"| trades | {h['n_live']:,} | {h['n_hist']:,} |",
        f"| win rate | {_pct(h['live_win_rate'])} | {_pct(h['hist_win_rate'])} |",
        f"| mean P&L % | {_num(h['live_mean_pnl_pct'])} | {_num(h['hist_mean_pnl_pct'])} |",
        f"| total P&L (USD) | {_num(h['live_total_pnl'])} | {_num(h['hist_total_pnl'])} |",
        "",
        f"**Drift flags: {h['drift_flags']}** of {h['tests']} tests (Holm-adjusted); "
        f"{h['insufficient']} rows with insufficient data.",
    ]
    drifts = significance_tests(report).filter(pl.col("drift")).head(max_drifts)
    if drifts.height:
        lines += [
            "",
            "| metric | test | strategy type | regime | live | hist | adj. p |",
            "|---|---|---|---|---:|---:|---:|",
        ]
        lines += [
            f"| {r['metric']} | {r['test']} | {r['strategy_type']} | {r['regime']} | "
            f"{_md(r['live_value'])} | {_md(r['hist_value'])} | {_md(r['p_adjusted'])} |"
            for r in drifts.iter_rows(named=True)
        ]
    if weights is not None and weights.height:
        lines += ["", "**Strategy-type weights**", ""]
        lines += [
            f"- {r['strategy_type']}: {r['previous_weight']:.2f} → {r['weight']:.2f} "
            f"({r['action']}, n live {r['n_live']})"
            for r in weights.iter_rows(named=True)
        ]
    if report_uri:
        lines += ["", f"Full report with plots: [{report_uri}]({report_uri})"]
    return "\n".join(lines) + "\n"


def _md(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.3g}" if abs(v) < 1e-2 and v != 0 else f"{v:,.3f}"


def artifact_rows(report: VarianceReport, limit: int = 500) -> list[dict[str, Any]]:
    """Rows for the Prefect table artifact: every test, drift first (JSON-safe values)."""
    return significance_tests(report).head(limit).to_dicts()
