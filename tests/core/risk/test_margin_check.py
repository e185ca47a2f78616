"""check_margin at and around its threshold, and with every input it needs missing."""

from __future__ import annotations

import math

import pytest

from core.domain import MarginImpact
from core.risk.margin import check_margin


def impact(before: float | None, change: float | None, after: float | None) -> MarginImpact:
    return MarginImpact(before, change, after, None, None, None, None, None, None)


@pytest.mark.parametrize(
    ("after", "ok"),
    [(49_999.99, True), (50_000.0, True), (50_000.01, False), (80_000.0, False)],
)
def test_threshold_is_inclusive(after: float, ok: bool) -> None:
    got = check_margin(impact(0.0, after, after), net_liquidation=1e5, max_margin_pct=50)
    assert got.ok is ok and got.limit == 50_000.0 and got.post_trade_initial == after
    assert ("refused" in got.reason) is not ok


def test_after_unknown_falls_back_to_before_plus_change() -> None:
    got = check_margin(
        impact(40_000.0, 5_000.0, None), net_liquidation=100_000.0, max_margin_pct=50
    )
    assert got.ok and got.post_trade_initial == 45_000.0
    got = check_margin(
        impact(48_000.0, 5_000.0, None), net_liquidation=100_000.0, max_margin_pct=50
    )
    assert not got.ok and got.post_trade_initial == 53_000.0


@pytest.mark.parametrize(
    "unknown", [impact(None, 500.0, None), impact(0.0, None, None), impact(None, None, None)]
)
def test_unknown_margin_is_refused(unknown: MarginImpact) -> None:
    got = check_margin(unknown, net_liquidation=1e5, max_margin_pct=50)
    assert not got.ok and math.isnan(got.post_trade_initial) and "unknown" in got.reason


@pytest.mark.parametrize("net_liq", [math.nan, 0.0, -5.0, math.inf])
def test_unknown_net_liquidation_is_refused(net_liq: float) -> None:
    got = check_margin(impact(0.0, 1.0, 1.0), net_liquidation=net_liq, max_margin_pct=50)
    assert not got.ok and "net liquidation" in got.reason


@pytest.mark.parametrize("pct", [0.0, -1.0, 100.1, math.nan])
def test_bad_limit_raises_naming_it(pct: float) -> None:
    with pytest.raises(ValueError, match="max_margin_pct"):
        check_margin(impact(0.0, 1.0, 1.0), net_liquidation=1.0, max_margin_pct=pct)
