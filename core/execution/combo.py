"""Combo (BAG) orders: contract, prices and the repricing ladder.

Conventions (those of `SimExchange` and IB): a BAG's legs carry their own BUY/SELL and
ratio; V6 always sends **BUY** of a combo written as the trade it wants (an entry: the
strategy's legs as held, short legs SELL; an exit: the legs reversed). The limit of a BUY
combo is the net debit per combo unit, so a credit is a negative limit. The combo's quote
in that direction, from the legs' quotes:

    ask (natural) = sum(BUY legs: ratio x ask) - sum(SELL legs: ratio x bid)  what crossing costs
    bid           = sum(BUY legs: ratio x bid) - sum(SELL legs: ratio x ask)
    mid           = (bid + ask) / 2

The ladder starts at mid and walks to natural in `steps` equal steps, rounded to the tick
*away* from natural (never more aggressive than the step asks), never beyond natural, and
never above `cap`: for an order that is a credit at mid, cap = -(min credit) so repricing
can give up edge but never turn the credit into a debit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import reduce

import polars as pl

from core.domain import Action, ComboLeg, Contract, Execution, Quote, SecType
from core.risk.exposure import worst_expiry_value

TICK = 0.01  # options and option combos on SMART: one cent
_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class ComboQuote:
    """Net quote of a combo in the BUY direction (debit; negative = credit)."""

    bid: float
    ask: float

    @property
    def mid(self) -> float:
        return (self.bid + self.ask) / 2.0

    @property
    def natural(self) -> float:
        return self.ask

    @property
    def ok(self) -> bool:
        return math.isfinite(self.bid) and math.isfinite(self.ask) and self.bid <= self.ask + _EPS


def net_legs(legs: Sequence[tuple[Contract, int]]) -> list[tuple[Contract, int]]:
    """Legs with one entry per con_id (ratios summed, zeros dropped), order kept."""
    out: dict[int, tuple[Contract, int]] = {}
    for contract, ratio in legs:
        if contract.con_id <= 0:
            raise ValueError(
                f"combo leg {contract.describe()} has con_id {contract.con_id}: qualify it first"
            )
        c, r = out.get(contract.con_id, (contract, 0))
        out[contract.con_id] = (c, r + ratio)
    return [(c, r) for c, r in out.values() if r != 0]


def combo_contract(symbol: str, legs: Sequence[tuple[Contract, int]]) -> tuple[Contract, int]:
    """(BAG contract, units per strategy unit): signed ratios become BUY/SELL legs, reduced by
    their greatest common divisor g (a 2:2 combo is a 1:1 combo bought 2x)."""
    netted = net_legs(legs)
    if not netted:
        raise ValueError(f"combo on {symbol}: every leg nets to zero; nothing to trade")
    g = reduce(math.gcd, (abs(r) for _, r in netted))
    combo_legs = [
        ComboLeg(con_id=c.con_id, ratio=abs(r) // g, action="BUY" if r > 0 else "SELL")
        for c, r in netted
    ]
    return Contract.combo(symbol, combo_legs), g


def combo_quote(legs: Sequence[tuple[Contract, int]], quotes: Sequence[Quote]) -> ComboQuote:
    """Net quote per strategy unit from the legs' quotes (in `legs` order)."""
    bid = ask = 0.0
    for (_, r), q in zip(legs, quotes, strict=True):
        if r > 0:
            ask += r * q.ask
            bid += r * q.bid
        else:
            ask += r * q.bid  # r < 0: selling receives the bid
            bid += r * q.ask
    bad = any(
        not (math.isfinite(q.bid) and math.isfinite(q.ask)) or q.is_crossed or q.stale
        for q in quotes
    )
    if bad:
        return ComboQuote(math.nan, math.nan)
    return ComboQuote(round(bid, 6), round(ask, 6))


