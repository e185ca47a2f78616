"""What a strategy holds and what its entry earned, read from the book (units, legs,
entry credit): the executor's view before it decides what to send."""

from __future__ import annotations

import math
from collections.abc import Sequence

import polars as pl

from core.book.ledger import Book
from core.domain import Contract, SecType
from core.domain.frames import contract_from_row
from core.domain.strategies import IntentPurpose
from core.execution.intents import strategy_intents

ENTRY_PURPOSES = (IntentPurpose.OPEN,)

Legs = list[tuple[Contract, int]]  # (contract, signed ratio per strategy unit)


def held_units(book: Book, strategy_id: str, legs: Sequence[tuple[Contract, int]]) -> int:
    """Whole strategy units held now in `legs` (min over legs of quantity / ratio)."""
    pos = _positions(book, strategy_id).select("con_id", "quantity")
    return _units(dict(pos.iter_rows()), legs)


def entry_units(book: Book, strategy_id: str, legs: Sequence[tuple[Contract, int]]) -> int:
    """Whole units the strategy's entry orders filled (exits since do not count: a retry
    of an entry that was later reduced must not buy the reduction back)."""
    per = _entry_fills(book, strategy_id).group_by("con_id").agg(pl.col("quantity").sum())
    return _units(dict(per.iter_rows()), legs)


def holding(book: Book, strategy_id: str) -> tuple[int, Legs, str]:
    """(units, [(contract, ratio per unit)], problem) of the strategy's open option legs.

    Stock an assignment or exercise delivered into the strategy is not a unit of it (100
    shares against a 1-lot spread): `delivered_stock` lists it, to be closed on its own."""
    pos = _positions(book, strategy_id).filter(
        (pl.col("quantity") != 0) & (pl.col("sec_type") != SecType.STK.value)
    )
    if pos.is_empty():
        return 0, [], ""
    legs: Legs = []
    units: set[int] = set()
    for r in pos.iter_rows(named=True):
        q, ratio = int(r["quantity"]), int(r["ratio"])
        if ratio == 0 or q % ratio != 0 or q // ratio <= 0:
            return (
                0,
                [],
                (
                    f"leg {r['leg_id']} holds {q} against ratio {ratio}: not a whole number "
                    "of strategy units; close it leg by leg"
                ),
            )
        units.add(q // ratio)
        legs.append((contract_from_row(r), ratio))
    if len(units) != 1:
        return 0, [], f"legs hold different numbers of units {sorted(units)}; not one combo"
    return units.pop(), legs, ""


def delivered_stock(book: Book, strategy_id: str) -> Legs:
    """[(stock contract, signed shares held)] that assignment or exercise put in the
    strategy (reconciliation books it there, as the broker's positions show it)."""
    pos = _positions(book, strategy_id).filter(
        (pl.col("quantity") != 0) & (pl.col("sec_type") == SecType.STK.value)
    )
    return [(contract_from_row(r), int(r["quantity"])) for r in pos.iter_rows(named=True)]


def booked_legs(book: Book, strategy_id: str) -> Legs:
    """Every leg the book has for the strategy, open or not, with its ratio."""
    return [
        (contract_from_row(r), int(r["ratio"]))
        for r in book.legs(strategy_id).iter_rows(named=True)
    ]


def entry_credit(book: Book, strategy_id: str, units: int) -> float:
    """Credit per unit received by the strategy's entry fills (from the book)."""
    fills = _entry_fills(book, strategy_id)
    if fills.is_empty() or units <= 0:
        return math.nan
    paid = float(fills.select((pl.col("quantity") * pl.col("price")).sum()).item())
    return -paid / units


def _entry_fills(book: Book, strategy_id: str) -> pl.DataFrame:
    refs = strategy_intents(book.store, strategy_id, ENTRY_PURPOSES)["order_ref"]
    return book.fills(strategy_id).filter(pl.col("order_ref").is_in(refs.implode()))


def _positions(book: Book, strategy_id: str) -> pl.DataFrame:
    return book.leg_positions(open_only=False).filter(pl.col("strategy_id") == strategy_id)


def _units(have: dict[int, int], legs: Sequence[tuple[Contract, int]]) -> int:
    """Whole strategy units in per-contract quantities `have` (0 on a wrong-signed leg)."""
    units = [
        int(have.get(c.con_id, 0)) // r if r > 0 else int(-have.get(c.con_id, 0)) // -r
        for c, r in legs
    ]
    return max(0, min(units)) if units else 0
