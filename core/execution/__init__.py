"""Transactional execution: strategies go on (and off, and roll) as one combo order, with
intents written before submit, bounded repricing and retries that never double an order."""

from core.execution.executor import ComboExecutor
from core.execution.ladder import real_wait, sim_waiter
from core.execution.results import ExecStatus, ExecutionResult

__all__ = ["ComboExecutor", "ExecStatus", "ExecutionResult", "real_wait", "sim_waiter"]
