"""Market data and account snapshots as the broker reports them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime

from core.domain.contracts import Contract


@dataclass(frozen=True, slots=True)
class Quote:
    """A snapshot of one contract. NaN means "the broker did not say"; never a silent zero.

    Greeks are per one unit of the underlying (IB's convention), not per contract.
    `stale` is set when the data is older than the caller's freshness bound or the
    broker flagged it frozen/delayed-frozen. `delayed`: the broker sent delayed data (IB
    market-data type 3/4, about `age_s` seconds behind the market); `age_s` is 0 for live
    data. `unavailable`: why the broker withheld this contract's data (an entitlement
    answer such as IB 354 or 10197, with its fix); '' when it did not.
    """

    contract: Contract
    time: datetime
    bid: float = math.nan
    ask: float = math.nan
    last: float = math.nan
    bid_size: int = 0
    ask_size: int = 0
    volume: int = 0
    iv: float = math.nan
    delta: float = math.nan
    gamma: float = math.nan
    vega: float = math.nan
    theta: float = math.nan
    underlying_price: float = math.nan
    stale: bool = False
    delayed: bool = False
    age_s: float = 0.0
    unavailable: str = ""

    @property
    def mid(self) -> float:
        if self.is_crossed or math.isnan(self.bid) or math.isnan(self.ask):
            return math.nan
        return (self.bid + self.ask) / 2.0

    @property
    def is_crossed(self) -> bool:
        return not (math.isnan(self.bid) or math.isnan(self.ask)) and self.bid > self.ask

    @property
    def has_greeks(self) -> bool:
        return not any(
            math.isnan(x) for x in (self.iv, self.delta, self.gamma, self.vega, self.theta)
        )


@dataclass(frozen=True, slots=True)
class Bar:
    """One OHLCV bar; `time` is the bar's start, UTC."""

    time: datetime
    open: float
    high: float
    low: float
    close: float
    volume: int
    wap: float = math.nan
    count: int = 0


@dataclass(frozen=True, slots=True)
class AccountSummary:
    account: str
    net_liquidation: float
    buying_power: float
    available_funds: float
    maintenance_margin: float
    realized_pnl: float = 0.0
    unrealized_pnl: float = 0.0
    currency: str = "USD"


@dataclass(frozen=True, slots=True)
class MarginImpact:
    """What a what-if order would do to the account's margin, as IB's OrderState says it.

    IB sends each figure as a string with its unset value for what it does not know;
    here unknown is None, never 0, so a check on it must refuse rather than pass.
    `*_before`/`*_after` are the whole account's, `*_change` the order's; a credit
    received shows in equity with loan, never as less initial margin (Reg-T).
    """

    init_before: float | None
    init_change: float | None
    init_after: float | None
    maint_before: float | None
    maint_change: float | None
    maint_after: float | None
    equity_with_loan_before: float | None
    equity_with_loan_change: float | None
    equity_with_loan_after: float | None

    @property
    def post_trade_initial(self) -> float | None:
        """Initial margin after the order: IB's `after`, else before + change, else None."""
        if self.init_after is not None:
            return self.init_after
        if self.init_before is not None and self.init_change is not None:
            return self.init_before + self.init_change
        return None


@dataclass(frozen=True, slots=True)
class Dividends:
    """An underlying's dividends as IB reports them (generic tick 456, tick type 59).

    Amounts are $ per share; None where IB sent nothing. `next_date` is the next ex-date.
    A known `next_12_months` of 0 with no `next_date` means no dividend is expected.
    """

    past_12_months: float | None
    next_12_months: float | None
    next_date: date | None
    next_amount: float | None

    def next_known(self) -> tuple[date | None, float | None]:
        """(ex-date, amount) of the next dividend; (None, 0.0) when none is expected;
        (None, None) when that cannot be told."""
        if self.next_date is not None and self.next_amount is not None:
            return self.next_date, self.next_amount
        if self.next_date is None and self.next_12_months == 0:
            return None, 0.0
        return None, None
