"""`v6 run FLOW`: one catalog flow, now, ad hoc: in this process or on the served deployment.

Parameters arrive as `--param k=v` strings; values are read as JSON when they parse
(`seed=3`, `dry=true`, `ids=["a"]`) and as plain strings otherwise, then checked against
the flow's own parameter schema before anything runs, so a typo is a one-line error
instead of a failed run in the UI.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from prefect import Flow
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.exceptions import ParameterTypeError
from rich.console import Console

from core.config import Settings
from core.runtime import CycleProgress
from deployments.catalog import CATALOG, FlowEntry, entry
from deployments.errors import UserError

POLL_S = 2.0


@dataclass(frozen=True)
class RunResult:
    """How a run ended: what `v6 run` prints and its exit code."""

    flow: str
    state_type: str  # COMPLETED, FAILED, CANCELLED, CRASHED, ... (or the last seen state)
    state_name: str
    message: str
    data: Any = None
    flow_run_id: str | None = None

    @property
    def exit_code(self) -> int:
        return 0 if self.state_type == StateType.COMPLETED.value else 1

    def line(self) -> str:
        text = f"{self.flow}: {self.state_name}"
        return f"{text}: {self.message}" if self.message else text


def find_entry(name: str) -> FlowEntry:
    try:
        return entry(name)
    except KeyError:
        known = ", ".join(e.name for e in CATALOG)
        raise UserError(f"unknown flow '{name}'; valid flows: {known}") from None


def parse_value(raw: str) -> Any:
    """JSON when it parses (numbers, true/false/null, lists, objects, quoted strings)."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def parse_params(item: FlowEntry, flow: Flow, pairs: Sequence[str]) -> dict[str, Any]:
    """`k=v` pairs -> parameters, checked against the flow's schema (names and values)."""
    valid = list(flow.parameters.properties)
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            example = key or (valid[0] if valid else "name")
            raise UserError(f"--param {pair!r} is not KEY=VALUE; write e.g. --param {example}=...")
        if key not in flow.parameters.properties:
            raise UserError(
                f"unknown parameter '{key}' for flow {item.name}; valid parameters: "
                f"{', '.join(valid) or '(none)'}"
            )
        params[key] = parse_value(raw)
    validate(item, flow, params)
    return params


def validate(item: FlowEntry, flow: Flow, params: dict[str, Any]) -> dict[str, Any]:
    """The flow's own validation, its multi-line complaint turned into one line."""
    with _quiet("prefect.flows"):
        try:
            return flow.validate_parameters(params)
        except ParameterTypeError as exc:
            lines = [ln.strip(" -") for ln in str(exc).splitlines()[1:] if ln.strip()]
            detail = "; ".join(lines) or str(exc)
            raise UserError(
                f"invalid parameters for flow {item.name}: {detail}; "
                f"fix the --param values (schema: {_schema_hint(flow)})"
            ) from None


def _schema_hint(flow: Flow) -> str:
    required = set(flow.parameters.required or [])
    parts = []
    for name, prop in flow.parameters.properties.items():
        kind = prop.get("type") or "/".join(
            str(alt.get("type", alt.get("format", "?"))) for alt in prop.get("anyOf", [])
        )
        parts.append(f"{name}: {kind}{' (required)' if name in required else ''}")
    return ", ".join(parts)


@contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def run_local(
    item: FlowEntry,
    params: dict[str, Any],
    settings: Settings,
    backtest_progress: CycleProgress | None = None,
) -> RunResult:
    """Run the flow in this process now, on the runtime built from `settings`
    (`backtest_progress` watches a backtest's cycles: the CLI's bar)."""
    from core.runtime import Runtime, use_runtime
    from core.store import DeltaStore
    from deployments.installation import tagged

    flow = item.load()

    async def go() -> RunResult:
        state = await flow(**params, return_state=True)  # type: ignore[misc]
        data = await state.aresult(raise_on_failure=False) if state.is_completed() else None
        return RunResult(
            item.name,
            state.type.value,
            state.name or state.type.value.title(),
            state.message or "",
            data=data,
            flow_run_id=str(state.state_details.flow_run_id or "") or None,
        )

    runtime = Runtime(
        settings, DeltaStore.from_settings(settings), backtest_progress=backtest_progress
    )
    with use_runtime(runtime), tagged(settings):
        return asyncio.run(go())


def run_on_server(
    item: FlowEntry,
    params: dict[str, Any],
    console: Console,
    *,
    timeout_s: float | None = None,
) -> RunResult:
    """Trigger the served deployment `FLOW/FLOW` and follow the run to a final state."""
    from deployments.serve import require_server

    url = require_server()
    return asyncio.run(_trigger_and_follow(item, params, console, url, timeout_s))


async def _trigger_and_follow(
    item: FlowEntry,
    params: dict[str, Any],
    console: Console,
    url: str,
    timeout_s: float | None,
) -> RunResult:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    name = f"{item.name}/{item.name}"
    async with get_client() as client:
        try:
            deployment = await client.read_deployment_by_name(name)
        except ObjectNotFound:
            raise UserError(
                f"deployment {name} is not registered on {url}; start `v6 serve` "
                "(or `prefect deploy --all` with a worker) first"
            ) from None
        run = await client.create_flow_run_from_deployment(deployment.id, parameters=params)
        console.print(f"triggered {name}: flow run {run.name} ({run.id})")
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with console.status(f"{name}: {_state_label(run)}") as status:
            while not (run.state and run.state.is_final()):
                if deadline is not None and time.monotonic() >= deadline:
                    break
                await asyncio.sleep(POLL_S)
                run = await client.read_flow_run(run.id)
                status.update(f"{name}: {_state_label(run)}")
    state = run.state
    if state is None or not state.is_final():
        label = _state_label(run)
        return RunResult(
            item.name,
            state.type.value if state else "UNKNOWN",
            label,
            f"not finished after {timeout_s:g}s; follow flow run {run.id} in the UI",
            flow_run_id=str(run.id),
        )
    return RunResult(
        item.name,
        state.type.value,
        state.name or state.type.value.title(),
        state.message or "",
        flow_run_id=str(run.id),
    )


def _state_label(run: FlowRun) -> str:
    return run.state.name if run.state and run.state.name else "Pending"


__all__ = [
    "RunResult",
    "find_entry",
    "parse_params",
    "parse_value",
    "run_local",
    "run_on_server",
    "validate",
]
