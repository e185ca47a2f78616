"""The `v6` command: one entry point for operating V6.

Every failure a user can cause (bad config, unreachable store, unknown table) is
printed as one line saying what is wrong and how to fix it, with exit code 2;
a traceback means a bug in V6.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from v6.core.config import ConfigError, Settings, load_settings
from v6.core.store import DeltaStore, StoreError

app = typer.Typer(
    name="v6",
    help="V6: autonomous options trading on Interactive Brokers, orchestrated by Prefect.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect and validate the configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")

console = Console()
err_console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML config file (default: $V6_CONFIG or ./v6.toml)"),
]

F = TypeVar("F", bound=Callable[..., Any])


class UserError(Exception):
    """A problem the user can fix; printed as one line plus the fix."""


def _settings(config: Path | None) -> Settings:
    return load_settings(config)


@config_app.command("check")
def config_check(config: ConfigOption = None) -> None:
    """Validate the configuration and print the effective settings (secrets masked)."""
    settings = _settings(config)
    console.print_json(json.dumps(settings.masked(), default=str))
    console.print("[green]configuration OK[/green]")


@config_app.command("example")
def config_example() -> None:
    """Print a config file documenting every setting with its default (v6.example.toml)."""
    from v6.core.config_example import render_example_toml

    typer.echo(render_example_toml(), nl=False)


@app.command("tables")
def tables(config: ConfigOption = None) -> None:
    """List V6's Delta tables: rows, version, files and size."""
    settings = _settings(config)
    store = DeltaStore.from_settings(settings)
    table = Table(title=f"Delta tables under {store.root}")
    for col in ("table", "rows", "version", "files", "size"):
        table.add_column(col, justify="left" if col == "table" else "right")
    for name in sorted(store.registry):
        st = store.stats(name)
        exists = st.version >= 0
        table.add_row(
            name,
            str(st.rows) if exists else "-",
            str(st.version) if exists else "not created",
            str(st.files) if exists else "-",
            _human_bytes(st.size_bytes) if exists else "-",
        )
    console.print(table)


@app.command("demo")
def demo(config: ConfigOption = None) -> None:
    """Run V6 end to end on the embedded defaults (simulated broker, local tables)."""
    from v6.deployments.demo import run_demo

    run_demo(_settings(config), console)


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def main() -> None:
    """Console entry point: user errors become one clear line, exit code 2."""
    try:
        app()
    except ConfigError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        err_console.print(
            "fix: edit the file (see v6.example.toml) or the V6_* variable named above"
        )
        sys.exit(2)
    except (StoreError, UserError) as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        sys.exit(2)


if __name__ == "__main__":
    main()
