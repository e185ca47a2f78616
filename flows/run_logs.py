"""Core's order lines in the Prefect run logs.

`core` logs through `logging` under `v6.` and knows nothing of Prefect, so its lines
reach the terminal but not the run's log in the UI. A small handler on the loggers a
person reads a run by (the order ladder: "sending ... @ price", the executor, the
emergency controls, the breaker) forwards each record to the run logger of the flow or
task it happened in; outside a run it does nothing (no "missing flow run" warnings in
the CLI). The forwarded loggers log at INFO.
"""

from __future__ import annotations

import logging

from prefect import get_run_logger
from prefect.context import FlowRunContext, TaskRunContext

FORWARDED = (
    "v6.core.execution",
    "v6.core.controls",
    "v6.core.risk.breaker",
)


class RunLogBridge(logging.Handler):
    """Forward a core record to the current Prefect run's logger, if there is a run."""

    def emit(self, record: logging.LogRecord) -> None:
        if FlowRunContext.get() is None and TaskRunContext.get() is None:
            return
        try:
            get_run_logger().log(record.levelno, "%s", record.getMessage())
        except Exception:
            self.handleError(record)


def route_core_logs() -> None:
    """Attach the bridge once per process (idempotent)."""
    for name in FORWARDED:
        logger = logging.getLogger(name)
        if not any(isinstance(h, RunLogBridge) for h in logger.handlers):
            logger.addHandler(RunLogBridge(logging.INFO))
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)
