"""The `v6` command: one entry point for operating V6.

Every failure a user can cause (bad config, unreachable store, unknown table) is
printed as one line saying what is wrong and how to fix it, with exit code 2;
a traceback means a bug in V6.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from core.config import ConfigError, Settings, load_settings, mask_account
from core.store import DeltaStore, StoreError
from core.store.integrity import repair, table_health
from deployments.errors import UserError

app = typer.Typer(
    name="v6",
    help="V6: autonomous options trading on Interactive Brokers, orchestrated by Prefect.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect and validate the configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")
breaker_app = typer.Typer(
    help="Show, trip or reset the circuit breaker (durable, audited).", no_args_is_help=True
)
app.add_typer(breaker_app, name="breaker")
store_app = typer.Typer(help="Check and repair V6's Delta tables.", no_args_is_help=True)
app.add_typer(store_app, name="store")
breaks_app = typer.Typer(help="Reconciliation breaks that wait for a person.", no_args_is_help=True)
app.add_typer(breaks_app, name="breaks")

console = Console()
err_console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML config file (default: $V6_CONFIG or ./v6.toml)"),
]

F = TypeVar("F", bound=Callable[..., Any])


def _settings(config: Path | None) -> Settings:
    return load_settings(config)


@config_app.command("check")
def config_check(
    config: ConfigOption = None,
    show_all: Annotated[bool, typer.Option("--all", help="list the defaults too")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="print the whole effective configuration as JSON")
    ] = False,
) -> None:
    """Validate the configuration: the file read, and each setting not at its default with
    where it came from (file or V6_* variable); secrets masked."""
    settings = _settings(config)
    if settings.broker.is_live:
        account = mask_account(settings.broker.account or "") or "the login's only account"
        console.print(
            Panel(
                f"LIVE TRADING: this configuration trades REAL MONEY on {settings.broker.host}:"
                f"{settings.broker.port} ({account})",
                style="bold white on red",
            )
        )
    if as_json:
        console.print_json(json.dumps(settings.masked(), default=str))
    else:
        from deployments.config_view import print_config

        print_config(settings, console, config, show_all=show_all)
    mode = "[bold red]LIVE[/bold red]" if settings.broker.is_live else "paper/simulated"
    console.print(f"[green]configuration OK[/green] ({mode})")


@config_app.command("example")
def config_example() -> None:
    """Print a config file documenting every setting with its default (v6.example.toml)."""
    from core.config_example import render_example_toml

    typer.echo(render_example_toml(), nl=False)


@app.command("tables")
def tables(config: ConfigOption = None) -> None:
    """List V6's Delta tables: rows, version, files and size; exit 2 if any is broken
    (lost, rolled back, or missing a data file)."""
    settings = _settings(config)
    store = DeltaStore.from_settings(settings)
    table = Table(title=f"Delta tables under {store.root}")
    for col in ("table", "rows", "version", "files", "size"):
        table.add_column(col, justify="left" if col == "table" else "right")
    broken = []
    for name in sorted(store.registry):
        health = table_health(store, name)
        if not health.ok:
            broken.append(health)
            table.add_row(name, "-", "[bold red]BROKEN[/bold red]", "-", "-")
            continue
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
    if broken:
        more = f" (and {len(broken) - 1} more marked BROKEN above)" if len(broken) > 1 else ""
        raise UserError(f"{broken[0].problem}{more}")


@store_app.command("repair")
def store_repair(
    table: Annotated[str, typer.Argument(help="the table to repair, e.g. strategies")],
    accept_loss: Annotated[
        bool,
        typer.Option(
            "--accept-loss",
            help="when the last version V6 wrote cannot be restored, carry on from what is "
            "left (a lost table is recreated empty; missing files are dropped)",
        ),
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Restore TABLE to the last version V6 wrote (Delta time travel), if it still can."""
    store = DeltaStore.from_settings(_settings(config))
    console.print(repair(store, table, accept_loss=accept_loss), soft_wrap=True)


@app.command("demo")
def demo(
    config: ConfigOption = None,
    days: Annotated[int, typer.Option(min=1, max=20, help="simulated trading days")] = 3,
    cycle_minutes: Annotated[
        int, typer.Option(min=5, max=390, help="simulated minutes between trading cycles")
    ] = 60,
) -> None:
    """Run V6 end to end on the simulator: gateway, every flow, breaker trip and recovery."""
    from deployments.demo import run_demo
    from deployments.local_api import prefect_api

    settings = _settings(config)
    with prefect_api():
        run_demo(settings, console, days=days, cycle_minutes=cycle_minutes)