def ladder_price(
    quote: ComboQuote, step: int, steps: int, *, cap: float | None = None, tick: float = TICK
) -> float | None:
    """The BUY limit of step `step` of `steps` (0 = mid, `steps` = natural), or None when no
    price within the bounds exists (mid is already beyond `cap`)."""
    if not quote.ok:
        return None
    if steps < 0 or not 0 <= step <= max(steps, 0):
        raise ValueError(f"ladder step {step} outside 0..{steps}")
    frac = step / steps if steps > 0 else 0.0
    raw = quote.mid + (quote.natural - quote.mid) * frac
    price = math.floor(raw / tick + _EPS) * tick  # round toward the passive side
    price = min(price, quote.natural)
    if cap is not None:
        if math.floor(quote.mid / tick + _EPS) * tick > cap + _EPS:
            return None
        price = min(price, math.floor(cap / tick + _EPS) * tick)
    return round(price, 6)


def credit_cap(quote: ComboQuote, min_credit: float, tick: float = TICK) -> float | None:
    """The highest BUY limit allowed for an order that is a credit at mid: -max(min_credit,
    one tick). None (no cap) for a debit order."""
    if not quote.ok or quote.mid >= 0:
        return None
    return -max(min_credit, tick)


def fill_price(
    executions: Sequence[Execution], legs: Sequence[tuple[Contract, int]]
) -> tuple[int, float]:
    """(strategy units filled, average net debit per unit) from one combo order's executions."""
    ratio = {c.con_id: r for c, r in legs}
    per_leg: dict[int, int] = {}
    net = 0.0
    for e in executions:
        r = ratio.get(e.contract.con_id)
        if r is None:
            continue
        sign = 1.0 if e.side is Action.BUY else -1.0
        net += sign * e.quantity * e.price
        per_leg[e.contract.con_id] = per_leg.get(e.contract.con_id, 0) + e.quantity
    if not per_leg or len(per_leg) < len(ratio):
        return 0, math.nan
    units = min(per_leg[c] // abs(ratio[c]) for c in ratio)
    return units, (net / units if units else math.nan)


def order_legs_frame(
    strategy_id: str,
    underlying: str,
    legs: Sequence[tuple[Contract, int]],
    units: int,
    stock_price: float = math.nan,
) -> pl.DataFrame:
    """The order's legs in the shape `core.risk.limits.check_hard_caps` takes (plus the
    sec_type and right `order_max_loss` needs). A stock leg has no strike: its notional
    and expiry value use `stock_price` (the order's limit) in that column."""
    return pl.DataFrame(
        {
            "strategy_id": [strategy_id] * len(legs),
            "underlying": [underlying] * len(legs),
            "quantity": [r * units for _, r in legs],
            "delta": [None] * len(legs),
            "multiplier": [c.multiplier for c, _ in legs],
            "strike": [stock_price if c.sec_type is SecType.STK else c.strike for c, _ in legs],
            "sec_type": [c.sec_type.value for c, _ in legs],
            "right": [c.right.value if c.right else None for c, _ in legs],
        },
        schema={
            "strategy_id": pl.String,
            "underlying": pl.String,
            "quantity": pl.Int64,
            "delta": pl.Float64,
            "multiplier": pl.Int64,
            "strike": pl.Float64,
            "sec_type": pl.String,
            "right": pl.String,
        },
    )


def order_max_loss(legs: pl.DataFrame, limit_total: float) -> float:
    """The worst loss (USD) of a combo order of `legs` (`order_legs_frame`) bought at a
    limit of `limit_total` per point (limit price x units; negative = a credit): the premium
    it can pay, at most the limit, minus its worst expiry value. NaN without a price."""
    if not math.isfinite(limit_total):
        return math.nan
    multiplier = legs.select(pl.col("multiplier").max().cast(pl.Float64)).item()
    worst = worst_expiry_value(legs, "strategy_id").select(pl.col("worst").min()).item()
    return max(0.0, limit_total * float(multiplier or 0.0) - float(worst or 0.0))


__all__ = [
    "TICK",
    "ComboQuote",
    "combo_contract",
    "combo_quote",
    "credit_cap",
    "fill_price",
    "ladder_price",
    "net_legs",
    "order_legs_frame",
    "order_max_loss",
]
