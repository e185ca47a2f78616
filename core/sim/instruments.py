"""Static facts about the simulated instruments: start prices, ticks, multipliers, con_ids.

Defaults are close to the real instruments in early 2026 so that numbers on a demo
screen look familiar (SPY ~680, ES ~6,830, VIX mid-teens). Unknown symbols get a generic
profile so any universe in the config can be simulated.

con_ids are *structured*, not random: an option's con_id encodes its underlying, expiry
week, right and strike, so `contract_by_id` decodes it without a registry, ids never
collide, and the same contract has the same id in every run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Final

from core.domain import Right

OPTION_ID_BASE: Final = 1_000_000_000
OPTION_ID_PER_SYMBOL: Final = 100_000_000
OPTION_WEEK_EPOCH: Final = date(2000, 1, 3)  # a Monday
OPTION_MAX_HALF_STRIKE: Final = 10_000  # strikes up to 4,999.5 in $0.50 steps
FUTURE_ID_BASE: Final = 600_000_000
FUTURE_ID_PER_SYMBOL: Final = 100_000
MAX_OPTION_SYMBOLS: Final = 11  # keeps every option con_id below 2**31


@dataclass(frozen=True, slots=True)
class UnderlyingProfile:
    """An optionable ETF/stock. Bands are fractions of the reference price."""

    symbol: str
    start_price: float
    con_id: int
    primary_exchange: str
    dividend_yield: float
    vol_beta: float  # realised-vol multiple of the market factor (used without a future)
    iv_beta: float  # ATM implied vol as a multiple of VIX/100
    fine_step: float  # strike spacing near the money
    fine_band: float  # +- band (fraction) where fine strikes are listed
    coarse_step: float
    wide_band: float  # +- band where any strikes are listed
    daily_volume: int  # shares per regular session, for bar volumes
    tick: float = 0.01


@dataclass(frozen=True, slots=True)
class FutureProfile:
    """A CME equity-index future. `start_price` is the spot-equivalent (zero-carry) level."""

    symbol: str
    start_price: float
    multiplier: int
    tick: float
    vol_beta: float
    daily_volume: int
    exchange: str = "CME"
    margin_rate: float = 0.06  # initial margin as a fraction of notional


_UNDERLYINGS: Final = {
    "SPY": UnderlyingProfile(
        "SPY", 680.0, 756733, "ARCA", 0.012, 1.0, 1.0, 1.0, 0.12, 5.0, 0.40, 60_000_000
    ),
    "QQQ": UnderlyingProfile(
        "QQQ", 610.0, 320227571, "NASDAQ", 0.006, 1.2, 1.2, 1.0, 0.12, 5.0, 0.40, 40_000_000
    ),
    "IWM": UnderlyingProfile(
        "IWM", 250.0, 9579970, "ARCA", 0.012, 1.3, 1.35, 1.0, 0.40, 1.0, 0.40, 30_000_000
    ),
}

_FUTURES: Final = {
    "ES": FutureProfile("ES", 6830.0, 50, 0.25, 1.0, 1_500_000),
    "NQ": FutureProfile("NQ", 25010.0, 20, 0.25, 1.2, 600_000),
    "RTY": FutureProfile("RTY", 2500.0, 50, 0.10, 1.3, 150_000),
}

VIX_CON_ID: Final = 13455763
GENERIC_STOCK_ID_BASE: Final = 100_000
GENERIC_INDEX_ID_BASE: Final = 200_000


def underlying_profile(symbol: str, index: int) -> UnderlyingProfile:
    """Known profile, or a generic $100 stock with $1 strikes (index keeps ids unique)."""
    known = _UNDERLYINGS.get(symbol)
    if known is not None:
        return known
    return UnderlyingProfile(
        symbol, 100.0, GENERIC_STOCK_ID_BASE + index, "ARCA", 0.01, 1.1, 1.2, 1.0, 0.15,
        5.0, 0.45, 5_000_000,
    )  # fmt: skip


def future_profile(symbol: str) -> FutureProfile:
    known = _FUTURES.get(symbol)
    if known is not None:
        return known
    return FutureProfile(symbol, 1000.0, 50, 0.25, 1.0, 100_000)


def index_con_id(symbol: str, index: int) -> int:
    return VIX_CON_ID if symbol == "VIX" else GENERIC_INDEX_ID_BASE + index


# -- con_id codec ---------------------------------------------------------------------
def option_con_id(symbol_index: int, expiry: date, right: Right, strike: float) -> int | None:
    """Structured id; None when the strike cannot be encoded (not a $0.50 multiple, too big)."""
    if not 0 <= symbol_index < MAX_OPTION_SYMBOLS:
        return None
    half = strike * 2.0
    half_i = round(half)
    if abs(half - half_i) > 1e-6 or not 0 < half_i < OPTION_MAX_HALF_STRIKE:
        return None
    week = (expiry - OPTION_WEEK_EPOCH).days // 7
    if not 0 <= week < OPTION_ID_PER_SYMBOL // 20_000:
        return None
    right_bit = 1 if right is Right.PUT else 0
    return (
        OPTION_ID_BASE
        + symbol_index * OPTION_ID_PER_SYMBOL
        + week * 20_000
        + right_bit * 10_000
        + half_i
    )


def decode_option_id(con_id: int) -> tuple[int, date, Right, float] | None:
    """(symbol_index, monday_of_expiry_week, right, strike), or None if not an option id."""
    if con_id < OPTION_ID_BASE:
        return None
    rest = con_id - OPTION_ID_BASE
    symbol_index, rest = divmod(rest, OPTION_ID_PER_SYMBOL)
    if symbol_index >= MAX_OPTION_SYMBOLS:
        return None
    week, rest = divmod(rest, 20_000)
    right_bit, half = divmod(rest, 10_000)
    if half == 0:
        return None
    monday = OPTION_WEEK_EPOCH + timedelta(days=7 * week)
    return symbol_index, monday, Right.PUT if right_bit else Right.CALL, half / 2.0


def future_con_id(symbol_index: int, expiry: date) -> int:
    return (
        FUTURE_ID_BASE
        + symbol_index * FUTURE_ID_PER_SYMBOL
        + (expiry.year - 2000) * 100
        + expiry.month
    )


def decode_future_id(con_id: int) -> tuple[int, int, int] | None:
    """(symbol_index, year, month) or None if the id is not in the futures range."""
    if not FUTURE_ID_BASE <= con_id < OPTION_ID_BASE:
        return None
    symbol_index, rest = divmod(con_id - FUTURE_ID_BASE, FUTURE_ID_PER_SYMBOL)
    year_off, month = divmod(rest, 100)
    if not 1 <= month <= 12:
        return None
    return symbol_index, 2000 + year_off, month
