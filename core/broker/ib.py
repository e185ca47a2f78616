"""`IBBroker`: the `Broker` protocol on unmodified ib_async (async API only).

What it adds over ib_async, and why:
- a unique clientId per connection from [client_id_min, client_id_max], retried on 326
  (ib_async itself would just time out);
- reconnect with exponential back-off after `disconnectedEvent`, then a re-request of
  executions since the last one seen, so fills made while disconnected are not lost;
- orders are idempotent by `order_ref`: before placing, open orders, completed orders
  and executions are searched, also after a disconnect that hid the acknowledgement;
- every wait has a timeout and every market-data subscription is cancelled (finally);
- IB error codes become `BrokerError(kind=ErrorClass...)`;
- a live-trading guard (ports 4001/7496, non-paper accounts) checked before and after
  connecting, and account numbers are masked in every log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from ib_async import IB, ExecutionFilter, Fill, RequestError, StartupFetch, Ticker, Trade
from ib_async import Contract as IBContract

from core.broker import ib_convert as cv
from core.broker.base import BrokerError, ErrorClass, check_what
from core.clock import Clock, SystemClock
from core.config import LIVE_PORTS, BrokerSettings
from core.domain import (
    AccountSummary,
    Action,
    Bar,
    Contract,
    Execution,
    OptionChain,
    OrderRequest,
    OrderState,
    OrderStatus,
    Position,
    Quote,
    Right,
    SecType,
)

logger = logging.getLogger(f"v6.{__name__}")

T = TypeVar("T")
_QualKey = tuple[object, ...]
_MARKET_TZ = ZoneInfo("America/New_York")
QUALIFY_BATCH_MIN = 4  # from this many options of one expiry, one wildcard request is cheaper

_STARTUP_FETCH = (
    StartupFetch.POSITIONS
    | StartupFetch.ORDERS_OPEN
    | StartupFetch.ORDERS_COMPLETE
    | StartupFetch.ACCOUNT_UPDATES
    | StartupFetch.SUB_ACCOUNT_UPDATES
)  # executions are fetched by IBBroker itself (since the last one seen)
_UNACKED = frozenset({"PendingSubmit", "ApiPending"})
_IB_LOGGERS = ("ib_async.client", "ib_async.wrapper", "ib_async.ib", "ib_async.Decoder")
_CLIENT_IDS_IN_USE: set[int] = set()  # clientIds held by IBBrokers of this process


class LiveTradingRefusedError(BrokerError):
    """The configuration would reach a live (real-money) account without the explicit opt-in."""

    def __init__(self, message: str) -> None:
        super().__init__(message, ErrorClass.REJECTION)


class _ClientIdInUseError(Exception):
    pass


class _AccountRedactor(logging.Filter):
    """Masks account numbers in ib_async's own log records (they print whole orders and,
    at DEBUG, every raw message): known accounts and anything shaped like an IB account."""

    PATTERN = re.compile(r"\b(?:DU|DF|DI|U|F|I)\d{5,9}\b")

    def __init__(self) -> None:
        super().__init__()
        self.accounts: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        masked = self.PATTERN.sub(lambda m: cv.mask_account(m.group(0)), text)
        for acct in self.accounts:
            if acct and acct in masked:
                masked = masked.replace(acct, cv.mask_account(acct))
        if masked != text:
            record.msg = masked
            record.args = ()
        return True


class _CancelAcknowledgement(logging.Filter):
    """ib_async logs IB's 202 ("Order Canceled") at ERROR. V6 cancels on purpose (reprice,
    fill timeout, unwind) and follows the cancel through the order status, so the
    confirmation is INFO; a cancel V6 did not ask for still surfaces as the order's status."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and record.getMessage().startswith("Error 202,"):
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


_REDACTOR = _AccountRedactor()
for _name in (*_IB_LOGGERS, __name__):
    logging.getLogger(_name).addFilter(_REDACTOR)
logging.getLogger("ib_async.wrapper").addFilter(_CancelAcknowledgement())


def check_live_settings(settings: BrokerSettings) -> None:
    """Refuse a live port or a non-paper configuration unless live trading is enabled."""
    if settings.live_trading_enabled:
        return
    if settings.port in LIVE_PORTS:
        raise LiveTradingRefusedError(
            f"broker.port {settings.port} is a LIVE TWS/Gateway port ({sorted(LIVE_PORTS)}); "
            "use the paper port (4002 gateway / 7497 TWS) or set "
            "broker.live_trading_enabled = true to trade real money"
        )
    if not settings.paper:
        raise LiveTradingRefusedError(
            "broker.paper = false means a LIVE account; set broker.live_trading_enabled = true "
            "to trade real money, or broker.paper = true for a paper account"
        )