@app.command("chaos")
def chaos(
    config: ConfigOption = None,
    days: Annotated[int, typer.Option(min=1, help="simulated trading days")] = 5,
    seed: Annotated[int, typer.Option(help="fault-plan and market seed (replays a run)")] = 1,
    cycle_minutes: Annotated[int, typer.Option(min=5, help="simulated minutes per cycle")] = 120,
    rate: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="chance of a fault per cycle after the first round"),
    ] = 0.3,
    keep: Annotated[
        Path | None, typer.Option(help="keep the soak's Delta tables here (default: scratch)")
    ] = None,
) -> None:
    """Soak the full system under seeded faults; exit 1 with the seed on the first violation."""
    from deployments.chaos import run_chaos_cli

    report = run_chaos_cli(
        _settings(config), console, days=days, seed=seed, cycle_minutes=cycle_minutes,
        rate=rate, keep=keep,
    )  # fmt: skip
    if not report.ok:
        err_console.print(
            f"[red]chaos violation[/red] (seed {seed}): {escape(str(report.violation))}"
        )
        raise typer.Exit(1)


@app.command("serve")
def serve(
    config: ConfigOption = None,
    pause_on_trip: Annotated[
        bool,
        typer.Option(
            "--pause-on-trip",
            help="also install the automation that pauses trading_cycle when a run ends "
            "CircuitTripped (a second layer; the breaker in the store is what stops trading)",
        ),
    ] = False,
) -> None:
    """Serve every flow as a scheduled deployment against a running Prefect server."""
    from deployments.serve import serve_all

    serve_all(_settings(config), console, pause_on_trip=pause_on_trip)


@app.command("run")
def run(
    flow: Annotated[str, typer.Argument(help="catalog flow name, e.g. variance_analysis")],
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="KEY=VALUE (JSON when it parses); repeatable"),
    ] = None,
    deployment: Annotated[
        bool,
        typer.Option(
            "--deployment", help="trigger the served deployment FLOW/FLOW instead of in-process"
        ),
    ] = False,
    timeout: Annotated[
        float | None,
        typer.Option(help="with --deployment: stop following after this many seconds"),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Run one flow now, ad hoc; exit 0 if it ends Completed, 1 otherwise."""
    from deployments.runs import find_entry, parse_params, run_local, run_on_server

    item = find_entry(flow)
    params = parse_params(item, item.load(), param or [])
    if deployment:
        result = run_on_server(item, params, console, timeout_s=timeout)
    else:
        from deployments.local_api import prefect_api
        from deployments.progress import backtest_bar

        settings = _settings(config)
        with prefect_api():
            if item.name == "backtest":
                with backtest_bar(console) as bar:
                    result = run_local(item, params, settings, backtest_progress=bar)
            else:
                result = run_local(item, params, settings)
    if result.data is not None:
        console.print_json(json.dumps(result.data, default=str))
    style = "green" if result.exit_code == 0 else "red"
    console.print(f"[{style}]{result.line()}[/{style}]", soft_wrap=True, markup=True)
    raise typer.Exit(result.exit_code)


@app.command("doctor")
def doctor(config: ConfigOption = None) -> None:
    """Check the deployment end to end: config, Prefect API and auth, work pool, workers,
    storage round trip, broker and clock; one line per problem with the fix (exit 2)."""
    from deployments.doctor import PrefectTarget, report, run_checks

    checks = run_checks(config, PrefectTarget.from_prefect_settings())
    raise typer.Exit(report(checks, lambda line: console.print(line, soft_wrap=True, markup=False)))


@app.command("deploy-config")
def deploy_config(config: ConfigOption = None) -> None:
    """Print prefect.yaml (process work pool `v6-process`) for workers on other machines."""
    from deployments.deploy_config import render_prefect_yaml

    typer.echo(render_prefect_yaml(_settings(config)), nl=False)


@app.command("gateway-sim")
def gateway_sim(
    port: Annotated[int, typer.Option(help="TCP port (4002 = IB paper gateway; 0 = any)")] = 4002,
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    speed: Annotated[float, typer.Option(help="simulated seconds per wall second")] = 1.0,
    realtime_data: Annotated[
        bool,
        typer.Option(
            "--realtime-data",
            help="the account holds real-time market-data subscriptions (default: none, as "
            "a new paper account: delayed requests get 15-minute-old data, live ones 354)",
        ),
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Run the IB gateway simulator (TWS socket protocol over the market simulator)."""
    import asyncio

    from core.sim.gateway import GatewayServer, run_gateway

    settings = _settings(config)

    def ready(server: GatewayServer) -> None:
        console.print(
            f"gateway simulator listening on {host}:{server.port} "
            f"(clock {server.now:%Y-%m-%d %H:%M}Z, x{speed:g}); connect with "
            f'broker.kind = "ib", broker.port = {server.port}. Ctrl-C stops it.',
            soft_wrap=True,
        )

    try:
        asyncio.run(
            run_gateway(
                host, port, settings, speed=speed, on_ready=ready, realtime_data=realtime_data
            )
        )
    except KeyboardInterrupt:
        console.print("gateway simulator stopped")
    except OSError as exc:
        raise UserError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); "
            "pick a free port with --port or stop what is using it"
        ) from None
    except ValueError as exc:
        raise UserError(f"gateway-sim: {exc}") from None


ReasonOption = Annotated[str | None, typer.Option("--reason", "-r", help="why (required; audited)")]
ActorOption = Annotated[str | None, typer.Option("--actor", help="who (default: $USER)")]


@breaker_app.command("status")
def breaker_status(config: ConfigOption = None) -> None:
    """Breaker state, since when, why, and its recent transitions."""
    from deployments.status import print_breaker_status

    print_breaker_status(_settings(config), console)


