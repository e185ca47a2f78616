"""Core's order lines in the Prefect run logs.

`core` logs through `logging` under `v6.` and knows nothing of Prefect, so its lines
reach the terminal but not the run's log in the UI. A small handler on the loggers a
person reads a run by (the order ladder: "sending ... @ price", the executor, the
emergency controls, the breaker) forwards each record to the run logger of the flow or
task it happened in (Prefect's API log handler); outside a run it does nothing (no
"missing flow run" warnings in the CLI). The ladder and the controls log at INFO.
"""

from __future__ import annotations

import logging

from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging.handlers import APILogHandler

FORWARDED = (
    "v6.core.execution",
    "v6.core.controls",
    "v6.core.risk.breaker",
)

AT_INFO = ("v6.core.execution.ladder", "v6.core.controls")
"""Loggers whose INFO lines (each order sent, each cancel) are worth a run log line."""


class RunLogBridge(APILogHandler):
    """Prefect's API log handler, for core records inside a run only: the record goes to
    the run's log in the UI, once (the terminal already shows it through the root logger,
    so it is not printed again)."""

    def emit(self, record: logging.LogRecord) -> None:
        if FlowRunContext.get() is None and TaskRunContext.get() is None:
            return
        super().emit(record)


def route_core_logs() -> None:
    """Attach the bridge once per process (idempotent)."""
    for name in FORWARDED:
        logger = logging.getLogger(name)
        if not any(isinstance(h, RunLogBridge) for h in logger.handlers):
            bridge = RunLogBridge()
            bridge.setLevel(logging.INFO)
            logger.addHandler(bridge)
    for name in AT_INFO:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)
