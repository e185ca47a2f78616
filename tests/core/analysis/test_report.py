"""The owner's report: a self-contained HTML page with plots, and the artifact summary."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from core.analysis.report import (
    MB,
    H,
    W,
    artifact_rows,
    markdown_summary,
    nice_ticks,
    plot_data,
    time_ticks,
    write_html_report,
)
from core.analysis.synthetic import synthetic_trades
from core.analysis.variance import VarianceReport, analyse
from core.analysis.weights import update_weights
from core.config import AnalysisSettings

SETTINGS = AnalysisSettings(bootstrap_samples=200)
RUN_DATE = date(2026, 3, 31)
AS_OF = datetime(2026, 3, 31, 22, 30, tzinfo=UTC)


def make(
    live_n: int, shift: float = 0.0
) -> tuple[VarianceReport, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    live = synthetic_trades(live_n, seed=3, pnl_pct_shift=shift)
    hist = synthetic_trades(3000, seed=4, source="backtest")
    report = analyse(
        live[0],
        hist[0],
        live[1],
        hist[1],
        settings=SETTINGS,
        run_date=RUN_DATE,
        hist_run_id="BT-SYNTH",
        config_hash="abc123",
    )
    weights = update_weights(report.results, {}, settings=SETTINGS, run_date=RUN_DATE, as_of=AS_OF)
    return report, live[0], hist[0], weights


@pytest.fixture(scope="module")
def drifted() -> tuple[VarianceReport, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    return make(600, shift=-30.0)


def svgs(text: str) -> list[str]:
    return re.findall(r"<svg.*?</svg>", text, re.S)


def test_html_report_is_written_where_the_owner_looks(tmp_path: Path, drifted) -> None:
    report, live, hist, weights = drifted
    path = write_html_report(report, live, hist, tmp_path / "reports", weights)
    assert path == tmp_path / "reports" / "variance-2026-03-31.html"
    text = path.read_text(encoding="utf-8")
    assert "<script" not in text and "http://" not in text.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )  # self-contained
    for title in (
        "P&amp;L % per trade: live vs historical",
        "Cumulative P&amp;L, live window",
        "Expected-return error by regime (bias)",
    ):
        assert title in text
    assert "Drift flags" in text and ">pnl_pct<" in text and "BT-SYNTH" in text
    assert "iron_condor" in text and "cut" in text  # weights table
    # A second write (re-run of the night) replaces the file, leaving no temp file behind.
    write_html_report(report, live, hist, tmp_path / "reports", weights)
    assert [p.name for p in (tmp_path / "reports").iterdir()] == ["variance-2026-03-31.html"]


def test_plots_are_valid_svg_and_stay_on_the_canvas(tmp_path: Path, drifted) -> None:
    report, live, hist, weights = drifted
    text = write_html_report(report, live, hist, tmp_path, weights).read_text(encoding="utf-8")
    plots = svgs(text)
    assert len(plots) == 5
    for svg in plots:
        root = ET.fromstring(svg)
        ns = "{http://www.w3.org/2000/svg}"
        rects = root.findall(f"{ns}rect")
        for r in rects:
            x, y = float(r.get("x", 0)), float(r.get("y", 0))
            w, h = float(r.get("width", 0)), float(r.get("height", 0))
            assert x >= -0.5 and x + w <= W + 0.5 and y >= -0.5 and y + h <= H + 0.5
        for line in root.findall(f"{ns}polyline"):
            pts = np.array([p.split(",") for p in line.get("points", "").split()], dtype=float)
            assert pts[:, 0].min() >= 0 and pts[:, 0].max() <= W
            assert pts[:, 1].min() >= 0 and pts[:, 1].max() <= H


def test_histogram_shares_sum_to_one_and_show_the_shift(drifted) -> None:
    _, live, hist, _ = drifted
    data = plot_data(live, hist)
    assert data.pnl_live.sum() == pytest.approx(1.0)
    assert data.pnl_hist.sum() == pytest.approx(1.0)
    centers = (data.pnl_edges[:-1] + data.pnl_edges[1:]) / 2
    assert (centers * data.pnl_live).sum() < (centers * data.pnl_hist).sum()
    assert data.cum_live.y[-1] == pytest.approx(live.get_column("pnl").sum())
    assert data.cum_hist.x.size <= 400 and np.all(np.diff(data.cum_hist.x) >= 0)


def test_markdown_summary_has_the_key_numbers_and_the_link(drifted) -> None:
    report, _, _, weights = drifted
    h = report.headline()
    md = markdown_summary(report, weights, "file:///srv/v6/reports/variance-2026-03-31.html")
    assert "# Variance analysis 2026-03-31" in md
    assert f"**Drift flags: {h['drift_flags']}** of {h['tests']} tests" in md
    assert f"| trades | {h['n_live']:,} | {h['n_hist']:,} |" in md
    assert f"{h['live_win_rate']:.1%}" in md
    assert "| pnl_pct |" in md  # the top drift rows
    assert "(file:///srv/v6/reports/variance-2026-03-31.html)" in md
    assert "iron_condor: 1.00 → 0.90 (cut" in md


def test_small_samples_render_as_insufficient_data(tmp_path: Path) -> None:
    report, live, hist, weights = make(4)
    text = write_html_report(report, live, hist, tmp_path, weights).read_text(encoding="utf-8")
    assert "insufficient data, n=4 (live; need 10)" in text
    assert "No drift flagged." in text
    assert len(svgs(text)) == 5
    md = markdown_summary(report, weights)
    assert "**Drift flags: 0**" in md and "insufficient data" in md


def test_artifact_rows_are_json_safe_and_puts_drift_first(drifted) -> None:
    report, *_ = drifted
    rows = artifact_rows(report)
    json.dumps(rows, allow_nan=False)
    assert rows[0]["drift"] is True
    assert {r["test"] for r in rows} <= {"welch_t", "ks", "chi2"}
    assert (
        len(rows) == report.results.filter(pl.col("test").is_in(["welch_t", "ks", "chi2"])).height
    )


@pytest.mark.parametrize(("lo", "hi"), [(0.0, 0.2), (-312.5, 97.0), (5.0, 5.0), (-1e5, 3e6)])
def test_nice_ticks_cover_the_range(lo: float, hi: float) -> None:
    ticks = nice_ticks(lo, hi)
    assert ticks[0] <= lo and ticks[-1] >= min(hi, ticks[-1])
    assert ticks[-1] >= hi or hi == lo
    assert 2 <= ticks.size <= 12


def x_tick_labels(svg: str) -> list[tuple[float, str]]:
    """The x-axis tick labels of a rendered plot, as (pixel x, text), left to right."""
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    ticks = [
        (float(t.get("x", "nan")), t.text or "")
        for t in root.findall(f"{ns}text")
        if t.get("class") == "k" and t.get("y") == str(H - MB + 16)
    ]
    return sorted(ticks)


def live_chart(text: str) -> str:
    return next(s for s in svgs(text) if "Cumulative P&amp;L, live window" in s)


def with_closes(trades: pl.DataFrame, closes: list[datetime]) -> pl.DataFrame:
    n = len(closes)
    return trades.head(n).with_columns(
        pl.Series("closed_at", closes, dtype=trades.schema["closed_at"])
    )


@pytest.mark.parametrize(
    ("first", "spacing", "n", "fmt"),
    [
        (datetime(2026, 3, 31, 14, 5, tzinfo=UTC), timedelta(minutes=35), 9, "%m-%d %H:%M"),
        (datetime(2026, 3, 31, 15, 0, tzinfo=UTC), timedelta(0), 1, "%m-%d %H:%M"),
        (datetime(2026, 3, 2, 20, 0, tzinfo=UTC), timedelta(days=1), 22, "%Y-%m-%d"),
        (datetime(2024, 1, 2, 20, 0, tzinfo=UTC), timedelta(days=9), 90, "%Y-%m-%d"),
    ],
    ids=["one-session", "one-trade", "one-month", "two-years"],
)
def test_live_cumulative_chart_labels_distinct_times_at_their_places(
    tmp_path: Path, drifted, first: datetime, spacing: timedelta, n: int, fmt: str
) -> None:
    """Issue 20: every tick of the live chart read the same date when the trades closed
    within a day. Each label is now distinct, in time order, and sits where its time is."""
    report, live, hist, weights = drifted
    closes = [first + k * spacing for k in range(n)]
    text = write_html_report(report, with_closes(live, closes), hist, tmp_path, weights).read_text(
        encoding="utf-8"
    )
    svg = live_chart(text)
    assert "close time (UTC)" in svg
    labels = x_tick_labels(svg)
    assert 2 <= len(labels) <= 6, labels
    texts = [t for _, t in labels]
    assert len(set(texts)) == len(texts), texts
    times = [datetime.strptime(t, fmt).replace(tzinfo=UTC) for t in texts]
    if fmt == "%m-%d %H:%M":  # the year is not on the label: it is the trades' year
        times = [t.replace(year=first.year) for t in times]
    assert times == sorted(times)
    # Linear placement: pixel distance is proportional to time distance between ticks.
    xs = np.array([x for x, _ in labels])
    secs = np.array([t.timestamp() for t in times])
    px_per_s = (xs[-1] - xs[0]) / (secs[-1] - secs[0])
    assert xs == pytest.approx(xs[0] + (secs - secs[0]) * px_per_s, abs=0.2)
    # Every tick lies inside the data's window (or the hour centred on a single close).
    lo, hi = min(closes).timestamp(), max(closes).timestamp()
    pad = max(0.0, (3600 - (hi - lo)) / 2)
    assert secs.min() >= lo - pad - 1 and secs.max() <= hi + pad + 1


@pytest.mark.parametrize("span_s", [3600.0, 5400.0, 86400.0 * 3, 86400.0 * 400, 3.2e9])
def test_time_ticks_are_round_distinct_and_bounded(span_s: float) -> None:
    """From the hour the chart pads a single close to, up to a century of closes."""
    x0 = datetime(2026, 3, 31, 13, 47, 11, tzinfo=UTC).timestamp()
    ticks = time_ticks(x0, x0 + span_s)
    assert 1 <= len(ticks) <= 6
    values = [v for v, _ in ticks]
    assert all(x0 <= v <= x0 + span_s for v in values)
    assert len({label for _, label in ticks}) == len(ticks)
    assert all(v % 60 == 0 for v in values)  # whole minutes at least