class IBBroker:
    """`Broker` over ib_async. One instance = one API connection (one clientId)."""

    def __init__(
        self,
        settings: BrokerSettings,
        *,
        clock: Clock | None = None,
        qualify_batch_min: int = QUALIFY_BATCH_MIN,
    ) -> None:
        check_live_settings(settings)
        self.settings = settings
        self._clock: Clock = clock or SystemClock()
        self._ib = IB()
        self._ib.RaiseRequestErrors = True  # request errors raise RequestError with the code
        self._ib.client.MaxRequests = settings.max_messages_per_s  # ib_async's pacer; 0 = off
        self._ib.errorEvent += self._on_error
        self._ib.disconnectedEvent += self._on_disconnected
        self._ib.execDetailsEvent += self._on_exec_details
        self._ib.commissionReportEvent += self._on_commission
        self._client_id: int | None = None
        self._account: str | None = None
        self._ready_flag = False
        self._closing = False
        self._connecting = False
        self._reconnect_task: asyncio.Task[None] | None = None
        self._gave_up: BrokerError | None = None
        self._summary_subscribed = False
        self._journal: dict[str, Execution] = {}
        self._last_exec_time: datetime | None = None
        self._order_errors: dict[int, tuple[int, str]] = {}
        self._contracts_by_ref: dict[str, Contract] = {}
        self._listeners: list[Callable[[Execution], None]] = []
        self._locks: dict[str, asyncio.Lock] = {}
        self.reconnects = 0
        if qualify_batch_min < 0:
            raise ValueError(
                f"qualify_batch_min must be >= 0 (0 = one request per contract), "
                f"got {qualify_batch_min}"
            )
        # options of one expiry asked together from this many on go out as ONE request
        self.qualify_batch_min = qualify_batch_min
        self._qualified_by_key: dict[_QualKey, Contract] = {}
        self._qualified_by_id: dict[int, Contract] = {}
        self._pruned_on: date | None = None

    # ------------------------------------------------------------------ connection
    @property
    def is_connected(self) -> bool:
        return self._ready_flag and self._ib.isConnected()

    @property
    def client_id(self) -> int | None:
        return self._client_id

    @property
    def account(self) -> str | None:
        """The managed account in use (print it with `cv.mask_account`)."""
        return self._account

    @property
    def ib(self) -> IB:
        """The underlying ib_async client (for diagnostics; do not disconnect it directly)."""
        return self._ib

    def execution_journal(self) -> list[Execution]:
        """Every execution this broker has seen (live, recovered or requested), once each."""
        return sorted(self._journal.values(), key=lambda e: (e.time, e.exec_id))

    def add_execution_listener(self, listener: Callable[[Execution], None]) -> Callable[[], None]:
        """Call `listener` for each new execution (live fills and recovered ones)."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    async def connect(self) -> None:
        if self.is_connected:
            return
        task = self._reconnect_task
        if task is not None and not task.done() and not self._closing:
            await self._ready()  # a reconnect is under way: join it instead of racing it
            return
        self._closing = False
        self._gave_up = None
        await self._connect_any()
        await self._after_connect()

    async def disconnect(self) -> None:
        self._closing = True
        task = self._reconnect_task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._ready_flag = False
        self._ib.disconnect()
        self._release_client_id()

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Block until connected (e.g. after a drop); BrokerError when reconnecting gave up."""
        await asyncio.wait_for(self._ready(), timeout)

    def _release_client_id(self) -> None:
        if self._client_id is not None:
            _CLIENT_IDS_IN_USE.discard(self._client_id)

    def _candidate_ids(self) -> list[int]:
        s = self.settings
        ids = list(range(s.client_id_min, s.client_id_max + 1))
        preferred = [self._client_id] if self._client_id is not None else []
        rest = [i for i in ids if i not in _CLIENT_IDS_IN_USE and i not in preferred]
        return preferred + rest

    async def _connect_any(self) -> None:
        s = self.settings
        tried = 0
        for cid in self._candidate_ids():
            tried += 1
            try:
                await self._connect_once(cid)
                return
            except _ClientIdInUseError:
                logger.info("clientId %d is in use at %s:%d; trying the next", cid, s.host, s.port)
        raise BrokerError(
            f"no free clientId in broker.client_id_min..client_id_max "
            f"({s.client_id_min}..{s.client_id_max}): all {tried} answered 326 "
            "(in use); widen the range or stop the other API clients",
            ErrorClass.CONNECTIVITY,
            326,
        )

    async def _connect_once(self, cid: int) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        in_use: asyncio.Future[str] = loop.create_future()

        def on_error(req_id: int, code: int, message: str, contract: object) -> None:
            if code == 326 and not in_use.done():
                in_use.set_result(message)

        self._ib.errorEvent += on_error
        _CLIENT_IDS_IN_USE.add(cid)
        self._connecting = True
        task = asyncio.ensure_future(
            self._ib.connectAsync(
                s.host,
                s.port,
                clientId=cid,
                timeout=s.connect_timeout_s,
                account=s.account or "",
                fetchFields=_STARTUP_FETCH,
            )
        )
        try:
            await asyncio.wait({task, in_use}, return_when=asyncio.FIRST_COMPLETED)
            if in_use.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
                self._ib.disconnect()
                raise _ClientIdInUseError
            task.result()
        except _ClientIdInUseError:
            _CLIENT_IDS_IN_USE.discard(cid)
            raise
        except (OSError, TimeoutError, ConnectionError) as exc:
            _CLIENT_IDS_IN_USE.discard(cid)
            raise BrokerError(
                f"cannot connect to IB at {s.host}:{s.port} with clientId {cid}: {exc!r}; "
                "check that the gateway runs and its API port is enabled",
                ErrorClass.CONNECTIVITY,
            ) from exc
        finally:
            self._connecting = False
            self._ib.errorEvent -= on_error
        if self._client_id is not None and self._client_id != cid:
            _CLIENT_IDS_IN_USE.discard(self._client_id)
        self._client_id = cid

    async def _after_connect(self, *, reconnect: bool = False) -> None:
        """Account + live guard, market-data type, then recover executions."""
        s = self.settings
        accounts = list(self._ib.managedAccounts())
        _REDACTOR.accounts.update(accounts)
        try:
            account = self._choose_account(accounts)
            if not s.live_trading_enabled and s.paper and not account.startswith("D"):
                raise LiveTradingRefusedError(
                    f"account {cv.mask_account(account)} is not a paper account (paper accounts "
                    "start with 'D'); refusing to trade it without broker.live_trading_enabled "
                    "= true"
                )
        except BrokerError:
            self._closing = True
            self._ib.disconnect()
            self._release_client_id()
            raise
        self._account = account
        self._ib.reqMarketDataType(s.market_data_type.ib_code)
        self._summary_subscribed = False
        self._order_errors.clear()
        self._ready_flag = True
        if reconnect:
            self.reconnects += 1
        logger.info(
            "connected to IB %s:%d clientId %s account %s (market data %s)",
            s.host,
            s.port,
            self._client_id,
            cv.mask_account(account),
            s.market_data_type.value,
        )
        await self._recover_executions()

    def _choose_account(self, accounts: list[str]) -> str:
        wanted = self.settings.account
        if wanted:
            if wanted not in accounts:
                raise BrokerError(
                    f"broker.account {cv.mask_account(wanted)} is not managed by this login "
                    f"(managed: {[cv.mask_account(a) for a in accounts]}); fix broker.account",
                    ErrorClass.REJECTION,
                )
            return wanted
        if len(accounts) != 1:
            raise BrokerError(
                f"the login manages {len(accounts)} accounts "
                f"{[cv.mask_account(a) for a in accounts]}; set broker.account to choose one",
                ErrorClass.REJECTION,
            )
        return accounts[0]

    def _on_disconnected(self) -> None:
        was_ready = self._ready_flag
        self._ready_flag = False
        if self._closing or self._connecting or not was_ready:
            return
        logger.warning(
            "IB connection lost (clientId %s); reconnecting with back-off", self._client_id
        )
        if self._reconnect_task is None or self._reconnect_task.done():
            self._reconnect_task = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        s = self.settings
        delay = s.reconnect_backoff_s
        last: BaseException | None = None
        for attempt in range(1, s.reconnect_max_attempts + 1):
            await asyncio.sleep(delay)
            if self._closing:
                return
            try:
                await self._connect_any()
                await self._after_connect(reconnect=True)
                logger.info("reconnected to IB after %d attempt(s)", attempt)
                return
            except LiveTradingRefusedError as exc:
                self._gave_up = exc
                return
            except BrokerError as exc:
                last = exc
                logger.warning(
                    "reconnect attempt %d/%d failed: %s", attempt, s.reconnect_max_attempts, exc
                )
                delay *= 2
        self._gave_up = BrokerError(
            f"gave up reconnecting to IB after {s.reconnect_max_attempts} attempts "
            f"(last error: {last}); raise broker.reconnect_max_attempts or check the gateway",
            ErrorClass.CONNECTIVITY,
        )

    async def _ready(self) -> None:
        if self.is_connected:
            return
        task = self._reconnect_task
        if task is not None and not task.done() and not self._closing:
            await asyncio.shield(task)
            if self.is_connected:
                return
        if self._gave_up is not None:
            raise self._gave_up
        raise BrokerError("not connected to IB: call connect() first", ErrorClass.CONNECTIVITY)

    # ------------------------------------------------------------------ events
    def _on_error(self, req_id: int, code: int, message: str, contract: object) -> None:
        kind = cv.classify_error(code)
        if kind is ErrorClass.WARNING:
            logger.debug("IB %d (reqId %d): %s", code, req_id, message)
        else:
            logger.info("IB error %d [%s] reqId %d: %s", code, kind.value, req_id, message)
        if code in (1100, 1300):
            logger.warning("IB reports lost connectivity (%d): %s", code, message)
        if req_id > 0 and kind is not ErrorClass.WARNING:
            # kept per request id; it matters when the id is one of our orders (ids and
            # request ids share one sequence, so the two never collide)
            self._order_errors[req_id] = (code, message)

    def _on_exec_details(self, trade: Trade, fill: Fill) -> None:
        self._ingest(fill)

    def _on_commission(self, trade: Trade, fill: Fill, report: object) -> None:
        self._ingest(fill)

    def _ingest(self, fill: Fill) -> Execution | None:
        """Record a fill once (by exec_id); a later commission report fills in the cost."""
        e = cv.execution_from_fill(fill)
        known = self._journal.get(e.exec_id)
        if known is not None:
            if math.isnan(known.commission) and not math.isnan(e.commission):
                self._journal[e.exec_id] = e
            return None
        self._journal[e.exec_id] = e
        if self._last_exec_time is None or e.time > self._last_exec_time:
            self._last_exec_time = e.time
        for listener in list(self._listeners):
            try:
                listener(e)
            except Exception:
                logger.exception("execution listener failed for %s", e.exec_id)
        return e

    async def _recover_executions(self) -> None:
        """Ask for executions since the last one seen (all, on a first connect)."""
        since = self._last_exec_time
        try:
            fills = await self._fetch_fills(since - timedelta(seconds=1) if since else None)
        except BrokerError as exc:
            logger.warning("could not recover executions after connecting: %s", exc)
            return
        new = [e for f in fills if (e := self._ingest(f)) is not None]
        if new and since is not None:
            logger.info("recovered %d execution(s) made while disconnected", len(new))

    # ------------------------------------------------------------------ plumbing
    def _lock(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    async def _request(self, what: str, awaitable: Awaitable[T], timeout: float | None = None) -> T:
        """Await an ib_async request with a timeout, mapping failures onto BrokerError."""
        limit = timeout if timeout is not None else self.settings.request_timeout_s
        try:
            return await asyncio.wait_for(awaitable, limit)
        except RequestError as exc:
            raise BrokerError(
                f"{what}: {exc.message}", cv.classify_error(exc.code), exc.code
            ) from exc
        except TimeoutError as exc:
            raise BrokerError(
                f"{what}: no answer within {limit:g} s (broker.request_timeout_s)",
                ErrorClass.CONNECTIVITY if not self._ib.isConnected() else ErrorClass.DATA,
            ) from exc
        except ConnectionError as exc:
            raise BrokerError(f"{what}: connection lost ({exc})", ErrorClass.CONNECTIVITY) from exc

    async def _barrier(self) -> None:
        """A round trip: everything the gateway sent before its answer has been processed."""
        async with self._lock("currentTime"):
            await self._request("barrier", self._ib.reqCurrentTimeAsync())

    async def _fetch_fills(self, since: datetime | None) -> list[Fill]:
        flt = ExecutionFilter(time=cv.ib_filter_time(since)) if since else ExecutionFilter()
        fills: list[Fill] = await self._request("executions", self._ib.reqExecutionsAsync(flt))
        known = {f.execution.execId: f for f in self._ib.fills()}
        out = []
        for f in fills:
            seen = known.get(f.execution.execId)
            if seen is not None and seen.commissionReport.execId:
                f = Fill(f.contract, f.execution, seen.commissionReport, f.time)
            out.append(f)
        return out

    # ------------------------------------------------------------------ read-only
    async def current_time(self) -> datetime:
        await self._ready()
        async with self._lock("currentTime"):
            t: datetime = await self._request("current time", self._ib.reqCurrentTimeAsync())
        return t.astimezone(UTC)

    async def account_summary(self) -> AccountSummary:
        await self._ready()
        if not self._summary_subscribed:  # one subscription per connection (IB allows 2)
            await self._request("account summary", self._ib.reqAccountSummaryAsync())
            self._summary_subscribed = True
        else:
            await self._barrier()  # pushed updates sent before now are in
        assert self._account is not None
        values = await self._ib.accountSummaryAsync(self._account)
        return cv.account_summary_from_values(self._account, values)

    async def positions(self) -> list[Position]:
        await self._ready()
        async with self._lock("positions"):
            got = await self._request("positions", self._ib.reqPositionsAsync())
        return [
            cv.position_from_ib(p)
            for p in got
            if p.position != 0 and (self._account is None or p.account == self._account)
        ]

    async def open_orders(self) -> list[OrderState]:
        await self._ready()
        async with self._lock("openOrders"):
            trades: list[Trade] = await self._request(
                "open orders", self._ib.reqAllOpenOrdersAsync()
            )
        out = []
        seen: set[int] = set()
        for t in trades:
            if t.isDone() or t.order.permId in seen:
                continue
            seen.add(t.order.permId)
            out.append(self._state(t))
        return out

    async def executions(self, since: datetime | None = None) -> list[Execution]:
        """Fills at or after `since` (seconds resolution on the wire), each exec_id once."""
        if since is not None and since.tzinfo is None:
            raise ValueError(f"since must be tz-aware UTC, got {since!r}")
        await self._ready()
        fills = await self._fetch_fills(since)
        floor = since.replace(microsecond=0) if since is not None else None
        out: list[Execution] = []
        seen: set[str] = set()
        for f in fills:
            self._ingest(f)
            e = cv.execution_from_fill(f)
            if e.exec_id in seen or (floor is not None and e.time < floor):
                continue
            seen.add(e.exec_id)
            out.append(e)
        return out

    async def qualify(self, contracts: Sequence[Contract]) -> list[Contract | None]:
        """Qualified contracts in the order asked (None: IB does not know it).

        Why not one request per contract: IB paces at `max_messages_per_s`, and a chain
        snapshot asks for hundreds of options. Positive answers are cached (con_ids are
        permanent; options and futures drop out once expired); options of one expiry asked
        `qualify_batch_min` or more at a time are qualified with ONE request that leaves the
        strike and right open, and matched back by (strike, right).
        """
        await self._ready()
        self._prune_qualified()
        unique: dict[_QualKey, Contract] = {}
        for c in contracts:
            unique.setdefault(_qual_key(c), c)
        answers: dict[_QualKey, Contract | None] = {}
        families: dict[tuple[object, ...], list[_QualKey]] = {}
        singles: list[_QualKey] = []
        for k, c in unique.items():
            hit = self._cached(k)
            if hit is not None:
                answers[k] = hit
            elif self.qualify_batch_min > 0 and _batchable(c):
                families.setdefault(_family_key(c), []).append(k)
            else:
                singles.append(k)
        batches: list[list[_QualKey]] = []
        for keys in families.values():
            if len(keys) >= self.qualify_batch_min:
                batches.append(keys)
            else:
                singles.extend(keys)
        got_single, got_batch = await asyncio.gather(
            asyncio.gather(*(self._qualify_one(unique[k]) for k in singles)),
            asyncio.gather(*(self._qualify_family([unique[k] for k in ks]) for ks in batches)),
        )
        answers.update(zip(singles, got_single, strict=True))
        for keys, got in zip(batches, got_batch, strict=True):
            answers.update(zip(keys, got, strict=True))
        return [answers[_qual_key(c)] for c in contracts]

    # ----------------------------------------------------------- qualification cache
    def _market_date(self) -> date:
        return self._clock.now().astimezone(_MARKET_TZ).date()

    def _expired(self, c: Contract) -> bool:
        """An option or future whose expiry is before today's market date: IB no longer
        answers for it (without includeExpired), so neither does the cache."""
        return (
            c.sec_type in (SecType.OPT, SecType.FUT)
            and c.expiry is not None
            and c.expiry < self._market_date()
        )

    def _cached(self, key: _QualKey) -> Contract | None:
        hit = self._qualified_by_key.get(key)
        if hit is not None and self._expired(hit):
            del self._qualified_by_key[key]
            return None
        return hit

    def _remember(self, key: _QualKey, c: Contract) -> None:
        self._qualified_by_key[key] = c
        if c.con_id:
            self._qualified_by_id[c.con_id] = c

    def _prune_qualified(self) -> None:
        """Drop expired entries once per market date (the cache also holds listed options
        nobody asked for yet, which a lookup would never evict)."""
        today = self._market_date()
        if self._pruned_on == today:
            return
        self._pruned_on = today
        self._qualified_by_key = {
            k: c for k, c in self._qualified_by_key.items() if not self._expired(c)
        }
        self._qualified_by_id = {
            i: c for i, c in self._qualified_by_id.items() if not self._expired(c)
        }

    # ----------------------------------------------------------- qualification requests
    async def _qualify_one(self, c: Contract) -> Contract | None:
        if c.sec_type is SecType.BAG:  # details carry no legs: a combo is known when its legs are
            legs = await asyncio.gather(*(self._known_con_id(leg.con_id) for leg in c.combo_legs))
            return c if all(legs) else None
        key = _qual_key(c)
        hit = self._cached(key)
        if hit is not None:
            return hit
        try:
            details = await self._request(
                f"contract details for {c.describe()}",
                self._ib.reqContractDetailsAsync(cv.to_ib_contract(c)),
            )
        except BrokerError as exc:
            if exc.code == 200:
                return None
            raise
        if len(details) != 1 or details[0].contract is None:
            return None
        q = cv.from_ib_contract(details[0].contract)
        self._remember(key, q)
        return q

    async def _qualify_family(self, contracts: list[Contract]) -> list[Contract | None]:
        """Options sharing (symbol, expiry, multiplier, exchange, currency, trading class),
        qualified with one strike-0/any-right request; each is matched back by
        (strike, right). A (strike, right) listed more than once (several trading classes)
        is asked for on its own, as `_qualify_one` would; not listed -> None."""
        first = contracts[0]
        ask = cv.to_ib_contract(first)
        ask.strike, ask.right = 0.0, ""
        try:
            details = await self._request(
                f"option contracts of {first.symbol} {first.expiry} (all strikes and rights)",
                self._ib.reqContractDetailsAsync(ask),
            )
        except BrokerError as exc:
            if exc.code == 200:
                return [None] * len(contracts)
            raise
        listed: dict[tuple[float, Right], list[Contract]] = {}
        for d in details:
            if d.contract is None or d.contract.secType != SecType.OPT.value:
                continue
            q = cv.from_ib_contract(d.contract)
            if q.strike is not None and q.right is not None:
                listed.setdefault((_strike_key(q.strike), q.right), []).append(q)
        for (strike, right), found in listed.items():  # the whole expiry, asked for or not
            if len(found) == 1:
                self._remember(_qual_key(replace(first, strike=strike, right=right)), found[0])
        out: list[Contract | None] = []
        ambiguous: list[int] = []
        for i, c in enumerate(contracts):
            assert c.strike is not None and c.right is not None
            found = listed.get((_strike_key(c.strike), c.right), [])
            out.append(found[0] if len(found) == 1 else None)
            if len(found) > 1:
                ambiguous.append(i)
        if ambiguous:
            again = await asyncio.gather(*(self._qualify_one(contracts[i]) for i in ambiguous))
            for i, answer in zip(ambiguous, again, strict=True):
                out[i] = answer
        return out

    async def _known_con_id(self, con_id: int) -> bool:
        hit = self._qualified_by_id.get(con_id)
        if hit is not None and not self._expired(hit):
            return True
        try:
            details = await self._request(
                f"contract details for conId {con_id}",
                self._ib.reqContractDetailsAsync(IBContract(conId=con_id)),
            )
        except BrokerError as exc:
            if exc.code == 200:
                return False
            raise
        if len(details) != 1:
            return False
        with contextlib.suppress(ValueError):  # a sec type V6 does not model: known, uncached
            if details[0].contract is not None:
                self._qualified_by_id[con_id] = cv.from_ib_contract(details[0].contract)
        return True

    async def _qualified(self, c: Contract) -> Contract:
        """`c` with a con_id (qualified when it had none); unchanged if IB does not know it."""
        if c.con_id or c.sec_type is SecType.BAG:
            return c
        q = await self._qualify_one(c)
        return q if q is not None else c

    async def option_chain(self, underlying: str) -> list[OptionChain]:
        await self._ready()
        und = await self._qualify_one(Contract.stock(underlying))
        if und is None:
            und = await self._qualify_one(Contract.index(underlying))
        if und is None:
            return []
        chains = await self._request(
            f"option chains of {underlying}",
            self._ib.reqSecDefOptParamsAsync(und.symbol, "", und.sec_type.value, und.con_id),
        )
        return [cv.chain_from_ib(und.symbol, ch) for ch in chains]

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
        await self._ready()
        c = await self._qualified(contract)
        if what == "TRADES" and c.sec_type in (SecType.OPT, SecType.BAG):
            what = "MIDPOINT"  # option prints are sparse: the protocol serves TRADES as mids
        timeout = self.settings.request_timeout_s
        start = asyncio.get_running_loop().time()
        bars = await self._request(
            f"historical bars of {c.describe()}",
            self._ib.reqHistoricalDataAsync(
                cv.to_ib_contract(c),
                end.astimezone(UTC),
                cv.duration_str(duration),
                bar_size,
                whatToShow=what,
                useRTH=False,
                formatDate=2,
                timeout=timeout,
            ),
            timeout=timeout + 1.0,
        )
        if not bars and asyncio.get_running_loop().time() - start >= timeout * 0.99:
            raise BrokerError(
                f"historical bars of {c.describe()}: no answer within {timeout:g} s "
                "(broker.request_timeout_s)",
                ErrorClass.DATA,
            )
        return [cv.bar_from_ib(b) for b in bars]

    # ------------------------------------------------------------------ quotes
    async def quotes(self, contracts: Sequence[Contract]) -> list[Quote]:
        """Stream each contract until its first full set of ticks (bid, ask, and model
        greeks for options) or `snapshot_timeout_s`, then cancel every stream (finally).
        101 (no market-data line left) raises CAPACITY; other per-contract errors give a
        NaN quote."""
        await self._ready()
        if not contracts:
            return []
        async with self._lock("quotes"):  # ib_async shares one Ticker per contract
            return await self._quotes(contracts)

    async def _quotes(self, contracts: Sequence[Contract]) -> list[Quote]:
        resolved = [await self._qualified(c) for c in contracts]
        keyed: dict[object, tuple[Contract, IBContract]] = {}
        for c in resolved:
            k = _quote_key(c)
            if k not in keyed and (c.con_id or c.sec_type is SecType.BAG):
                keyed[k] = (c, cv.to_ib_contract(c))  # unknown contracts get a NaN quote
        errors: dict[int, tuple[int, str]] = {}
        wanted = {id(ibc): k for k, (_, ibc) in keyed.items()}
        wake = asyncio.Event()

        def on_error(req_id: int, code: int, message: str, contract: object) -> None:
            relevant = contract is not None and id(contract) in wanted and req_id >= 0
            if relevant and cv.classify_error(code) is not ErrorClass.WARNING:
                errors[id(contract)] = (code, message)
                wake.set()

        def on_pending(_tickers: object) -> None:
            wake.set()

        tickers: dict[object, Ticker] = {}
        self._ib.errorEvent += on_error
        self._ib.pendingTickersEvent += on_pending
        try:
            for k, (_, ibc) in keyed.items():
                tickers[k] = _reset(self._ib.reqMktData(ibc, "", False, False))
            await self._barrier()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.settings.snapshot_timeout_s
            while True:
                pending = [
                    k
                    for k, (c, ibc) in keyed.items()
                    if id(ibc) not in errors and not _ticks_complete(c, tickers[k])
                ]
                if not pending or any(code == 101 for code, _ in errors.values()):
                    break
                remaining = deadline - loop.time()
                if remaining <= 0:
                    logger.info(
                        "quotes: %d contract(s) incomplete after %.1f s",
                        len(pending),
                        self.settings.snapshot_timeout_s,
                    )
                    break
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), remaining)
        finally:
            self._ib.errorEvent -= on_error
            self._ib.pendingTickersEvent -= on_pending
            if self._ib.isConnected():
                for k in tickers:
                    with contextlib.suppress(Exception):
                        self._ib.cancelMktData(keyed[k][1])
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
            if k not in tickers or id(keyed[k][1]) in errors:
                out.append(Quote(contract=asked, time=now))
            else:
                out.append(cv.quote_from_ticker(tickers[k], c, now))
        return out

    # ------------------------------------------------------------------ orders
    def _state(self, trade: Trade, fills: Iterable[Fill] = ()) -> OrderState:
        ref = trade.order.orderRef
        contract = self._contracts_by_ref.get(ref)
        if contract is None:
            try:
                contract = cv.from_ib_contract(trade.contract)
            except ValueError:
                contract = None
        note = self._order_errors.get(trade.order.orderId) if self._own(trade) else None
        state = cv.order_state_from_trade(trade, contract=contract, fills=fills, error=note)
        if state.order_id == 0:
            for f in fills:
                if f.execution.permId == state.perm_id and f.execution.orderId:
                    return _replace_order_id(state, int(f.execution.orderId))
        return state

    def _own(self, trade: Trade) -> bool:
        return trade.order.clientId == self._client_id and trade.order.orderId > 0

    async def find_order(self, order_ref: str) -> OrderState | None:
        """Search this session's live orders, then open orders, completed orders and
        executions at the broker (all clients), for an order carrying `order_ref`."""
        if not order_ref:
            raise ValueError("order_ref must be non-empty")
        await self._ready()
        async with self._lock("lookup"):
            own = [t for t in self._ib.trades() if self._own(t) and t.order.orderRef == order_ref]
            if own:
                await self._barrier()
                return self._state(own[-1])
            async with self._lock("openOrders"):
                open_trades: list[Trade] = await self._request(
                    "open orders", self._ib.reqAllOpenOrdersAsync()
                )
            for t in open_trades:
                if t.order.orderRef == order_ref:
                    return self._state(t, await self._fetch_fills(None))
            async with self._lock("completedOrders"):
                done: list[Trade] = await self._request(
                    "completed orders", self._ib.reqCompletedOrdersAsync(False)
                )
            matches = [t for t in done if t.order.orderRef == order_ref]
            fills = await self._fetch_fills(None)
            if matches:
                return self._state(matches[-1], fills)
            ref_fills = [f for f in fills if f.execution.orderRef == order_ref]
            if ref_fills:
                return self._state_from_fills(order_ref, ref_fills)
        return None

    def _state_from_fills(self, order_ref: str, fills: list[Fill]) -> OrderState:
        """Last resort when only executions remember an order: a FILLED state from them."""
        first = fills[0]
        contract = self._contracts_by_ref.get(order_ref) or cv.from_ib_contract(first.contract)
        qty = int(sum(f.execution.shares for f in fills))
        notional = sum(f.execution.shares * f.execution.price for f in fills)
        return OrderState(
            order_id=int(first.execution.orderId),
            order_ref=order_ref,
            contract=contract,
            action=Action.BUY if first.execution.side == "BOT" else Action.SELL,
            quantity=qty,
            status=OrderStatus.FILLED,
            filled=qty,
            avg_fill_price=notional / qty if qty else math.nan,
            perm_id=int(first.execution.permId),
            message="reconstructed from executions",
        )

    async def place_order(self, order: OrderRequest) -> OrderState:
        """Place once per `order_ref`: an order the broker already has is returned, not
        placed again (also when a disconnect hid the acknowledgement of our own attempt)."""
        if order.what_if:  # a margin check, as SimExchange answers it: nothing is placed
            margin = await self.what_if(order)
            return OrderState(
                order_id=0,
                order_ref=order.order_ref,
                contract=order.contract,
                action=order.action,
                quantity=order.quantity,
                status=OrderStatus.CANCELLED,
                limit_price=order.limit_price,
                order_type=order.order_type,
                message=f"what-if only: initial margin {margin:.2f}",
            )
        await self._ready()
        async with self._lock("orders"):
            existing = await self.find_order(order.order_ref)
            if existing is not None:
                logger.info(
                    "order %s already at the broker (permId %d, %s): not placing again",
                    order.order_ref,
                    existing.perm_id,
                    existing.status.value,
                )
                return existing
            contract = await self._qualified(order.contract)
            self._contracts_by_ref[order.order_ref] = contract
            ib_order = cv.to_ib_order(order, self._account or "")
            trade = self._ib.placeOrder(cv.to_ib_contract(contract), ib_order)
            logger.info(
                "placed %s %d %s (%s) as orderId %d",
                order.action.value,
                order.quantity,
                contract.describe(),
                order.order_ref,
                trade.order.orderId,
            )
            return await self._await_ack(trade, order)

    async def _await_ack(self, trade: Trade, order: OrderRequest) -> OrderState:
        ref = order.order_ref
        acked = await self._wait_trade(
            trade,
            lambda t: t.orderStatus.status not in _UNACKED or t.isDone(),
            self.settings.request_timeout_s,
        )
        if acked is None or not self.is_connected:
            # lost the socket or the answer: the order may or may not be at the broker
            logger.warning("no acknowledgement for order %s; looking it up after reconnect", ref)
            await self._ready()
            found = await self.find_order(ref)
            if found is not None:
                return found
            raise BrokerError(
                f"order {ref} was not acknowledged and the broker does not know it; "
                "placing it again is safe",
                ErrorClass.CONNECTIVITY,
            )
        await self._barrier()  # immediate fills sent right after the ack are now in
        return self._state(trade)

    async def _wait_trade(
        self, trade: Trade, done: Callable[[Trade], bool], timeout: float
    ) -> Trade | None:
        """Wait for `done(trade)`; None on timeout or when the connection drops."""
        if done(trade):
            return trade
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Trade | None] = loop.create_future()

        def on_status(t: Trade) -> None:
            if not fut.done() and done(t):
                fut.set_result(t)

        def on_drop() -> None:
            if not fut.done():
                fut.set_result(None)

        trade.statusEvent += on_status
        self._ib.disconnectedEvent += on_drop
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return None
        finally:
            trade.statusEvent -= on_status
            self._ib.disconnectedEvent -= on_drop

    async def cancel_order(self, order_id: int) -> OrderState:
        await self._ready()
        trade = next(
            (t for t in self._ib.trades() if self._own(t) and t.order.orderId == order_id), None
        )
        if trade is None:
            async with self._lock("openOrders"):
                trades: list[Trade] = await self._request(
                    "open orders", self._ib.reqAllOpenOrdersAsync()
                )
            trade = next((t for t in trades if t.order.orderId == order_id), None)
        if trade is None:
            raise BrokerError(
                f"order {order_id} is not known to this session or open at the broker",
                ErrorClass.REJECTION,
                10147,
            )
        if trade.isDone():
            return self._state(trade)
        self._ib.cancelOrder(trade.order)
        await self._wait_trade(trade, lambda t: t.isDone(), self.settings.request_timeout_s)
        if self._ib.isConnected():
            await self._barrier()
        return self._state(trade)

    async def what_if(self, order: OrderRequest) -> float:
        await self._ready()
        contract = await self._qualified(order.contract)
        state = await self._request(
            f"what-if margin for {order.order_ref}",
            self._ib.whatIfOrderAsync(
                cv.to_ib_contract(contract), cv.to_ib_order(order, self._account or "")
            ),
        )
        value = cv.clean(_float(state.initMarginChange))
        if math.isnan(value):
            raise BrokerError(
                f"what-if for {order.order_ref} returned no initial margin", ErrorClass.DATA
            )
        return value


