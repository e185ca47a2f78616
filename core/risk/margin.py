"""The what-if margin limit: an entry whose post-trade initial margin would exceed a share
of net liquidation is refused before its first order goes out.

The figure is the broker's own (IB what-if on the exact BAG order), so it carries IB's
Reg-T rules and everything else already in the account. Unknown is refused: an unset
figure, an unknown net liquidation or a broker that did not answer never passes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from core.domain import MarginImpact


@dataclass(frozen=True, slots=True)
class MarginCheck:
    """The verdict, with the numbers it stands on (NaN where unknown) and why."""

    ok: bool
    post_trade_initial: float
    limit: float
    reason: str


def check_margin(
    impact: MarginImpact, *, net_liquidation: float, max_margin_pct: float
) -> MarginCheck:
    """Refuse when post-trade initial margin > `max_margin_pct` % of net liquidation,
    or when either is unknown."""
    if not (math.isfinite(max_margin_pct) and 0 < max_margin_pct <= 100):
        raise ValueError(f"max_margin_pct must be in (0, 100], got {max_margin_pct}")
    post = impact.post_trade_initial
    post_f = math.nan if post is None else post
    if not (math.isfinite(net_liquidation) and net_liquidation > 0):
        return MarginCheck(
            False,
            post_f,
            math.nan,
            f"margin: net liquidation {net_liquidation} is unknown; entry refused",
        )
    limit = max_margin_pct / 100 * net_liquidation
    if post is None:
        return MarginCheck(
            False,
            math.nan,
            limit,
            "margin: the broker's what-if left post-trade initial margin unknown "
            f"(initMarginAfter={impact.init_after}, initMarginBefore={impact.init_before}, "
            f"initMarginChange={impact.init_change}); entry refused",
        )
    desc = (
        f"post-trade initial margin {post:,.2f} (change {_fmt(impact.init_change)}) vs limit "
        f"{limit:,.2f} ({max_margin_pct:g}% of net liquidation {net_liquidation:,.2f})"
    )
    if post > limit:
        return MarginCheck(
            False,
            post,
            limit,
            f"margin: {desc}; entry refused (limits.max_margin_pct)",
        )
    return MarginCheck(True, post, limit, f"margin: {desc}")


def _fmt(value: float | None) -> str:
    return "unknown" if value is None else f"{value:+,.2f}"
