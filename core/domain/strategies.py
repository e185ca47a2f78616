"""Strategies as every layer speaks of them: types, origins and states, leg states, close
reasons, intent purposes and fill sources, plus the legs and deterministic ids.

One vocabulary for the book, reconciliation, the store's schemas and the exit rules, so a
strategy type written by one is read unchanged by the others.

Ids are deterministic (a hash of what the thing *is*), so a flow that crashes and re-runs
produces the same strategy, leg and fill ids, and idempotent merges make the replay a no-op.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from core.domain.contracts import Contract, SecType
from core.domain.order_refs import check_strategy_id


class StrategyType(StrEnum):
    IRON_CONDOR = "iron_condor"
    BULL_PUT_SPREAD = "bull_put_spread"
    BEAR_CALL_SPREAD = "bear_call_spread"
    VERTICAL = "vertical"
    SINGLE = "single"
    EXTERNAL = "external"  # adopted from the broker; rules never trade it until a person tags it

    @property
    def abbrev(self) -> str:
        return _ABBREV[self]


_ABBREV = {
    StrategyType.IRON_CONDOR: "ic",
    StrategyType.BULL_PUT_SPREAD: "bps",
    StrategyType.BEAR_CALL_SPREAD: "bcs",
    StrategyType.VERTICAL: "vert",
    StrategyType.SINGLE: "single",
    StrategyType.EXTERNAL: "ext",
}


class Origin(StrEnum):
    V6 = "v6"
    EXTERNAL = "external"


class StrategyStatus(StrEnum):
    PENDING = "PENDING"  # intent recorded, nothing filled yet
    OPEN = "OPEN"  # at least one leg holds a position
    CLOSED = "CLOSED"  # every leg flat after having been filled
    CANCELLED = "CANCELLED"  # never filled and given up


class LegStatus(StrEnum):
    PENDING = "PENDING"
    OPEN = "OPEN"
    CLOSED = "CLOSED"


class CloseReason(StrEnum):
    CLOSED = "closed"  # closed by V6's own orders
    EXPIRED = "expired"
    ASSIGNED = "assigned"
    EXERCISED = "exercised"
    CLOSED_EXTERNALLY = "closed_externally"  # closed by someone else (TWS, phone, another app)
    CANCELLED = "cancelled"


class FillSource(StrEnum):
    BROKER = "broker"  # a real execution the broker reported
    RECONCILIATION = "reconciliation"  # synthetic: makes the book agree with the broker's position
    EXPIRY = "expiry"  # synthetic: an option that expired
    ASSIGNMENT = "assignment"  # synthetic: short option assigned, and the stock it delivered
    EXERCISE = "exercise"  # synthetic: long option exercised, and the stock it delivered


class IntentPurpose(StrEnum):
    OPEN = "open"
    CLOSE = "close"
    REDUCE = "reduce"
    ROLL = "roll"
    ADJUST = "adjust"


@dataclass(frozen=True, slots=True)
class LegSpec:
    """One leg of a strategy: a qualified contract and its signed ratio per strategy unit
    (e.g. an iron condor is +1 long put, -1 short put, -1 short call, +1 long call)."""

    contract: Contract
    ratio: int

    def __post_init__(self) -> None:
        if self.contract.con_id <= 0:
            raise ValueError(
                f"LegSpec.contract {self.contract.describe()} has con_id {self.contract.con_id}: "
                "qualify the contract with the broker first"
            )
        if self.contract.sec_type is SecType.BAG:
            raise ValueError("LegSpec.contract must be a single instrument, not a BAG")
        if not isinstance(self.ratio, int) or self.ratio == 0:
            raise ValueError(f"LegSpec.ratio must be a non-zero signed integer, got {self.ratio!r}")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_") or "X"


def short_hash(*parts: object, n: int = 10) -> str:
    """A stable hex digest of `parts` (stable across processes, unlike `hash()`)."""
    h = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=16)
    return h.hexdigest()[:n]


def strategy_id_for(
    strategy_type: StrategyType | str,
    underlying: str,
    legs: Sequence[LegSpec],
    opened_on: date,
    nonce: int = 0,
) -> str:
    """Deterministic strategy id, e.g. `ic-SPY-20260302-3f9a0c1d2e`.

    The same entry decided twice (a retry) gets the same id; `nonce` distinguishes a
    deliberate second, identical strategy on the same day.
    """
    st = StrategyType(strategy_type)
    if not legs:
        raise ValueError("strategy_id_for needs at least one leg")
    body = sorted((leg.contract.con_id, leg.ratio) for leg in legs)
    digest = short_hash(st.value, underlying, body, opened_on.isoformat(), nonce)
    return check_strategy_id(f"{st.abbrev}-{_slug(underlying)}-{opened_on:%Y%m%d}-{digest}")


def external_strategy_id(symbol: str, con_ids: Sequence[int], seen_on: date, salt: object) -> str:
    """Id of an EXTERNAL strategy adopted for `symbol`; `salt` is the book's state fingerprint so
    a later, separate adoption of the same contracts gets a new id."""
    digest = short_hash("external", symbol, sorted(con_ids), seen_on.isoformat(), salt)
    return check_strategy_id(f"ext-{_slug(symbol)}-{seen_on:%Y%m%d}-{digest}")


def leg_id_for(strategy_id: str, leg_index: int) -> str:
    return f"{check_strategy_id(strategy_id)}:L{leg_index}"
