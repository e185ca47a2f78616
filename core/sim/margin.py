"""Strategy-based (Reg-T style) margin for the simulated account.

Options are grouped by (underlying, expiry); a group's requirement is the lower of (a) its
worst loss at expiry over every kink of the payoff (0, each strike, and 1.5x the top of
the range for the unbounded call side), ignoring premium, and (b) the Reg-T naked
requirement of its short options (20 % of the underlying less the OTM amount, floored at
10 %, plus the option's value). That gives exactly `width x multiplier x qty` for a
vertical spread and one side's width for an iron condor, and IB-like numbers for a naked
leg left over by a partial fill. Stock needs 50 % of its value, futures a fixed fraction
of notional.

Premium is handled by the caller through equity-with-loan value (options excluded), so
the buying-power effect of opening a credit spread is `width x multiplier x qty - credit`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import date
from typing import Final

import numpy as np

from core.domain import Contract, Right, SecType

STOCK_MARGIN: Final = 0.5
UPSIDE_STRESS: Final = 1.5
NAKED_RATE: Final = 0.20  # Reg-T naked equity option: 20 % of the underlying - OTM amount
NAKED_FLOOR: Final = 0.10  # ... but at least 10 % of the underlying (calls) / strike (puts)


def option_group_requirement(
    strikes: np.ndarray,
    quantities: np.ndarray,
    is_call: np.ndarray,
    multiplier: int,
    spot: float,
    marks: np.ndarray | None = None,
) -> float:
    """Requirement of one (underlying, expiry) group of option positions: the lower of
    its worst expiry loss and the Reg-T naked requirement of its short options."""
    if len(strikes) == 0:
        return 0.0
    top = UPSIDE_STRESS * max(float(strikes.max()), spot)
    grid = np.concatenate([[0.0], strikes, [top]])
    diff = grid[:, None] - strikes[None, :]
    intrinsic = np.where(is_call[None, :], np.maximum(diff, 0.0), np.maximum(-diff, 0.0))
    payoff = intrinsic @ (quantities.astype(np.float64) * multiplier)
    worst = max(0.0, -float(payoff.min()))
    short = quantities < 0
    if not short.any():
        return worst
    premium = np.zeros(len(strikes)) if marks is None else np.nan_to_num(marks)
    otm = np.where(is_call, np.maximum(strikes - spot, 0.0), np.maximum(spot - strikes, 0.0))
    floor = NAKED_FLOOR * np.where(is_call, spot, strikes)
    per_unit = np.maximum(NAKED_RATE * spot - otm, floor) + premium
    naked = float(np.sum(-quantities[short] * per_unit[short])) * multiplier
    return min(worst, naked)


def portfolio_margin(
    holdings: Iterable[tuple[Contract, int]],
    price: Callable[[Contract], float],
    spot: Callable[[str], float],
    futures_rate: Callable[[str], float],
) -> float:
    """Initial (= maintenance, in this model) margin of a set of signed holdings."""
    groups: dict[tuple[str, date, int], list[tuple[float, int, bool, float]]] = defaultdict(list)
    total = 0.0
    for c, qty in holdings:
        if qty == 0:
            continue
        if c.sec_type is SecType.OPT:
            assert c.expiry is not None and c.strike is not None
            groups[(c.symbol, c.expiry, c.multiplier)].append(
                (c.strike, qty, c.right is Right.CALL, price(c))
            )
        elif c.sec_type is SecType.STK:
            total += STOCK_MARGIN * abs(qty) * price(c) * c.multiplier
        elif c.sec_type is SecType.FUT:
            total += futures_rate(c.symbol) * abs(qty) * price(c) * c.multiplier
    for (symbol, _, mult), legs in groups.items():
        arr = np.array(legs, dtype=np.float64)
        total += option_group_requirement(
            arr[:, 0], arr[:, 1], arr[:, 2].astype(bool), mult, spot(symbol), arr[:, 3]
        )
    return total
