"""A person's emergency controls, without Prefect: cancel every open V6 order at the broker,
and flatten every open strategy (after a sticky halt). The `v6` CLI and the ad hoc flows
call these; the halt itself is the breaker's (`core.risk.breaker.Breaker.halt`)."""

from core.controls.cancel_all import CancelAllReport, OrderCancel, cancel_all
from core.controls.flatten import FlattenReport, flatten_all

__all__ = ["CancelAllReport", "FlattenReport", "OrderCancel", "cancel_all", "flatten_all"]
