"""Render `v6.example.toml` from the settings models, so the documented defaults can
never drift from the real ones (a test compares them)."""

from __future__ import annotations

import json
from datetime import time
from enum import Enum
from typing import Any

from pydantic import BaseModel, SecretStr

from core.config import Settings, allowed_range, field_bounds

_UNITS = (
    ("_pct", "percent"),
    ("_per_s", "per second"),  # before "_s": a rate, not a duration
    ("_s", "seconds"),
    ("_minutes", "minutes"),
    ("_every_min", "minutes"),
    ("_lag_min", "minutes"),
    ("_hours", "hours"),
    ("_dte", "days to expiry"),
    ("_days", "days"),
)

_HEADER = """\
# V6 configuration: every setting with its default.
# Copy to v6.toml and change what you need; anything left out keeps its default.
# Environment variables override this file: V6_<SECTION>__<KEY>, e.g. V6_BROKER__PORT=4002.
# Check a file with: v6 config check
# Every number is bounded (the [range: ...] after its comment): a value outside it, inf or
# nan is refused, so no typo can switch a limit off. Live trading is enabled only by
# broker.live_trading_enabled = true in this file, never by the environment alone.
"""


def render_example_toml() -> str:
    lines = [_HEADER]
    defaults = Settings.model_construct()
    for section, field in Settings.model_fields.items():
        model = getattr(defaults, section)
        doc = (type(model).__doc__ or "").strip().splitlines()
        lines.append(f"[{section}]" + (f"  # {doc[0]}" if doc else ""))
        for key, info in type(model).model_fields.items():
            comment = info.description or ""
            unit = _unit(key)
            if unit and unit not in comment:
                comment = f"{comment} ({unit})" if comment else unit
            bounds = allowed_range(field_bounds(info))
            if bounds:
                comment = f"{comment} [range: {bounds}]" if comment else f"range: {bounds}"
            if comment:
                lines.append(f"# {comment}")
            value = getattr(model, key)
            if value is None:
                lines.append(f"# {key} =   (unset by default)")
            else:
                lines.append(f"{key} = {_toml(value)}")
        lines.append("")
        del field
    return "\n".join(lines)


def _unit(key: str) -> str:
    for suffix, unit in _UNITS:
        if key.endswith(suffix):
            return unit
    return ""


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return json.dumps(value.value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, time):
        return value.strftime("%H:%M:%S")
    if isinstance(value, SecretStr):
        return json.dumps("<secret>")
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, BaseModel):
        raise TypeError("nested sections are not supported in the example renderer")
    raise TypeError(f"cannot render {type(value).__name__} as TOML")


def _key(k: str) -> str:
    return k if k.replace("_", "").isalnum() else json.dumps(k)
