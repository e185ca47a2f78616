"""Broker settings that point V6's production `IBBroker` at an in-process gateway simulator.

One place for it: the demo, the chaos soak and the flow tests all connect the same way.
"""

from __future__ import annotations

from typing import Any

from core.config import BrokerKind, BrokerSettings, MarketDataType


def simulator_broker_settings(base: BrokerSettings, port: int, **overrides: Any) -> BrokerSettings:
    """`base` aimed at the simulator on 127.0.0.1:`port` as a paper account.

    Timeouts are short because loopback answers in microseconds, and client-side pacing is
    off (`max_messages_per_s=0`) because the simulator does not pace: a chain snapshot of a
    few hundred contracts would otherwise take ib_async's 45 msg/s, i.e. tens of seconds.
    """
    values: dict[str, Any] = {
        "kind": BrokerKind.IB,
        "host": "127.0.0.1",
        "port": port,
        "paper": True,
        "live_trading_enabled": False,
        "market_data_type": MarketDataType.LIVE,
        "connect_timeout_s": 5.0,
        "request_timeout_s": 10.0,
        "snapshot_timeout_s": 2.0,
        "reconnect_backoff_s": 0.05,
        "max_messages_per_s": 0,
    }
    values.update(overrides)
    return BrokerSettings.model_validate(base.model_dump() | values)