def _float(text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _strike_key(strike: float) -> float:
    return round(strike, 6)


def _qual_key(c: Contract) -> _QualKey:
    """A contract's identity as asked. The con_id is part of it only when the caller gave
    one (IB answers such a request by the con_id); the local symbol likewise narrows it."""
    strike = _strike_key(c.strike) if c.strike is not None else None
    return (
        c.symbol,
        c.sec_type,
        c.expiry,
        strike,
        c.right,
        c.multiplier,
        c.exchange,
        c.currency,
        c.trading_class,
        c.local_symbol,
        c.con_id,
        c.combo_legs,
    )


def _family_key(c: Contract) -> tuple[object, ...]:
    return (c.symbol, c.expiry, c.multiplier, c.exchange, c.currency, c.trading_class)


def _batchable(c: Contract) -> bool:
    """An option IB can find in a listing of its expiry (not pinned by con_id or local
    symbol, which a strike-0 request would ignore)."""
    return c.sec_type is SecType.OPT and not c.con_id and not c.local_symbol


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


def _replace_order_id(state: OrderState, order_id: int) -> OrderState:
    return replace(state, order_id=order_id)


__all__ = ["QUALIFY_BATCH_MIN", "IBBroker", "LiveTradingRefusedError", "check_live_settings"]
