"""The front-contract roll rule: quarterly contracts, third-Friday expiry, roll N days before."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from core.domain import SecType
from core.marketdata.futures_contracts import (
    front_contract,
    front_expiry,
    local_symbol,
    next_roll,
    quarterly_expiries,
    roll_date,
    third_friday,
    trade_date,
)


@pytest.mark.parametrize(
    ("year", "month", "expected"),
    [
        (2026, 3, date(2026, 3, 20)),
        (2026, 6, date(2026, 6, 19)),
        (2026, 9, date(2026, 9, 18)),
        (2026, 12, date(2026, 12, 18)),
        (2027, 3, date(2027, 3, 19)),
    ],
)
def test_third_friday(year: int, month: int, expected: date) -> None:
    assert third_friday(year, month) == expected
    assert expected.weekday() == 4


def test_default_roll_date_is_the_thursday_of_the_week_before_expiry() -> None:
    # 8 days before the third Friday is the Thursday of the previous week: CME's roll date.
    for expiry in quarterly_expiries(date(2026, 1, 1), 20):
        rd = roll_date(expiry, 8)
        assert rd.weekday() == 3
        assert rd.isocalendar().week == (expiry - timedelta(days=7)).isocalendar().week


def test_expiry_moves_before_an_nyse_holiday_but_the_roll_does_not() -> None:
    # Fri 2026-06-19 is Juneteenth (NYSE closed): ESM6 settles Thu 2026-06-18.
    june = front_contract("ES", datetime(2026, 6, 1, 15, tzinfo=UTC), 8)
    assert (june.local_symbol, june.expiry) == ("ESM6", date(2026, 6, 18))
    assert roll_date(date(2026, 6, 18), 8) == date(2026, 6, 11)
    # Good Friday 2027 is 3/26, not the third Friday (3/19): no shift then.
    assert quarterly_expiries(date(2027, 1, 1), 1) == [date(2027, 3, 19)]


def test_roll_happens_when_the_roll_date_session_opens() -> None:
    # ESM6's nominal expiry is Fri 2026-06-19; roll date Thu 2026-06-11, whose Globex
    # session opens Wed 2026-06-10 17:00 CDT = 22:00 UTC.
    before = datetime(2026, 6, 10, 21, 59, tzinfo=UTC)
    at = datetime(2026, 6, 10, 22, 0, tzinfo=UTC)
    assert front_contract("ES", before, 8).local_symbol == "ESM6"
    after = front_contract("ES", at, 8)
    assert after.local_symbol == "ESU6"
    assert after.expiry == date(2026, 9, 18)
    assert next_roll("ES", before, 8) == at


def test_roll_days_setting_moves_the_roll() -> None:
    day = datetime(2026, 6, 15, 15, 0, tzinfo=UTC)  # Monday of expiry week
    assert front_contract("ES", day, 8).local_symbol == "ESU6"
    assert front_contract("ES", day, 3).local_symbol == "ESM6"
    assert front_contract("ES", datetime(2026, 6, 16, 15, tzinfo=UTC), 3).local_symbol == "ESU6"


def test_year_boundary_rolls_into_march() -> None:
    assert front_contract("NQ", datetime(2026, 12, 11, 15, tzinfo=UTC), 8).local_symbol == "NQH7"
    assert front_contract("NQ", datetime(2026, 12, 9, 15, tzinfo=UTC), 8).local_symbol == "NQZ6"


def test_front_is_never_expired_nor_past_the_next_quarter() -> None:
    day = date(2026, 1, 1)
    for _ in range(3 * 366):
        exp = front_expiry(day, 8)
        assert exp - day >= timedelta(days=8)  # 9+ unless a holiday moved the expiry
        assert exp - day <= timedelta(days=92 + 8 + 7)
        day += timedelta(days=1)


def test_contract_fields_and_multipliers() -> None:
    now = datetime(2026, 3, 2, 15, tzinfo=UTC)
    got = {s: front_contract(s, now, 8) for s in ("ES", "NQ", "RTY")}
    assert {s: c.multiplier for s, c in got.items()} == {"ES": 50, "NQ": 20, "RTY": 50}
    assert all(c.sec_type is SecType.FUT and c.exchange == "CME" for c in got.values())
    assert got["RTY"].local_symbol == "RTYH6"
    assert local_symbol("ES", date(2029, 9, 21)) == "ESU9"


def test_trade_date_follows_globex_session() -> None:
    # Sunday 17:00 CT opens Monday's session.
    assert trade_date(datetime(2026, 3, 1, 23, 0, tzinfo=UTC)) == date(2026, 3, 2)
    assert trade_date(datetime(2026, 3, 1, 22, 59, tzinfo=UTC)) == date(2026, 3, 1)


def test_bad_inputs_name_the_problem() -> None:
    with pytest.raises(ValueError, match="unknown futures root 'CL'"):
        front_contract("CL", datetime(2026, 3, 2, tzinfo=UTC), 8)
    with pytest.raises(ValueError, match="tz-aware"):
        trade_date(datetime(2026, 3, 2))
    with pytest.raises(ValueError, match="below 80 days"):
        front_expiry(date(2026, 3, 2), 90)
