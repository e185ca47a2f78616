"""Broker contracts, described the way IB does, independent of any client library."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date
from enum import StrEnum


class SecType(StrEnum):
    STK = "STK"
    OPT = "OPT"
    FUT = "FUT"
    IND = "IND"
    BAG = "BAG"


class Right(StrEnum):
    CALL = "C"
    PUT = "P"


@dataclass(frozen=True, slots=True)
class ComboLeg:
    """One leg of a BAG (combo) contract: `ratio` contracts of `con_id` per combo unit."""

    con_id: int
    ratio: int
    action: str  # "BUY" | "SELL" (kept as text so this module needs nothing else)

    def __post_init__(self) -> None:
        if self.con_id <= 0:
            raise ValueError(f"ComboLeg.con_id must be a qualified conId > 0, got {self.con_id}")
        if self.ratio <= 0:
            raise ValueError(f"ComboLeg.ratio must be a positive integer, got {self.ratio}")
        if self.action not in ("BUY", "SELL"):
            raise ValueError(f"ComboLeg.action must be 'BUY' or 'SELL', got {self.action!r}")


@dataclass(frozen=True, slots=True)
class Contract:
    """A tradable instrument. `con_id` is 0 until the broker has qualified it."""

    symbol: str
    sec_type: SecType
    expiry: date | None = None
    strike: float | None = None
    right: Right | None = None
    multiplier: int = 1
    exchange: str = "SMART"
    currency: str = "USD"
    con_id: int = 0
    local_symbol: str = ""
    trading_class: str = ""
    combo_legs: tuple[ComboLeg, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.symbol:
            raise ValueError("Contract.symbol must be non-empty")
        if self.sec_type is SecType.OPT:
            if self.expiry is None or self.strike is None or self.right is None:
                raise ValueError(
                    f"option contract {self.symbol} needs expiry, strike and right "
                    f"(got expiry={self.expiry}, strike={self.strike}, right={self.right})"
                )
            if not self.strike > 0:
                raise ValueError(f"Contract.strike must be > 0, got {self.strike}")
        if self.sec_type is SecType.FUT and self.expiry is None:
            raise ValueError(f"future contract {self.symbol} needs an expiry")
        if self.sec_type is SecType.BAG and not self.combo_legs:
            raise ValueError(f"BAG contract {self.symbol} needs at least one combo leg")
        if self.multiplier <= 0:
            raise ValueError(
                f"Contract.multiplier must be a positive integer, got {self.multiplier}"
            )

    # -- constructors that spell the common cases --------------------------------------
    @classmethod
    def stock(cls, symbol: str) -> Contract:
        return cls(symbol=symbol, sec_type=SecType.STK)

    @classmethod
    def index(cls, symbol: str, exchange: str = "CBOE") -> Contract:
        return cls(symbol=symbol, sec_type=SecType.IND, exchange=exchange)

    @classmethod
    def option(
        cls, symbol: str, expiry: date, strike: float, right: Right | str, multiplier: int = 100
    ) -> Contract:
        return cls(
            symbol=symbol,
            sec_type=SecType.OPT,
            expiry=expiry,
            strike=float(strike),
            right=Right(right),
            multiplier=multiplier,
        )

    @classmethod
    def future(cls, symbol: str, expiry: date, multiplier: int, exchange: str = "CME") -> Contract:
        return cls(
            symbol=symbol,
            sec_type=SecType.FUT,
            expiry=expiry,
            multiplier=multiplier,
            exchange=exchange,
        )

    @classmethod
    def combo(cls, symbol: str, legs: tuple[ComboLeg, ...] | list[ComboLeg]) -> Contract:
        return cls(symbol=symbol, sec_type=SecType.BAG, combo_legs=tuple(legs), multiplier=100)

    @property
    def key(self) -> tuple[str, str, date | None, float | None, str | None]:
        """Identity independent of a broker's conId (matches unqualified contracts)."""
        return (
            self.symbol,
            self.sec_type.value,
            self.expiry,
            self.strike,
            self.right.value if self.right else None,
        )

    def with_con_id(self, con_id: int, **changes: object) -> Contract:
        return replace(self, con_id=con_id, **changes)  # type: ignore[arg-type]

    def describe(self) -> str:
        """Human label, e.g. 'SPY 2026-04-17 500P'."""
        if self.sec_type is SecType.OPT:
            assert self.right is not None and self.strike is not None
            return f"{self.symbol} {self.expiry} {self.strike:g}{self.right.value}"
        if self.sec_type is SecType.FUT:
            return f"{self.symbol} FUT {self.expiry}"
        return f"{self.symbol} {self.sec_type.value}"


@dataclass(frozen=True, slots=True)
class OptionChain:
    """Expirations and strikes available for an underlying (IB's secDefOptParams)."""

    underlying: str
    underlying_con_id: int
    exchange: str
    trading_class: str
    multiplier: int
    expirations: tuple[date, ...]
    strikes: tuple[float, ...]
