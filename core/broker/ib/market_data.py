"""Market data: snapshot quotes from streams that are always cancelled, historical bars.

ib_async keeps one Ticker per contract across subscriptions, so quoting is serialised and
each subscription starts from a reset Ticker; every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from ib_async import Contract as IBContract
from ib_async import Ticker

from core.broker.base import BrokerError, ErrorClass, check_what
from core.broker.ib.connection import Connection
from core.broker.ib.contracts import Contracts
from core.broker.ib.convert import (
    ENTITLEMENT_FIXES,
    bar_from_ib,
    classify_error,
    duration_str,
    entitlement_reason,
    quote_from_ticker,
    to_ib_contract,
)
from core.broker.ib.logs import v6_logger
from core.broker.ib.requests import Requests
from core.clock import Clock
from core.domain import Bar, Contract, Dividends, Quote, SecType

logger = v6_logger(__name__)
HMDS_NO_DATA = "HMDS query returned no data"  # error 162's text for an empty query


class MarketData:
    """Quotes and historical bars over one connection."""

    def __init__(
        self, conn: Connection, requests: Requests, contracts: Contracts, clock: Clock
    ) -> None:
        self._conn = conn
        self._requests = requests
        self._contracts = contracts
        self._clock = clock

    async def quotes(self, contracts: Sequence[Contract]) -> list[Quote]:
        """Stream each contract until its first full set of ticks (bid, ask, and model
        greeks for options) or `snapshot_timeout_s`, then cancel every stream (finally).
        101 (no market-data line left) raises CAPACITY; other per-contract errors give a
        NaN quote. An entitlement answer (354, 10090, 10168, 10197) is named with its fix
        in `Quote.unavailable` (10090 keeps the ticks that did come); delayed ticks (IB
        type 3/4) are marked `delayed` with their age."""
        await self._conn.ready()
        if not contracts:
            return []
        async with self._requests.lock("quotes"):  # ib_async shares one Ticker per contract
            return await self._quotes(contracts)

    async def _quotes(self, contracts: Sequence[Contract]) -> list[Quote]:
        ib = self._conn.ib
        timeout_s = self._conn.settings.snapshot_timeout_s
        resolved = [await self._contracts.qualified(c) for c in contracts]
        keyed: dict[object, tuple[Contract, IBContract]] = {}
        for c in resolved:
            k = _quote_key(c)
            if k not in keyed and (c.con_id or c.sec_type is SecType.BAG):
                keyed[k] = (c, to_ib_contract(c))  # unknown contracts get a NaN quote
        errors: dict[int, tuple[int, str]] = {}
        wanted = {id(ibc): k for k, (_, ibc) in keyed.items()}
        wake = asyncio.Event()

        def on_error(req_id: int, code: int, message: str, contract: object) -> None:
            if code == 1101:  # IB dropped every line: re-request the incomplete ones
                wake.set()
                return
            relevant = contract is not None and id(contract) in wanted and req_id >= 0
            if relevant and classify_error(code) is not ErrorClass.WARNING:
                errors[id(contract)] = (code, message)
                wake.set()

        def on_pending(_tickers: object) -> None:
            wake.set()

        tickers: dict[object, Ticker] = {}
        ib.errorEvent += on_error
        ib.pendingTickersEvent += on_pending
        lost = self._conn.data_lost  # a 1101 from here on kills these requests
        try:
            for k, (_, ibc) in keyed.items():
                tickers[k] = _reset(ib.reqMktData(ibc, "", False, False))
            await self._requests.barrier()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s
            while True:
                pending = [
                    k
                    for k, (c, ibc) in keyed.items()
                    if id(ibc) not in errors and not _ticks_complete(c, tickers[k])
                ]
                if pending and self._conn.data_lost != lost and ib.isConnected():
                    lost = self._conn.data_lost
                    logger.info("quotes: IB lost the data (1101); re-requesting %d", len(pending))
                    for k in pending:  # the old request ids died with the data: no cancel
                        tickers[k] = _reset(ib.reqMktData(keyed[k][1], "", False, False))
                if not pending or any(code == 101 for code, _ in errors.values()):
                    break
                remaining = deadline - loop.time()
                if remaining <= 0:
                    logger.info(
                        "quotes: %d contract(s) incomplete after %.1f s", len(pending), timeout_s
                    )
                    break
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), remaining)
        finally:
            ib.errorEvent -= on_error
            ib.pendingTickersEvent -= on_pending
            if ib.isConnected():
                for k in tickers:
                    with contextlib.suppress(Exception):
                        ib.cancelMktData(keyed[k][1])
        capacity = [m for code, m in errors.values() if code == 101]
        if capacity:
            raise BrokerError(
                f"market-data lines exhausted while quoting {len(keyed)} contract(s): "
                f"{capacity[0]}; request fewer contracts at once",
                ErrorClass.CAPACITY,
                101,
            )
        now = self._clock.now()
        out: list[Quote] = []
        for asked, c in zip(contracts, resolved, strict=True):
            k = _quote_key(c)
            code = errors.get(id(keyed[k][1]), (0, ""))[0] if k in keyed else 0
            why = entitlement_reason(code, c.describe()) if code in ENTITLEMENT_FIXES else ""
            if k in tickers and code in (0, 10090):  # 10090: what did come, flagged
                out.append(replace(quote_from_ticker(tickers[k], c, now), unavailable=why))
            else:
                out.append(Quote(contract=asked, time=now, unavailable=why))
        if any(q.unavailable for q in out):
            logger.warning(
                "quotes: IB withheld data for %d of %d contract(s): %s",
                sum(1 for q in out if q.unavailable),
                len(out),
                next(q.unavailable for q in out if q.unavailable),
            )
        return out

    async def dividends(self, contract: Contract) -> Dividends:
        """The stock's dividends from generic tick 456 (IB answers with tick type 59, which
        ib_async parses into `Ticker.dividends`): one stream, cancelled once it arrives or
        after `snapshot_timeout_s`. No answer (or an error) raises DATA: unknown, so the
        early-assignment rule reports the short calls it cannot judge instead of guessing."""
        await self._conn.ready()
        if contract.sec_type is not SecType.STK:
            raise BrokerError(f"dividends are asked of stocks, not {contract}", ErrorClass.DATA)
        async with self._requests.lock("quotes"):  # the same Ticker per contract as quotes
            ib = self._conn.ib
            ibc = to_ib_contract(await self._contracts.qualified(contract))
            ticker = _reset(ib.reqMktData(ibc, "456", False, False))
            ticker.dividends = None
            try:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + self._conn.settings.snapshot_timeout_s
                while ticker.dividends is None and loop.time() < deadline:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(ticker.updateEvent, deadline - loop.time())
            finally:
                if ib.isConnected():
                    with contextlib.suppress(Exception):
                        ib.cancelMktData(ibc)
        d = ticker.dividends
        if d is None:
            raise BrokerError(f"no dividend tick for {contract.symbol}", ErrorClass.DATA)
        next_date = d.nextDate.date() if isinstance(d.nextDate, datetime) else d.nextDate
        return Dividends(d.past12Months, d.next12Months, next_date, d.nextAmount)

    async def historical_bars(
        self,
        contract: Contract,
        *,
        end: datetime,
        duration: timedelta,
        bar_size: str = "1 min",
        what: str = "TRADES",
    ) -> list[Bar]:
        if end.tzinfo is None:
            raise ValueError(f"end must be tz-aware UTC, got {end!r}")
        check_what(what)
        await self._conn.ready()
        c = await self._contracts.qualified(contract)
        if what == "TRADES" and c.sec_type in (SecType.OPT, SecType.BAG):
            what = "MIDPOINT"  # option prints are sparse: the protocol serves TRADES as mids
        timeout = self._conn.settings.request_timeout_s
        start = asyncio.get_running_loop().time()
        try:
            bars = await self._requests.request(
                f"historical bars of {c.describe()}",
                self._conn.ib.reqHistoricalDataAsync(
                    to_ib_contract(c),
                    end.astimezone(UTC),
                    duration_str(duration),
                    bar_size,
                    whatToShow=what,
                    useRTH=False,
                    formatDate=2,
                    timeout=timeout,
                ),
                timeout=timeout + 1.0,
            )
        except BrokerError as exc:
            if exc.code == 162 and HMDS_NO_DATA in str(exc):
                return []  # IB's answer to a window without bars: none, not a failure
            raise
        if not bars and asyncio.get_running_loop().time() - start >= timeout * 0.99:
            raise BrokerError(
                f"historical bars of {c.describe()}: no answer within {timeout:g} s "
                "(broker.request_timeout_s)",
                ErrorClass.DATA,
            )
        return [bar_from_ib(b) for b in bars]


def _quote_key(c: Contract) -> object:
    if c.sec_type is SecType.BAG:
        return ("BAG", c.symbol, c.combo_legs)
    return c.con_id or c.key


def _ticks_complete(c: Contract, t: Ticker) -> bool:
    """Enough ticks for a quote: both sides (a -1 'no quote' counts) and, for options,
    the model greeks; an index only needs a last/close."""
    if c.sec_type is SecType.IND:
        return not (math.isnan(t.last) and math.isnan(t.close))
    have_sides = not (math.isnan(t.bid) or math.isnan(t.ask))
    if c.sec_type is SecType.OPT:
        return have_sides and t.modelGreeks is not None
    return have_sides


def _reset(t: Ticker) -> Ticker:
    """ib_async keeps one Ticker per contract across subscriptions: forget what an earlier
    subscription left in it, so only this subscription's ticks can complete a quote."""
    for name in ("bid", "ask", "last", "close", "bidSize", "askSize", "volume"):
        setattr(t, name, math.nan)
    t.modelGreeks = t.bidGreeks = t.askGreeks = t.lastGreeks = None
    t.marketDataType = 1
    return t
