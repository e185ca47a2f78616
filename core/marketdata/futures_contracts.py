"""Which futures contract is "the front", and when it rolls.

Roll rule (documented, deterministic, no market data needed):

* ES, NQ and RTY list quarterly contracts: March (H), June (M), September (U),
  December (Z). Each expires on the third Friday of its month (final settlement is the
  index's opening quotation that day), or on the NYSE session before it when that
  Friday is an NYSE holiday (e.g. Juneteenth, Fri 2026-06-19 -> Thu 2026-06-18).
* The *roll date* of a contract is its month's third Friday minus N calendar days,
  where N = ``UniverseSettings.futures_roll_days_before_expiry`` (default 8). With the
  default that is the Thursday of the week before expiry: CME's published roll date for
  equity-index futures, the day liquidity moves to the next quarter. The nominal third
  Friday is used so a settlement holiday never moves the roll.
* Time is counted in CME *trade dates*: the Globex session for trade date D opens at
  17:00 America/Chicago on the evening before D. So the front contract switches when
  the session of the roll date opens (17:00 CT the evening before), never mid-session.
* The front contract on trade date D is the first quarterly contract whose roll
  date is after D. On the roll date itself the next contract is already the front.

Rolling by days to expiry (not by volume) keeps the choice reproducible from the
date alone: a backfill, a backtest and a live run all agree on the contract.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import polars as pl

from core.domain import Contract, SecType
from core.marketdata.sessions import session_on_or_before

CME_TZ = ZoneInfo("America/Chicago")
# A Globex session opens at 17:00 CT the evening before its trade date: +7 h maps it onto D.
SESSION_OFFSET = timedelta(hours=7)
QUARTER_CODES: dict[int, str] = {3: "H", 6: "M", 9: "U", 12: "Z"}
SETTLEMENT_CALENDAR = "XNYS"


@dataclass(frozen=True, slots=True)
class FutureSpec:
    """Static facts of one futures root (IB's description of it)."""

    root: str
    multiplier: int
    exchange: str
    description: str


FUTURE_SPECS: dict[str, FutureSpec] = {
    "ES": FutureSpec("ES", 50, "CME", "E-mini S&P 500"),
    "NQ": FutureSpec("NQ", 20, "CME", "E-mini Nasdaq-100"),
    "RTY": FutureSpec("RTY", 50, "CME", "E-mini Russell 2000"),
}


def future_spec(symbol: str) -> FutureSpec:
    """The spec for `symbol`, or a clear error listing the supported roots."""
    try:
        return FUTURE_SPECS[symbol.upper()]
    except KeyError:
        known = ", ".join(sorted(FUTURE_SPECS))
        raise ValueError(
            f"universe.futures: unknown futures root {symbol!r}; supported roots are {known} "
            "(add a FutureSpec in core/marketdata/futures_contracts.py to support another)"
        ) from None


def third_friday(year: int, month: int) -> date:
    """Expiry of a quarterly equity-index future: the third Friday of its month."""
    first = date(year, month, 1)
    first_friday = first + timedelta(days=(4 - first.weekday()) % 7)
    return first_friday + timedelta(days=14)


def expiry_date(year: int, month: int) -> date:
    """Last trading day of a quarterly contract: the third Friday, or the NYSE session
    before it when that Friday is a holiday (the settlement needs an NYSE open)."""
    return session_on_or_before(SETTLEMENT_CALENDAR, third_friday(year, month))


def quarterly_expiries(start: date, count: int) -> list[date]:
    """`count` quarterly expiries, the first being the one in or after `start`'s quarter month."""
    year, month = start.year, ((start.month - 1) // 3 + 1) * 3
    out: list[date] = []
    while len(out) < count:
        out.append(expiry_date(year, month))
        month += 3
        if month > 12:
            year, month = year + 1, 3
    return out


def roll_date(expiry: date, days_before_expiry: int) -> date:
    """First trade date on which the contract expiring in `expiry`'s month is no longer the
    front: N days before the month's third Friday (the nominal expiry, so a settlement
    holiday does not move the roll)."""
    if days_before_expiry < 0:
        raise ValueError(f"futures_roll_days_before_expiry must be >= 0, got {days_before_expiry}")
    return third_friday(expiry.year, expiry.month) - timedelta(days=days_before_expiry)


def trade_date(ts: datetime) -> date:
    """CME trade date of an instant: the session opening 17:00 CT belongs to the next day."""
    if ts.tzinfo is None:
        raise ValueError(f"trade_date needs a tz-aware datetime, got naive {ts!r}")
    return (ts.astimezone(CME_TZ) + SESSION_OFFSET).date()


def trade_date_expr(ts: str | pl.Expr = "ts") -> pl.Expr:
    """Vectorised `trade_date` for a UTC timestamp column."""
    col = pl.col(ts) if isinstance(ts, str) else ts
    return col.dt.convert_time_zone(str(CME_TZ)).dt.offset_by("7h").dt.date()


def front_expiry(on: date, days_before_expiry: int) -> date:
    """Expiry of the front contract on trade date `on` (see the module docstring)."""
    # The front expires at most ~3 months + N days after `on`; scanning 3 candidates suffices
    # while N stays below a quarter.
    if days_before_expiry >= 80:
        raise ValueError(
            f"futures_roll_days_before_expiry={days_before_expiry} would roll before the previous "
            "contract expires; use a value below 80 days"
        )
    for expiry in quarterly_expiries(on, 3):
        if on < roll_date(expiry, days_before_expiry):
            return expiry
    raise AssertionError("unreachable: three quarterly expiries always include the front")


def local_symbol(symbol: str, expiry: date) -> str:
    """IB's local symbol for a quarterly future, e.g. ESM6 for ES expiring June 2026."""
    code = QUARTER_CODES.get(expiry.month)
    if code is None:
        raise ValueError(f"{symbol} expiry {expiry} is not in a quarterly month (Mar/Jun/Sep/Dec)")
    return f"{symbol.upper()}{code}{expiry.year % 10}"


def front_contract(symbol: str, now: datetime, days_before_expiry: int) -> Contract:
    """The (unqualified) front contract of `symbol` at `now`; ask the broker to qualify it."""
    spec = future_spec(symbol)
    expiry = front_expiry(trade_date(now), days_before_expiry)
    return Contract(
        symbol=spec.root,
        sec_type=SecType.FUT,
        expiry=expiry,
        multiplier=spec.multiplier,
        exchange=spec.exchange,
        local_symbol=local_symbol(spec.root, expiry),
        trading_class=spec.root,
    )


def next_roll(symbol: str, now: datetime, days_before_expiry: int) -> datetime:
    """When the front of `symbol` next changes: 17:00 CT on the evening before the roll date."""
    future_spec(symbol)
    expiry = front_expiry(trade_date(now), days_before_expiry)
    day = roll_date(expiry, days_before_expiry) - timedelta(days=1)
    return datetime(day.year, day.month, day.day, 17, tzinfo=CME_TZ).astimezone(UTC)