@breaker_app.command("trip")
def breaker_trip(
    reason: ReasonOption = None, actor: ActorOption = None, config: ConfigOption = None
) -> None:
    """Open the breaker now: no new entries until it is reset or a probe closes it."""
    from deployments.status import breaker_change

    t = breaker_change(_settings(config), "trip", reason, actor)
    console.print(
        f"breaker {t.from_state.value} -> [bold red]{t.to_state.value}[/bold red] "
        f"by {t.actor}: {t.reason}",
        soft_wrap=True,
    )


@breaker_app.command("reset")
def breaker_reset(
    reason: ReasonOption = None, actor: ActorOption = None, config: ConfigOption = None
) -> None:
    """Close the breaker now (trip counts start afresh)."""
    from deployments.status import breaker_change

    t = breaker_change(_settings(config), "reset", reason, actor)
    console.print(
        f"breaker {t.from_state.value} -> [green]{t.to_state.value}[/green] "
        f"by {t.actor}: {t.reason}",
        soft_wrap=True,
    )


@breaks_app.command("ack")
def breaks_ack(
    break_id: Annotated[str, typer.Argument(help="the break awaiting an acknowledgement")],
    reason: ReasonOption = None,
    config: ConfigOption = None,
) -> None:
    """Accept the broker's report behind a break (a vanished or large unknown position):
    the next reconciliation books it. Audited with the OS user and the reason."""
    from datetime import UTC, datetime

    from core.reconcile.acks import AckRefused, acknowledge
    from deployments.status import default_actor

    store = DeltaStore.from_settings(_settings(config))
    try:
        row = acknowledge(
            store, break_id, reason=reason or "", by=default_actor(), now=datetime.now(UTC)
        )
    except AckRefused as exc:
        raise UserError(str(exc)) from None
    console.print(
        f"break {row['break_id']} ({row['kind']}, {row['contract'] or 'account'}) acknowledged "
        f"by {row['acknowledged_by']}: {row['reason']}; the next reconciliation books it",
        soft_wrap=True,
        markup=False,
    )


@app.command("halt")
def halt(
    reason: ReasonOption = None,
    actor: ActorOption = None,
    no_exits: Annotated[
        bool, typer.Option("--no-exits", help="refuse exits too: the broker is not touched")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Emergency stop: no entries until a person runs `v6 breaker reset` (no cool-down)."""
    from deployments.controls import halt as do_halt

    do_halt(_settings(config), console, reason, actor, exits=not no_exits)


@app.command("cancel-all")
def cancel_all(config: ConfigOption = None) -> None:
    """Cancel every open V6 order at the broker; exit 1 if any cancel is not confirmed."""
    from deployments.controls import run_cancel_all

    if not run_cancel_all(_settings(config), console).ok:
        raise typer.Exit(1)


@app.command("flatten")
def flatten(
    reason: ReasonOption = None,
    actor: ActorOption = None,
    confirm: Annotated[bool, typer.Option("--confirm", help="yes, close everything")] = False,
    config: ConfigOption = None,
) -> None:
    """Halt, then close every open strategy as combo orders bounded by natural; exit 1 if
    anything is still open."""
    from deployments.controls import run_flatten

    if not run_flatten(_settings(config), console, reason, actor, confirm).ok:
        raise typer.Exit(1)


@app.command("positions")
def positions(config: ConfigOption = None) -> None:
    """Open strategies: legs, credit, mark, P&L, DTE, greeks and the rules' last word."""
    from deployments.positions import WIDTH, print_positions

    console.width = min(console.width, WIDTH)
    print_positions(_settings(config), console)


@app.command("trades")
def trades(
    since: Annotated[
        str | None, typer.Option(help="first market date to show, YYYY-MM-DD (default: all)")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Closed trades with realised P&L, oldest first."""
    from deployments.positions import WIDTH, parse_since, print_trades

    day = parse_since(since)
    console.width = min(console.width, WIDTH)
    print_trades(_settings(config), console, day)


@app.command("strategy")
def strategy(
    strategy_id: Annotated[str, typer.Argument(help="the strategy id, e.g. from v6 positions")],
    config: ConfigOption = None,
) -> None:
    """One strategy's life: intent, orders with prices, fills, rule decisions, close."""
    from deployments.positions import WIDTH, print_strategy

    console.width = min(console.width, WIDTH)
    print_strategy(_settings(config), console, strategy_id)


@app.command("status")
def status(config: ConfigOption = None) -> None:
    """Positions, P&L, breaker state and the last run of each flow."""
    from deployments.status import print_status

    print_status(_settings(config), console)


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def main() -> None:
    """Console entry point: user errors become one clear line, exit code 2."""
    # Nothing leaves this machine: a temporary Prefect server that a command starts (a
    # subprocess, which reads this environment) sends no telemetry. A user's own setting wins.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    try:
        app()
    except ConfigError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        err_console.print(
            "fix: edit the file (see v6.example.toml) or the V6_* variable named above"
        )
        sys.exit(2)
    except (StoreError, UserError) as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
