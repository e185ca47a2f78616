"""IB's what-if margin through IBBroker + ib_async against the gateway simulator: strings
as IB sends them, Reg-T for a defined-risk spread, and unknown figures kept unknown."""

from __future__ import annotations

import pytest
from gateway_world import broker_settings, put_spread

from core.broker import BrokerError, ErrorClass
from core.broker.ib import IBBroker
from core.broker.ib.margin import parse_margin
from core.domain import Action, OrderRequest, OrderType
from core.sim.exchange import SimExchange
from core.sim.gateway.server import GatewayServer
from core.sim.gateway.wire import UNSET_DOUBLE_WIRE

pytestmark = pytest.mark.gateway


def credit_spread(ex: SimExchange, qty: int, credit: float) -> tuple[OrderRequest, float]:
    """A BUY-combo order for a short put spread at `credit` per unit, and its width."""
    short, long, bag = put_spread(ex)
    assert short.strike is not None and long.strike is not None
    order = OrderRequest(
        bag, Action.BUY, qty, OrderType.LMT, limit_price=-credit, order_ref="wi-spread"
    )
    return order, short.strike - long.strike


async def test_spread_margin_is_reg_t_width_and_the_credit_is_equity(
    broker: IBBroker, exchange: SimExchange
) -> None:
    order, width = credit_spread(exchange, qty=3, credit=0.85)
    before = exchange.account_summary()
    impact = await broker.what_if_margin(order)
    # Reg-T: width x multiplier x quantity; the credit is NOT subtracted from the margin
    assert impact.init_change == pytest.approx(width * 100 * 3)
    assert impact.maint_change == pytest.approx(width * 100 * 3)
    assert impact.init_before == pytest.approx(before.maintenance_margin)
    assert impact.init_after == pytest.approx(before.maintenance_margin + width * 100 * 3)
    # ... it arrives as cash: equity with loan value rises by the credit
    assert impact.equity_with_loan_change == pytest.approx(0.85 * 100 * 3)
    assert impact.post_trade_initial == impact.init_after
    # the funds figure the older call answers is the same margin less the credit
    assert await broker.what_if(order) == pytest.approx(width * 300 - 0.85 * 300)
    assert exchange.find_order("wi-spread") is None  # a margin check places nothing


async def test_unset_and_unparseable_figures_stay_unknown(
    broker: IBBroker, exchange: SimExchange, gateway: GatewayServer
) -> None:
    order, width = credit_spread(exchange, qty=1, credit=0.85)
    gateway.what_if_answers(
        initMarginAfter=UNSET_DOUBLE_WIRE, maintMarginAfter="", equityWithLoanBefore="n/a"
    )
    impact = await broker.what_if_margin(order)
    assert impact.init_after is None and impact.maint_after is None
    assert impact.equity_with_loan_before is None
    # after unknown: before + change, both as IB said them
    assert impact.post_trade_initial == pytest.approx(impact.init_before + width * 100)  # type: ignore[operator]

    gateway.what_if_answers(initMarginAfter="", initMarginBefore=UNSET_DOUBLE_WIRE)
    assert (await broker.what_if_margin(order)).post_trade_initial is None


async def test_unset_initial_margin_change_is_never_answered_and_refused_as_data(
    exchange: SimExchange, gateway: GatewayServer
) -> None:
    """ib_async ends a what-if only when initMarginChange is set (wrapper.openOrder): an
    unset one is a request that times out while connected, a DATA error, never a 0."""
    order, _ = credit_spread(exchange, qty=1, credit=0.85)
    gateway.what_if_answers(initMarginChange=UNSET_DOUBLE_WIRE)
    broker = IBBroker(broker_settings(gateway, request_timeout_s=0.5), clock=exchange.market.clock)
    await broker.connect()
    try:
        with pytest.raises(BrokerError, match="what-if margin for wi-spread") as err:
            await broker.what_if_margin(order)
        assert err.value.kind is ErrorClass.DATA
    finally:
        await broker.disconnect()


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1234.5", 1234.5),
        ("-85.0", -85.0),
        (UNSET_DOUBLE_WIRE, None),
        ("-" + UNSET_DOUBLE_WIRE, None),
        ("", None),
        ("  ", None),
        ("nan", None),
        ("inf", None),
        ("1,234", None),
        (None, None),
    ],
)
def test_parse_margin_is_fail_closed(text: str | None, value: float | None) -> None:
    assert parse_margin(text) == value
