"""Every minute of the CME Globex session: store the front futures' 1-minute bars and
quotes (and the underlyings' bars in regular hours), then refresh the lead signals.

Self-healing by construction: each run asks for everything since the last stored bar
and merges on (symbol, contract, ts), so a missed run is backfilled by the next one and
a repeated run writes nothing. Bad bars are quarantined with their reason; the rest land.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from prefect import flow, get_run_logger
from prefect.states import Completed, State

from core.broker.base import BrokerError, ErrorClass
from core.calendar import MarketCalendar
from core.cycle.run import BROKER_UNAVAILABLE
from core.marketdata.futures_collection import PreparedBatch
from core.run_guard import Session
from core.runtime import current_runtime
from flows.naming import market_run_name
from flows.states import skipped
from tasks.alerts import alert_on_failure
from tasks.broker import connect_broker
from tasks.guards import should_skip
from tasks.market_data import (
    collect_bars,
    compute_futures_signals,
    publish_collection_artifact,
    qualify_underlyings,
    resolve_front_futures,
    snapshot_futures_quotes,
    store_collection,
)

# Underlying bars are still collected this long after the close, so the session's last
# bars land the same evening rather than with the next morning's backfill.
UNDERLYING_GRACE = timedelta(minutes=5)


@flow(
    name="futures_collection",
    flow_run_name=market_run_name("futures"),
    on_failure=[alert_on_failure],
    on_crashed=[alert_on_failure],
)
async def futures_collection(
    symbols: list[str] | None = None,
    underlyings: bool = True,
    signals: bool = True,
) -> dict[str, Any] | State:
    """`symbols` defaults to universe.futures; `underlyings` also collects the option
    underlyings' bars in regular hours; `signals` refreshes the lead-lag signals."""
    skip = should_skip(Session.FUTURES)
    if skip is not None:
        return skipped(skip)
    rt = current_runtime()
    log = get_run_logger()
    now = rt.clock.now()
    roots = symbols or rt.settings.universe.futures
    calendar = MarketCalendar(rt.settings.schedules)
    with_underlyings = underlyings and (
        calendar.is_regular_open(now) or calendar.is_regular_open(now - UNDERLYING_GRACE)
    )

    try:
        broker = await connect_broker()
    except BrokerError as exc:  # IB's nightly reset falls inside the Globex session
        b = rt.settings.broker
        if exc.kind is not ErrorClass.CONNECTIVITY or not b.in_planned_outage(now):
            raise
        message = (
            f"IB unreachable inside the planned outage window {b.planned_outage_start:%H:%M}-"
            f"{b.planned_outage_end:%H:%M} New York: {exc}; the next run backfills"
        )
        log.warning(message)
        return Completed(name=BROKER_UNAVAILABLE, message=message)
    try:
        contracts = await resolve_front_futures(broker, roots, now)
        futures = await collect_bars(broker, contracts, "future", now)
        quotes = await snapshot_futures_quotes(broker, contracts)
        stocks: PreparedBatch | None = None
        if with_underlyings:
            stock_contracts = await qualify_underlyings(broker, rt.settings.universe.underlyings)
            stocks = await collect_bars(broker, stock_contracts, "underlying", now)
    finally:
        await broker.disconnect()

    written = await store_collection(futures, stocks, quotes)
    batches = [b for b in (futures, stocks) if b is not None]
    rows = await publish_collection_artifact(batches, written, now)
    total = rows[-1]
    signal_rows = await compute_futures_signals(now) if signals else None
    log.info(
        "stored %s new bars (%s gap-filled), quarantined %s, %s quotes",
        total["stored_inserted"],
        total["gap_filled"],
        total["quarantine_inserted"],
        total["quotes_inserted"],
    )
    return {
        "as_of": now.isoformat(),
        "contracts": {c.symbol: c.local_symbol for c in contracts},
        "underlyings_collected": with_underlyings,
        "bars_inserted": total["stored_inserted"],
        "bars_updated": total["stored_updated"],
        "gap_filled": total["gap_filled"],
        "quarantined": total["quarantine_inserted"],
        "quotes_inserted": total["quotes_inserted"],
        "series": rows[:-1],
        "signals": signal_rows.to_dicts() if signal_rows is not None else [],
    }
