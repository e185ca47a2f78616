"""The live-trading guard: no real-money account is reached without the explicit opt-in,
checked on the settings before connecting and on the managed account after."""

from __future__ import annotations

from core.broker.base import BrokerError, ErrorClass
from core.config import LIVE_PORTS, BrokerSettings
from core.domain.accounts import mask_account


class LiveTradingRefusedError(BrokerError):
    """The configuration would reach a live (real-money) account without the explicit opt-in."""

    def __init__(self, message: str) -> None:
        super().__init__(message, ErrorClass.REJECTION)


def check_live_settings(settings: BrokerSettings) -> None:
    """Refuse a live port or a non-paper configuration unless live trading is enabled."""
    if settings.live_trading_enabled:
        return
    if settings.port in LIVE_PORTS:
        raise LiveTradingRefusedError(
            f"broker.port {settings.port} is a LIVE TWS/Gateway port ({sorted(LIVE_PORTS)}); "
            "use the paper port (4002 gateway / 7497 TWS) or set "
            "broker.live_trading_enabled = true to trade real money"
        )
    if not settings.paper:
        raise LiveTradingRefusedError(
            "broker.paper = false means a LIVE account; set broker.live_trading_enabled = true "
            "to trade real money, or broker.paper = true for a paper account"
        )


def check_live_account(settings: BrokerSettings, account: str) -> None:
    """Refuse a non-paper account (paper ones start with 'D') for a paper configuration."""
    if not settings.live_trading_enabled and settings.paper and not account.startswith("D"):
        raise LiveTradingRefusedError(
            f"account {mask_account(account)} is not a paper account (paper accounts "
            "start with 'D'); refusing to trade it without broker.live_trading_enabled "
            "= true"
        )
