"""The owner's report: a self-contained HTML page with plots, and the artifact summary."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from core.analysis.report import (
    H,
    W,
    artifact_rows,
    markdown_summary,
    nice_ticks,
    plot_data,
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
