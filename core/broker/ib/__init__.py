"""`IBBroker`: the `Broker` protocol on unmodified ib_async (async API only).

What it adds over ib_async, and where (one module per concern, `broker.py` composes them):
- connection: a unique clientId per connection from [client_id_min, client_id_max],
  retried on 326 (ib_async itself would just time out); reconnect with exponential
  back-off after `disconnectedEvent`;
- executions: after each (re)connect, a re-request of executions since the last one seen,
  so fills made while disconnected are not lost;
- orders: idempotent by `order_ref`: before placing, open orders, completed orders and
  executions are searched, also after a disconnect that hid the acknowledgement;
- contracts: cached, batched qualification and option chains;
- market_data: every wait has a timeout and every market-data subscription is cancelled
  (finally);
- account: the account summary and positions;
- requests: IB error codes become `BrokerError(kind=ErrorClass...)`, every request has a
  timeout;
- live_guard: a live-trading guard (ports 4001/7496, non-paper accounts) checked before
  and after connecting;
- logs: account numbers are masked in every log line;
- convert: the pure mapping between ib_async and V6 types.
"""

from core.broker.ib.broker import IBBroker
from core.broker.ib.contracts import QUALIFY_BATCH_MIN
from core.broker.ib.live_guard import LiveTradingRefusedError, check_live_settings

__all__ = ["QUALIFY_BATCH_MIN", "IBBroker", "LiveTradingRefusedError", "check_live_settings"]
