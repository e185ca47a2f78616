"""Orders and contracts for SimExchange tests: listed SPY options, a bull put spread, limit
orders and positions by conId."""

from __future__ import annotations

from core.domain import Action, ComboLeg, Contract, OrderRequest
from core.sim import MarketSimulator, SimExchange


def option(m: MarketSimulator, min_days: int, moneyness: float, right: str) -> Contract:
    """A listed SPY option about `moneyness` x spot, at least `min_days` out."""
    day = m.trading_day()
    expiry = next(e for e in m.expirations("SPY") if (e - day).days >= min_days)
    k = m.price("SPY") * moneyness
    step = 1.0 if abs(moneyness - 1) < 0.1 else 5.0
    c = m.qualify(Contract.option("SPY", expiry, round(k / step) * step, right))
    assert c is not None
    return c


def spread(m: MarketSimulator, width: float = 5.0) -> tuple[Contract, Contract, Contract]:
    """Bull put spread ~5 % OTM, ~30 days: (bag SELL short / BUY long, short, long)."""
    short = option(m, 25, 0.95, "P")
    assert short.strike is not None and short.expiry is not None
    lng = m.qualify(Contract.option("SPY", short.expiry, short.strike - width, "P"))
    assert lng is not None
    bag = Contract.combo("SPY", [ComboLeg(short.con_id, 1, "SELL"), ComboLeg(lng.con_id, 1, "BUY")])
    return bag, short, lng


def lmt(
    c: Contract, action: Action, qty: int, price: float, ref: str, tif: str = "DAY"
) -> OrderRequest:
    return OrderRequest(c, action, qty, limit_price=round(price, 2), order_ref=ref, tif=tif)


def positions_by_id(x: SimExchange) -> dict[int, int]:
    return {p.contract.con_id: p.quantity for p in x.positions()}
