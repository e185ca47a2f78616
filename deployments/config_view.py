"""`v6 config check`, compact: which file was read, and for each setting that is not at
its default, its value and where it came from (the file or a V6_* variable; a variable
wins over the file). `--all` lists the defaults too; `--json` prints the whole effective
configuration for scripts. Secrets and the account are masked everywhere."""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from core.config import CONFIG_ENV_VAR, Settings, resolve_config_path

ENV_PREFIX = "V6_"


@dataclass(frozen=True)
class Entry:
    key: str  # section.key
    value: str
    source: str  # "default", "file" or the V6_* variable's name


def _leaves(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Dotted keys of a settings dump: sections are walked, other values are leaves."""
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and not prefix:
            yield from _leaves(value, f"{path}.")
        else:
            yield path, value


def _file_keys(path: Path | None) -> set[str]:
    if path is None or not path.exists():
        return set()
    with path.open("rb") as fh:
        return {k for k, _ in _leaves(tomllib.load(fh))}


def _env_keys(environ: Mapping[str, str]) -> dict[str, str]:
    """Dotted setting -> the variable that sets it (V6_BROKER__PORT -> broker.port)."""
    out: dict[str, str] = {}
    for name in environ:
        if name.startswith(ENV_PREFIX) and name != CONFIG_ENV_VAR:
            out[name.removeprefix(ENV_PREFIX).lower().replace("__", ".")] = name
    return out


def _source(key: str, file_keys: set[str], env: Mapping[str, str]) -> str:
    for path, var in env.items():
        if key == path or key.startswith(path + "."):
            return var
    if key in file_keys or any(key.startswith(k + ".") for k in file_keys):
        return "file"
    return "default"


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def entries(
    settings: Settings, path: Path | None, environ: Mapping[str, str] | None = None
) -> list[Entry]:
    """Every effective setting with its source, in the order of the settings tree."""
    env = _env_keys(os.environ if environ is None else environ)
    file_keys = _file_keys(path)
    return [
        Entry(key, _show(value), _source(key, file_keys, env))
        for key, value in _leaves(settings.masked())
    ]


def print_config(
    settings: Settings, console: Console, explicit: Path | None, *, show_all: bool
) -> None:
    path = resolve_config_path(explicit)
    if path is None:
        console.print(
            f"config file: none (no ./v6.toml, {CONFIG_ENV_VAR} unset): defaults + V6_* variables"
        )
    else:
        console.print(f"config file: {escape(str(path.resolve()))}")
    rows = entries(settings, path)
    shown = rows if show_all else [e for e in rows if e.source != "default"]
    if shown:
        table = Table(box=None, pad_edge=False, show_header=True)
        for col in ("setting", "value", "from"):
            table.add_column(col, overflow="fold")
        for e in shown:
            style = "dim" if e.source == "default" else ""
            table.add_row(escape(e.key), escape(e.value), e.source, style=style)
        console.print(table)
    defaults = sum(e.source == "default" for e in rows)
    if not show_all:
        console.print(
            f"{defaults} other setting(s) at their defaults (`v6 config check --all` lists them)"
        )
