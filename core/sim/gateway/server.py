"""An asyncio TCP server that speaks the TWS API (server version 178) over a SimExchange.

Why: the production path (`IBBroker` + unmodified ib_async) must be testable for real,
on loopback, including the faults a live gateway produces. The server owns only what a
socket owns (sessions, clientIds, request ids, market-data lines, pacing, dropped
connections); everything a market owns (prices, matching, fills, positions, market-level
faults) is delegated to one `SimExchange`, so SimBroker and this gateway behave alike.

Threading model: one event loop. Requests are handled synchronously in arrival order
(so replies keep TCP order, as TWS does), exchange events are queued while a request runs
and pumped afterwards, and every session's output is flushed once per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import re
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from datetime import time as dt_time
from typing import Any, Protocol

from core.config import Settings, SimSettings
from core.domain import (
    AccountSummary,
    Action,
    Bar,
    ComboLeg,
    Contract,
    Dividends,
    Execution,
    MarginImpact,
    OptionChain,
    OrderRequest,
    OrderState,
    OrderStatus,
    OrderType,
    Position,
    Quote,
    SecType,
)
from core.domain.accounts import mask_account
from core.domain.timezones import MARKET_TZ
from core.sim.calendar import to_epoch
from core.sim.exchange import ExecutionReported
from core.sim.gateway import messages as msg
from core.sim.gateway import requests as rq
from core.sim.gateway.faults import GatewayFaults, HistoricalPacing, Pacer
from core.sim.gateway.wire import (
    MIN_CLIENT_VERSION,
    SERVER_VERSION,
    Framer,
    ProtocolError,
    encode,
)

logger = logging.getLogger(f"v6.{__name__}")

FARM_NOTICES = (
    (2104, "Market data farm connection is OK:usfarm"),
    (2106, "HMDS data farm connection is OK:ushmds"),
    (2158, "Sec-def data farm connection is OK:secdefnj"),
)
# What IB answers a market-data request the account is not entitled to (TWS API message
# codes). 10167 is a warning: delayed data follows. The others carry no data, except
# 10090, after which the subscription-independent ticks (last, volume) still come.
ENTITLEMENT_MESSAGES = {
    354: "Requested market data is not subscribed. Delayed market data is available.",
    10090: "Part of requested market data is not subscribed. Subscription-independent ticks "
    "are still active.Delayed market data is available.",
    10167: "Requested market data is not subscribed. Displaying delayed market data.",
    10168: "Requested market data is not subscribed. Delayed market data is not enabled.",
    10197: "No market data during competing live session",
}
DELAYED_BY = timedelta(minutes=15)  # IB's delayed feed: 15-20 minutes behind the market
CONNECTIVITY_MESSAGES = {
    1100: "Connectivity between IB and Trader Workstation has been lost.",
    1101: "Connectivity between IB and TWS has been restored- data lost.",
    1102: "Connectivity between IB and TWS has been restored- data maintained.",
}
_IB_STATUS = {
    OrderStatus.PENDING: "PreSubmitted",
    OrderStatus.SUBMITTED: "Submitted",
    OrderStatus.FILLED: "Filled",
    OrderStatus.CANCELLED: "Cancelled",
    OrderStatus.REJECTED: "Inactive",
}
_SUMMARY_TAGS = (
    "AccountType",
    "NetLiquidation",
    "TotalCashValue",
    "EquityWithLoanValue",
    "BuyingPower",
    "AvailableFunds",
    "ExcessLiquidity",
    "InitMarginReq",
    "MaintMarginReq",
    "FullInitMarginReq",
    "FullMaintMarginReq",
    "FullAvailableFunds",
    "FullExcessLiquidity",
)
_LEDGER_TAGS = ("RealizedPnL", "UnrealizedPnL", "NetLiquidationByCurrency")
MASTER_CLIENT_ID = 0  # may cancel any client's order (as TWS's clientId 0 does)


class ExchangeLike(Protocol):
    """The part of `SimExchange` the gateway uses (kept structural so a test double fits)."""

    account: str
    faults: Any
    market: Any
    habits: SimSettings

    def qualify(self, contract: Contract) -> Contract | None: ...
    def contract_by_id(self, con_id: int) -> Contract | None: ...
    def option_chains(self, underlying: str) -> list[OptionChain]: ...
    def quote(self, contract: Contract) -> Quote: ...
    def quotes(self, contracts: Sequence[Contract], at: datetime | None = None) -> list[Quote]: ...
    def bars(
        self,
        contract: Contract,
        *,
        end: datetime,
        duration: timedelta,
        bar_size: str = "1 min",
        what: str = "TRADES",
    ) -> list[Bar]: ...
    def place_order(self, order: OrderRequest, *, client_id: int = 0) -> OrderState: ...
    def cancel_order(self, order_id: int) -> OrderState: ...
    def order(self, order_id: int) -> OrderState: ...
    def find_order(self, order_ref: str) -> OrderState | None: ...
    def open_orders(self) -> list[OrderState]: ...
    def completed_orders(self) -> list[OrderState]: ...
    def reports(self, since: datetime | None = None) -> list[ExecutionReported]: ...
    def positions(self) -> list[Position]: ...
    def account_summary(self) -> AccountSummary: ...
    def what_if(self, order: OrderRequest) -> float: ...
    def margin_impact(self, order: OrderRequest) -> MarginImpact: ...
    def dividends(self, contract: Contract) -> Dividends | None: ...
    def on_clock(self) -> list[Execution]: ...
    def subscribe(self, listener: Callable[[Any], None]) -> Callable[[], None]: ...


@dataclass(frozen=True, slots=True)
class _Link:
    """Which API client placed an exchange order, under which of its order ids."""

    client_id: int
    api_order_id: int
    tif: str = "DAY"


@dataclass
class _Stream:
    contract: Contract
    md_type: int  # the marketDataType last reported for this stream
    delayed: bool = False  # served from the delayed feed (DELAYED_BY behind)
    partial: bool = False  # 10090: only the subscription-independent ticks (no bid/ask)


@dataclass(frozen=True, slots=True)
class _LateCommission:
    due: int  # market epoch seconds
    client_id: int
    commission: float


@dataclass(eq=False)
class _Session:
    serial: int
    writer: asyncio.StreamWriter
    peer: str
    client_id: int | None = None
    api_seen: bool = False
    greeted: bool = False
    md_type: int = 1
    out: list[bytes] = field(default_factory=list)
    streams: dict[int, _Stream] = field(default_factory=dict)
    positions_sub: bool = False
    account_updates: bool = False
    summary_subs: dict[int, tuple[str, ...]] = field(default_factory=dict)
    closed: bool = False
    dropped: bool = False  # ended by a network failure: its clientId lingers (326)
    close_after_flush: bool = False
    messages_in: int = 0
    messages_out: int = 0

    def send(self, fields: list[object]) -> None:
        if not self.closed:
            self.out.append(encode(fields))
            self.messages_out += 1

    def send_raw(self, data: bytes, count: int) -> None:
        if not self.closed:
            self.out.append(data)
            self.messages_out += count

    def flush(self) -> None:
        if self.out and not self.closed:
            self.writer.write(b"".join(self.out))
        self.out.clear()

    def abort(self) -> None:
        """Drop the socket without a goodbye (a network failure, as the client sees it)."""
        self.closed = True
        self.dropped = True
        self.out.clear()
        self.writer.transport.abort()


class GatewayServer:
    """The gateway simulator. Use `async with GatewayServer(exchange) as gw:`; `gw.port`."""

    def __init__(
        self,
        exchange: ExchangeLike,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        market_data_lines: int = 100,
        pacing: HistoricalPacing | None = None,
        pacing_clock: Callable[[], float] | None = None,
        accounts: Iterable[str] | None = None,
        realtime_data: bool = False,
    ) -> None:
        """`realtime_data`: the account holds real-time market-data subscriptions. Without
        them (IB's default for a paper account) a live request (type 1/2) answers 354 and
        a delayed one (3/4) gets 10167 and data `DELAYED_BY` behind; with them every type
        gets live data, as IB serves an entitled account."""
        if market_data_lines < 1:
            raise ValueError(f"market_data_lines must be >= 1, got {market_data_lines}")
        self.exchange = exchange
        self.host = host
        self._port = port
        self.market_data_lines = market_data_lines
        self.realtime_data = realtime_data
        # Pacing is judged on the wall clock (as IB does) unless a fast simulated run passes
        # its market clock (seconds): then a simulated hour allows an hour's requests.
        # A dropped client's id lingers on the same clock.
        self._wall = pacing_clock or time.monotonic
        self.pacer = Pacer(pacing or HistoricalPacing(), now=self._wall)
        self.faults = GatewayFaults()
        self.accounts = list(accounts) if accounts is not None else [exchange.account]
        self.protocol_errors: list[str] = []
        self.unsupported: list[int] = []
        # every message received after the handshake, by API name ("reqContractDetails"):
        # what a pacing budget (broker.max_messages_per_s) is spent on; `.clear()` to reset
        self.request_counts: Counter[str] = Counter()
        self._server: asyncio.Server | None = None
        self._sessions: dict[int, _Session] = {}
        self._serial = 0
        self._next_ids: dict[int, int] = {}
        self._links: dict[int, _Link] = {}
        self._by_api: dict[tuple[int, int], int] = {}
        self._events: deque[Any] = deque()
        self._unsubscribe: Callable[[], None] | None = None
        self._exec_cum: dict[str, tuple[int, float]] = {}
        self._held_ids: dict[int, float] = {}  # clientId -> until (self._wall) it stays taken
        self._late: dict[str, _LateCommission] = {}  # execId -> its commission, not yet sent
        self._rng_commission = random.Random(f"{exchange.habits.seed}:commission")
        self._last_fill: dict[int, float] = {}
        self._seen_order_msgs: set[int] = set()
        self._rejected_sent: set[int] = set()
        self._dispatching = False
        self._pump_scheduled = False
        self._synced_at: datetime | None = None
        self.ticked = asyncio.Event()  # set by every advance(): lets callers await a tick

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._server is not None:
            return
        self._unsubscribe = self.exchange.subscribe(self._on_event)
        self._server = await asyncio.start_server(self._serve, self.host, self._port)
        sock = self._server.sockets[0]
        self._port = sock.getsockname()[1]
        logger.info(
            "gateway simulator listening on %s:%d (v%d)", self.host, self._port, SERVER_VERSION
        )

    async def close(self) -> None:
        for s in list(self._sessions.values()):
            s.abort()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    async def __aenter__(self) -> GatewayServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def port(self) -> int:
        return self._port

    @property
    def now(self) -> datetime:
        now: datetime = self.exchange.market.clock.now()
        return now

    # ------------------------------------------------------------------ introspection
    def client_ids(self) -> list[int]:
        """clientIds of the sessions that completed startApi, in connection order."""
        return [s.client_id for s in self._sessions.values() if s.client_id is not None]

    def active_lines(self) -> int:
        """Market-data lines held by streaming subscriptions across all sessions."""
        return sum(len(s.streams) for s in self._sessions.values() if not s.closed)

    def messages_sent(self) -> int:
        return sum(s.messages_out for s in self._sessions.values())

    # ------------------------------------------------------------------ time
    def _sync_clock(self) -> None:
        """Let the exchange catch up when its clock moved since we last looked (someone
        advanced it directly): resting orders fill, DAY orders expire, options settle."""
        now = self.now
        if now != self._synced_at:
            self._synced_at = now
            self.exchange.on_clock()

    def advance(self, delta: timedelta, *, publish: bool = True) -> list[Execution]:
        """Move the simulated clock, let the exchange match, push events and fresh ticks."""
        self._dispatching = True
        try:
            self.exchange.market.clock.advance(delta)
            self._synced_at = self.now
            fills = self.exchange.on_clock()
            self._pump()
            self._release_commissions()
        finally:
            self._dispatching = False
        if publish:
            self.publish_quotes()
        self._flush_all()
        self.ticked.set()
        return fills

    def publish_quotes(self) -> int:
        """Send every stream a fresh set of ticks (quotes priced in one batch); returns the
        number of messages queued."""
        streams = [
            (s, req_id, stream)
            for s in self._sessions.values()
            if not s.closed
            for req_id, stream in s.streams.items()
        ]
        if not streams or self.faults.silent_market_data:
            return 0
        quotes: dict[tuple[int, int], Quote | None] = {}
        for delayed in (False, True):  # one priced batch per feed
            group = [(s, r, st) for s, r, st in streams if st.delayed is delayed]
            if not group:
                continue
            try:
                contracts = [st.contract for _, _, st in group]
                got: list[Quote | None] = list(
                    self.exchange.quotes(contracts, self._feed_at(delayed))
                )
            except ValueError:  # one contract went away (expired): price them one by one
                got = [None] * len(group)
            quotes |= {(s.serial, r): q for (s, r, _), q in zip(group, got, strict=True)}
        count = 0
        for s, req_id, stream in streams:
            q = quotes[(s.serial, req_id)]
            count += self._send_quote(s, req_id, stream, snapshot=False, quote=q)
        self._flush_all()
        return count

    async def stream_burst(self, rounds: int) -> int:
        """Benchmark aid: send each stream's current ticks `rounds` times (encoded once)."""
        payloads: list[tuple[_Session, bytes, int]] = []
        for s in self._sessions.values():
            if s.closed:
                continue
            for req_id, stream in s.streams.items():
                fields = self._quote_fields(s, req_id, stream, report_type=False)
                payloads.append((s, b"".join(encode(f) for f in fields), len(fields)))
        total = 0
        for _ in range(rounds):
            for s, data, n in payloads:
                s.send_raw(data, n)
                total += n
            for s in {p[0] for p in payloads}:
                s.flush()
                if not s.closed:
                    await s.writer.drain()
        return total

    # ------------------------------------------------------------------ fault API
    def drop_connections(self, client_id: int | None = None) -> int:
        """Abort every session (or the one with `client_id`); returns how many dropped."""
        dropped = 0
        for s in list(self._sessions.values()):
            if client_id is None or s.client_id == client_id:
                s.abort()
                dropped += 1
        return dropped

    def notify(self, code: int, message: str | None = None) -> None:
        """Broadcast a system message (reqId -1), e.g. 1100 lost / 1101 / 1102 restored."""
        text = message or CONNECTIVITY_MESSAGES.get(code, f"system message {code}")
        for s in self._sessions.values():
            if s.client_id is not None:
                s.send(msg.error(-1, code, text))
        self._flush_all()

    def connectivity_lost(self) -> None:
        self.notify(1100)

    def connectivity_restored(self, *, data_kept: bool = True) -> None:
        """1102 (data kept) or 1101: data lost, as IB loses it: every market-data line and
        every account, summary and position subscription of every session ends silently,
        and only a new request brings that data back."""
        if not data_kept:
            for s in self._sessions.values():
                s.streams.clear()
                s.summary_subs.clear()
                s.account_updates = False
                s.positions_sub = False
        self.notify(1102 if data_kept else 1101)

    def go_down(self) -> None:
        """The gateway restarts (IBC's daily restart) or IB's nightly reset takes it away:
        every session gets 1100 and drops, and new connections are refused (the port stops
        listening at once) until `come_up()`."""
        self.connectivity_lost()
        self.drop_connections()
        if self._server is not None:
            self._server.close()
            self._server = None

    async def come_up(self) -> None:
        """Listen again, on the same port, after `go_down()`."""
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, self.host, self._port)

    def entitlement_error(self, code: int, *symbols: str) -> None:
        """Market-data requests for `symbols` (none: every symbol) answer IB's entitlement
        `code` from now on: 354, 10168, 10197 (no data) or 10090 (no bid/ask)."""
        if code not in (354, 10090, 10168, 10197):
            raise ValueError(f"entitlement code must be 354, 10090, 10168 or 10197, got {code}")
        for sym in symbols or ("*",):
            self.faults.entitlement[sym.upper()] = code

    def clear_entitlement_errors(self) -> None:
        self.faults.entitlement.clear()

    def claim_client_id(self, *client_ids: int) -> None:
        """Treat these clientIds as taken by someone else (326 on connect)."""
        self.faults.claimed_client_ids.update(client_ids)

    def release_client_id(self, *client_ids: int) -> None:
        self.faults.claimed_client_ids.difference_update(client_ids)

    def drop_on_next_order(self, n: int = 1) -> None:
        """The next `n` orders reach the exchange, then the socket drops before any ack."""
        self.faults.drop_on_next_order += n

    def report_position(self, con_id: int, position: str, avg_cost: str = "0") -> None:
        """Report conId's position with these raw wire fields from now on (see the fault)."""
        self.faults.position_reports[con_id] = (position, avg_cost)

    def silence_market_data(self, on: bool = True) -> None:
        """Market-data requests are accepted (and hold lines) but no tick is ever sent."""
        self.faults.silent_market_data = on

    def what_if_answers(self, **raw: str) -> None:
        """Every what-if answer from now on carries these raw OrderState fields (IB names,
        e.g. initMarginAfter="") instead of the true figures; no arguments: the truth."""
        unknown = sorted(set(raw) - set(msg.WHAT_IF_FIELDS))
        if unknown:
            raise ValueError(f"what_if_answers: {unknown} not in {msg.WHAT_IF_FIELDS}")
        self.faults.what_if_fields = dict(raw)

    def force_pacing_violation(self, n: int = 1) -> None:
        self.faults.pacing_violations += n

    def reject_next_order(self, n: int = 1) -> None:
        self.exchange.faults.reject_next += n

    def duplicate_next_execution(self) -> None:
        self.exchange.faults.duplicate_next_execution = True

    def delay_fills(self, seconds: float) -> None:
        self.exchange.faults.delay_fills_s = seconds

    def partial_fill_next(self, quantity: int | None) -> None:
        self.exchange.faults.partial_fill_next = quantity

    def nan_greeks(self, on: bool = True) -> None:
        self.exchange.faults.nan_greeks = on

    def stale_quotes(self, on: bool = True) -> None:
        self.exchange.faults.stale_quotes = on

    # ------------------------------------------------------------------ connection
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._serial += 1
        peer = str(writer.get_extra_info("peername"))
        s = _Session(serial=self._serial, writer=writer, peer=peer)
        self._sessions[s.serial] = s
        framer = Framer()
        try:
            while not s.closed:
                data = await reader.read(65536)
                if not data:
                    break
                framer.push(data)
                if not s.greeted and not self._greet(s, framer):
                    continue
                for fields in framer.messages():
                    s.messages_in += 1
                    self._dispatch(s, fields)
                    if s.closed:
                        break
                self._flush_all()
                if s.close_after_flush and not s.closed:
                    await writer.drain()
                    s.closed = True
                    writer.close()
                    break
                if not s.closed:
                    await writer.drain()
        except (ConnectionError, OSError) as exc:
            logger.info("gateway session %d (%s) ended: %s", s.serial, peer, exc)
        except ProtocolError as exc:
            self.protocol_errors.append(str(exc))
            logger.warning("gateway session %d: %s", s.serial, exc)
        finally:
            s.closed = True
            if s.dropped and s.client_id is not None:
                self._held_ids[s.client_id] = self._wall() + self.exchange.habits.client_id_linger_s
            self._sessions.pop(s.serial, None)
            with contextlib.suppress(Exception):
                writer.close()
            logger.info("gateway session %d closed (clientId %s)", s.serial, s.client_id)

    def _greet(self, s: _Session, framer: Framer) -> bool:
        """b"API\\0" + one framed 'vMIN..MAX' message, answered with [version, time]."""
        if not s.api_seen:
            head = framer.take_raw(4)
            if head is None:
                return False
            if head != b"API\0":
                raise ProtocolError(f"expected the API greeting, got {head!r}")
            s.api_seen = True
        offer = framer.take_frame()
        if offer is None:
            return False
        text = offer.decode(errors="replace").strip("\0")
        versions = text.split(" ")[0]
        lo, _, hi = versions.lstrip("v").partition("..")
        try:
            low, high = int(lo), int(hi or lo)
        except ValueError:
            raise ProtocolError(f"bad version range {text!r}") from None
        if not low <= SERVER_VERSION <= high or high < MIN_CLIENT_VERSION:
            raise ProtocolError(
                f"client offers versions {low}..{high}; this simulator speaks only {SERVER_VERSION}"
            )
        s.send([SERVER_VERSION, self.now.strftime("%Y%m%d %H:%M:%S UTC")])
        s.flush()
        s.greeted = True
        return True

    # ------------------------------------------------------------------ dispatch
    def _dispatch(self, s: _Session, fields: list[str]) -> None:
        if fields:
            self.request_counts[rq.request_name(fields[0])] += 1
        try:
            request = rq.decode(fields)
        except rq.UnsupportedRequest as exc:
            self.unsupported.append(exc.msg_id)
            logger.info("gateway: %s", exc)
            s.send(msg.error(-1, 321, str(exc)))
            return
        except ProtocolError as exc:
            self.protocol_errors.append(str(exc))
            logger.warning("gateway protocol error: %s (fields %s)", exc, fields[:8])
            s.send(msg.error(-1, 320, f"Error reading request: {exc}"))
            return
        if s.client_id is None:
            if isinstance(request, rq.StartApi):
                self._start_api(s, request)
            else:
                logger.warning("gateway: request %s before startApi ignored", fields[0])
            return
        self._dispatching = True
        try:
            self._sync_clock()
            self._release_commissions()
            self._handle(s, request)
        except Exception as exc:  # a simulator bug must not kill the session silently
            logger.exception("gateway: request %s failed", fields[:3])
            self.protocol_errors.append(f"request {fields[0]} failed: {exc!r}")
            s.send(msg.error(-1, 320, f"simulator failed on request {fields[0]}: {exc!r}"))
        finally:
            self._pump()
            self._dispatching = False

    def _handle(self, s: _Session, r: rq.Request) -> None:
        if isinstance(r, rq.Simple):
            if r.msg_id == rq.REQ_CURRENT_TIME:
                s.send(msg.current_time(self.now))
            elif r.msg_id == rq.REQ_POSITIONS:
                s.positions_sub = True
                for p in self.exchange.positions():
                    s.send(self._position_fields(p))
                s.send(msg.position_end())
            elif r.msg_id == rq.CANCEL_POSITIONS:
                s.positions_sub = False
            elif r.msg_id in (rq.REQ_OPEN_ORDERS, rq.REQ_ALL_OPEN_ORDERS):
                self._open_orders(s, all_clients=r.msg_id == rq.REQ_ALL_OPEN_ORDERS)
            elif r.msg_id == rq.REQ_MANAGED_ACCTS:
                s.send(msg.managed_accounts(self.accounts))
            elif r.msg_id == rq.REQ_GLOBAL_CANCEL:
                for state in self.exchange.open_orders():
                    self.exchange.cancel_order(state.order_id)
            # REQ_AUTO_OPEN_ORDERS: nothing to bind in a simulator
        elif isinstance(r, rq.WithReqId):
            if r.msg_id == rq.CANCEL_MKT_DATA:
                s.streams.pop(r.req_id, None)
            elif r.msg_id == rq.CANCEL_ACCOUNT_SUMMARY:
                s.summary_subs.pop(r.req_id, None)
            # CANCEL_HISTORICAL_DATA / CANCEL_ACCOUNT_UPDATES_MULTI: nothing is streaming
        elif isinstance(r, rq.StartApi):
            pass  # a second startApi on a live session is ignored, as TWS does
        elif isinstance(r, rq.ReqIds):
            s.send(msg.next_valid_id(self._next_ids.get(self._cid(s), 1)))
        elif isinstance(r, rq.ReqCompletedOrders):
            for state in self.exchange.completed_orders():
                s.send(msg.completed_order(self._wire_order(state)))
            s.send(msg.completed_orders_end())
        elif isinstance(r, rq.ReqAccountUpdates):
            s.account_updates = r.subscribe
            if r.subscribe:
                self._send_account_updates(s, with_end=True)
        elif isinstance(r, rq.ReqAccountUpdatesMulti):
            acct = self.exchange.account
            for key, value, cur in self._account_values():
                s.send(msg.account_update_multi(r.req_id, acct, r.model_code, key, value, cur))
            s.send(msg.account_update_multi_end(r.req_id))
        elif isinstance(r, rq.ReqAccountSummary):
            s.summary_subs[r.req_id] = r.tags
            self._send_summary(s, r.req_id, r.tags)
            s.send(msg.account_summary_end(r.req_id))
        elif isinstance(r, rq.ReqExecutions):
            self._executions(s, r)
        elif isinstance(r, rq.ReqContractDetails):
            self._contract_details(s, r)
        elif isinstance(r, rq.ReqSecDefOptParams):
            for chain in self.exchange.option_chains(r.underlying_symbol):
                s.send(msg.sec_def_opt_params(r.req_id, chain))
            s.send(msg.sec_def_opt_params_end(r.req_id))
        elif isinstance(r, rq.ReqMarketDataType):
            if r.market_data_type not in (1, 2, 3, 4):
                s.send(msg.error(-1, 10090, f"invalid market data type {r.market_data_type}"))
            else:
                s.md_type = r.market_data_type
        elif isinstance(r, rq.ReqMktData):
            self._mkt_data(s, r)
        elif isinstance(r, rq.ReqHistoricalData):
            self._historical(s, r)
        elif isinstance(r, rq.PlaceOrder):
            self._place_order(s, r)
        elif isinstance(r, rq.CancelOrder):
            self._cancel_order(s, r)

    @staticmethod
    def _cid(s: _Session) -> int:
        assert s.client_id is not None
        return s.client_id

    def _start_api(self, s: _Session, r: rq.StartApi) -> None:
        if self.faults.hold_next_client_id:  # as if its last session had died unnoticed
            self.faults.hold_next_client_id = False
            linger = max(self.exchange.habits.client_id_linger_s, 1.0)
            self._held_ids[r.client_id] = self._wall() + linger
        taken = (
            r.client_id in self.faults.claimed_client_ids
            or self._held(r.client_id)
            or any(
                o.client_id == r.client_id and not o.closed and o is not s
                for o in self._sessions.values()
            )
        )
        if taken:
            logger.info("gateway: clientId %d already in use; refusing", r.client_id)
            s.send(
                msg.error(
                    -1,
                    326,
                    "Unable to connect as the client id is already in use. "
                    "Retry with a unique client id.",
                )
            )
            s.close_after_flush = True
            return
        s.client_id = r.client_id
        s.send(msg.managed_accounts(self.accounts))
        s.send(msg.next_valid_id(self._next_ids.get(r.client_id, 1)))
        for code, text in FARM_NOTICES:
            s.send(msg.error(-1, code, text))
        logger.info("gateway: clientId %d connected (%s)", r.client_id, s.peer)

    def _held(self, client_id: int) -> bool:
        """Is this id still taken by a session that dropped a moment ago (IB: 326)?"""
        until = self._held_ids.get(client_id)
        if until is not None and self._wall() >= until:
            del self._held_ids[client_id]
            return False
        return until is not None

    def _session_of(self, client_id: int) -> _Session | None:
        for s in self._sessions.values():
            if s.client_id == client_id and not s.closed:
                return s
        return None

    # ------------------------------------------------------------------ contracts
    def _resolve(self, wc: rq.WireContract) -> Contract | None:
        """The exchange's contract for a wire description; None when unknown."""
        if wc.sec_type == "BAG":
            if not wc.legs:
                return None
            first = self.exchange.contract_by_id(wc.legs[0].con_id)
            symbol = wc.symbol or (first.symbol if first is not None else "COMBO")
            try:
                bag = Contract.combo(
                    symbol,
                    [ComboLeg(leg.con_id, leg.ratio, leg.action.upper()) for leg in wc.legs],
                )
            except ValueError:
                return None
            return self.exchange.qualify(bag)
        try:
            domain = wc.to_domain()
        except ValueError as exc:
            if wc.con_id > 0:  # a bare conId is enough
                return self.exchange.contract_by_id(wc.con_id)
            logger.info("gateway: cannot describe contract: %s", exc)
            return None
        return self.exchange.qualify(domain)

    def _contract_details(self, s: _Session, r: rq.ReqContractDetails) -> None:
        wc = r.contract
        found: list[Contract]
        extra: msg.DetailsExtra | None = None
        if _option_family(wc):
            found = self._listed_options(wc)
        elif _future_family(wc):  # every listed contract; CONTFUT: the front one
            found = self._listed_futures(wc)
            if wc.sec_type == "CONTFUT":
                found = found[:1]
                extra = msg.DetailsExtra(long_name=wc.symbol, sec_type="CONTFUT")
        else:
            c = self._resolve(wc)
            if c is None and wc.sec_type == "BAG" and not wc.legs:
                c = self._generic_bag(wc.symbol)
            found = [c] if c is not None else []
        if not found:
            s.send(
                msg.error(r.req_id, 200, "No security definition has been found for the request")
            )
            return
        for c in found:
            s.send(msg.contract_details(r.req_id, c, extra or self._details_extra(c)))
        s.send(msg.contract_details_end(r.req_id))

    def _listed_futures(self, wc: rq.WireContract) -> list[Contract]:
        """Every listed contract of a futures root, nearest expiry first (none for an
        unknown root or another exchange)."""
        try:
            listed: list[Contract] = self.exchange.market.futures_contracts(wc.symbol)
        except ValueError:
            return []
        return [c for c in listed if wc.exchange in ("", "SMART", c.exchange)]

    def _listed_options(self, wc: rq.WireContract) -> list[Contract]:
        """Every listed option matching a partial description (strike 0 and/or no right),
        as IB answers it: one per contract (per chain: strike ascending, puts first). Built from
        the exchange's own listing and `qualify`, so each con_id is the one a request for
        that single contract would get."""
        try:
            expiry = rq.parse_expiry(wc.expiry)
        except ValueError:
            return []
        rights = (wc.right,) if wc.right else ("P", "C")
        found: dict[int, Contract] = {}
        for chain in self.exchange.option_chains(wc.symbol):
            if expiry not in chain.expirations:
                continue
            strikes = (wc.strike,) if wc.strike else chain.strikes
            trading_class = wc.trading_class or chain.trading_class  # none given: every class
            for k in strikes:
                for right in rights:
                    try:
                        one = replace(wc, strike=k, right=right, trading_class=trading_class)
                        asked = one.to_domain()
                    except ValueError:
                        return []  # e.g. a right that is not C/P: no security definition
                    c = self.exchange.qualify(asked)
                    if c is not None:
                        found.setdefault(c.con_id, c)
        return list(found.values())

    def _details_extra(self, c: Contract) -> msg.DetailsExtra:
        if c.sec_type is not SecType.OPT:
            return msg.DetailsExtra(long_name=c.symbol)
        und = self.exchange.qualify(Contract.stock(c.symbol)) or self.exchange.qualify(
            Contract.index(c.symbol)
        )
        return msg.DetailsExtra(
            long_name=c.symbol,
            under_con_id=und.con_id if und is not None else 0,
            under_symbol=c.symbol,
            under_sec_type=und.sec_type.value if und is not None else "STK",
            valid_exchanges="SMART,CBOE,AMEX,ISE",
        )

    def _generic_bag(self, symbol: str) -> Contract | None:
        """contractDetails carry no legs: a BAG on a known underlying is described as IB
        does it (conId 28812380), whatever its legs will be."""
        und = self.exchange.qualify(Contract.stock(symbol)) if symbol else None
        if und is None:
            return None
        legs = (ComboLeg(und.con_id, 1, "BUY"),)
        return Contract(symbol=und.symbol, sec_type=SecType.BAG, combo_legs=legs, multiplier=1)

    # ------------------------------------------------------------------ market data
    def _mkt_data(self, s: _Session, r: rq.ReqMktData) -> None:
        c = self._resolve(r.contract)
        if c is None:
            s.send(
                msg.error(r.req_id, 200, "No security definition has been found for the request")
            )
            return
        if self.active_lines() >= self.market_data_lines:
            s.send(
                msg.error(
                    r.req_id,
                    101,
                    f"Max number of tickers has been reached ({self.market_data_lines} lines)",
                )
            )
            return
        code = self.faults.entitlement.get(c.symbol.upper(), self.faults.entitlement.get("*"))
        delayed = not self.realtime_data and s.md_type in (3, 4)
        if code is None and not self.realtime_data and not delayed:
            code = 354  # a live request without a live subscription
        if code is not None and code != 10090:  # no data at all, no line held
            s.send(msg.error(r.req_id, code, ENTITLEMENT_MESSAGES[code]))
            return
        if code == 10090:
            s.send(msg.error(r.req_id, code, ENTITLEMENT_MESSAGES[code]))
        elif delayed:
            s.send(msg.error(r.req_id, 10167, ENTITLEMENT_MESSAGES[10167]))
        stream = _Stream(contract=c, md_type=0, delayed=delayed, partial=code == 10090)
        if self.faults.silent_market_data:  # the line is taken, the ticks never come
            if not (r.snapshot or r.regulatory_snapshot):
                s.streams[r.req_id] = stream
            return
        try:
            fields = self._quote_fields(s, r.req_id, stream, report_type=True)
        except ValueError as exc:
            code, text = _coded(exc, 200)
            s.send(msg.error(r.req_id, code, text))
            return
        for f in fields:
            s.send(f)
        if "456" in r.generic_ticks.split(","):
            s.send(msg.tick_string(r.req_id, msg.TICK_DIVIDENDS, self._dividends_text(c)))
        if r.snapshot or r.regulatory_snapshot:
            s.send(msg.tick_snapshot_end(r.req_id))
        else:
            s.streams[r.req_id] = stream

    def _dividends_text(self, contract: Contract) -> str:
        """Tick 59's value as IB writes it (empty fields where it has nothing to say)."""
        d = self.exchange.dividends(contract)
        if d is None:
            return ",,,"
        amounts = (d.past_12_months, d.next_12_months)
        past, nxt = ("" if a is None else f"{a:g}" for a in amounts)
        when = "" if d.next_date is None else d.next_date.strftime("%Y%m%d")
        amount = "" if d.next_amount is None else f"{d.next_amount:g}"
        return f"{past},{nxt},{when},{amount}"

    def _feed_at(self, delayed: bool) -> datetime | None:
        """When a feed's prices are from: now (live) or `DELAYED_BY` ago."""
        return self.now - DELAYED_BY if delayed else None

    @staticmethod
    def _reported_type(stream: _Stream, stale: bool) -> int:
        if stale:
            return 4 if stream.delayed else 2
        return 3 if stream.delayed else 1

    def _quote_fields(
        self,
        s: _Session,
        req_id: int,
        stream: _Stream,
        *,
        report_type: bool,
        quote: Quote | None = None,
    ) -> list[list[object]]:
        if quote is None:
            quote = self.exchange.quotes([stream.contract], self._feed_at(stream.delayed))[0]
        q = quote
        md_type = self._reported_type(stream, q.stale)
        delayed = 1 if md_type in (3, 4) else 0
        out: list[list[object]] = []
        if report_type or md_type != stream.md_type:
            out.append(msg.market_data_type(req_id, md_type))
            stream.md_type = md_type
        if not stream.partial:
            out.append(_price_tick(req_id, msg.TICK_BID[delayed], q.bid, q.bid_size))
            out.append(_price_tick(req_id, msg.TICK_ASK[delayed], q.ask, q.ask_size))
        if math.isfinite(q.last):
            out.append(msg.tick_price(req_id, msg.TICK_LAST[delayed], q.last, 0))
        if q.volume:
            out.append(msg.tick_size(req_id, msg.TICK_VOLUME[delayed], q.volume))
        greeks = (q.iv, q.delta, q.gamma, q.vega, q.theta)
        if stream.partial:  # 10090: only the subscription-independent ticks
            return out
        if stream.contract.sec_type is SecType.OPT or any(math.isfinite(g) for g in greeks):
            out.append(
                msg.tick_option_computation(
                    req_id,
                    msg.TICK_MODEL_OPTION[delayed],
                    iv=q.iv,
                    delta=q.delta,
                    opt_price=q.mid if math.isfinite(q.mid) else q.last,
                    gamma=q.gamma,
                    vega=q.vega,
                    theta=q.theta,
                    und_price=q.underlying_price,
                )
            )
        return out

    def _send_quote(
        self,
        s: _Session,
        req_id: int,
        stream: _Stream,
        *,
        snapshot: bool,
        quote: Quote | None = None,
    ) -> int:
        try:
            fields = self._quote_fields(s, req_id, stream, report_type=snapshot, quote=quote)
        except ValueError as exc:  # e.g. the contract expired: end the stream as IB does
            code, text = _coded(exc, 200)
            s.streams.pop(req_id, None)
            s.send(msg.error(req_id, code, text))
            return 1
        for f in fields:
            s.send(f)
        return len(fields)

    # ------------------------------------------------------------------ historical
    def _historical(self, s: _Session, r: rq.ReqHistoricalData) -> None:
        c = self._resolve(r.contract)
        if c is None:
            s.send(
                msg.error(r.req_id, 200, "No security definition has been found for the request")
            )
            return
        reason: str | None
        if self.faults.pacing_violations > 0:
            self.faults.pacing_violations -= 1
            reason = "forced by the fault plan"
        else:
            key = (c.con_id, c.key, r.what_to_show)
            reason = self.pacer.check(key, (key, r.end, r.duration, r.bar_size))
        if reason is not None:
            s.send(
                msg.error(
                    r.req_id,
                    162,
                    "Historical Market Data Service error message:Historical data request "
                    f"pacing violation ({reason})",
                )
            )
            return
        try:
            end = rq.parse_ib_time(r.end) or self.now
            duration = rq.parse_duration(r.duration)
            bars = self.exchange.bars(
                c, end=end, duration=duration, bar_size=r.bar_size, what=r.what_to_show
            )
        except ValueError as exc:
            code, text = _coded(exc, 162)
            if code != 200:  # 321 is only a warning to clients: they would wait forever
                code, text = 162, f"Historical Market Data Service error message:{text}"
            s.send(msg.error(r.req_id, code, text))
            return
        if r.use_rth:  # useRTH=1: only bars inside regular trading hours
            bars = [b for b in bars if _regular_hours(b.time)]
        if not bars:  # IB answers an empty query with an error, never an empty list
            s.send(msg.error(r.req_id, 162, hmds_no_data(c, r.what_to_show)))
            return
        start = end - duration
        s.send(
            msg.historical_data(r.req_id, msg.ib_time(start), msg.ib_time(end), bars, r.format_date)
        )

    # ------------------------------------------------------------------ account
    def _account_values(self) -> list[tuple[str, str, str]]:
        a = self.exchange.account_summary()
        cur = a.currency
        return [
            ("AccountCode", self.exchange.account, ""),
            ("AccountType", "INDIVIDUAL", ""),
            ("NetLiquidation", str(a.net_liquidation), cur),
            ("TotalCashValue", str(a.net_liquidation), cur),
            ("EquityWithLoanValue", str(a.net_liquidation), cur),
            ("BuyingPower", str(a.buying_power), cur),
            ("AvailableFunds", str(a.available_funds), cur),
            ("ExcessLiquidity", str(a.net_liquidation - a.maintenance_margin), cur),
            ("InitMarginReq", str(a.maintenance_margin), cur),
            ("MaintMarginReq", str(a.maintenance_margin), cur),
            ("RealizedPnL", str(a.realized_pnl), cur),
            ("UnrealizedPnL", str(a.unrealized_pnl), cur),
        ]

    def _summary_values(self, tags: tuple[str, ...]) -> list[tuple[str, str, str]]:
        a = self.exchange.account_summary()
        cur = a.currency
        table = {
            "AccountType": ("INDIVIDUAL", ""),
            "NetLiquidation": (str(a.net_liquidation), cur),
            "TotalCashValue": (str(a.net_liquidation), cur),
            "EquityWithLoanValue": (str(a.net_liquidation), cur),
            "BuyingPower": (str(a.buying_power), cur),
            "AvailableFunds": (str(a.available_funds), cur),
            "FullAvailableFunds": (str(a.available_funds), cur),
            "ExcessLiquidity": (str(a.net_liquidation - a.maintenance_margin), cur),
            "FullExcessLiquidity": (str(a.net_liquidation - a.maintenance_margin), cur),
            "InitMarginReq": (str(a.maintenance_margin), cur),
            "FullInitMarginReq": (str(a.maintenance_margin), cur),
            "MaintMarginReq": (str(a.maintenance_margin), cur),
            "FullMaintMarginReq": (str(a.maintenance_margin), cur),
        }
        out = [(t, *table[t]) for t in tags if t in table]
        if any(t.startswith("$LEDGER") for t in tags):
            out += [
                ("RealizedPnL", str(a.realized_pnl), cur),
                ("UnrealizedPnL", str(a.unrealized_pnl), cur),
                ("NetLiquidationByCurrency", str(a.net_liquidation), cur),
            ]
        return out

    def _send_summary(self, s: _Session, req_id: int, tags: tuple[str, ...]) -> None:
        acct = self.exchange.account
        for tag, value, cur in self._summary_values(tags):
            s.send(msg.account_summary(req_id, acct, tag, value, cur))

    def _send_account_updates(self, s: _Session, *, with_end: bool) -> None:
        acct = self.exchange.account
        for key, value, cur in self._account_values():
            s.send(msg.account_value(key, value, cur, acct))
        for p in self.exchange.positions():
            s.send(self._portfolio_fields(p))
        s.send(msg.account_time(self.now))
        if with_end:
            s.send(msg.account_download_end(acct))

    def _position_fields(self, p: Position) -> list[object]:
        """A position message, with the fault plan's raw numbers for its conId if any."""
        fields = msg.position(self.exchange.account, p)
        raw = self.faults.position_reports.get(p.contract.con_id)
        if raw is not None:
            fields[-2:] = raw
        return fields

    def _portfolio_fields(self, p: Position) -> list[object]:
        price = math.nan
        with contextlib.suppress(Exception):
            q = self.exchange.quote(p.contract)
            price = q.mid if math.isfinite(q.mid) else q.last
        mult = p.contract.multiplier
        if not math.isfinite(price):
            price = p.avg_cost / mult if mult else p.avg_cost
        unrealized = (price * mult - p.avg_cost) * p.quantity
        return msg.portfolio_value(p, price, unrealized, 0.0, self.exchange.account)

    # ------------------------------------------------------------------ orders
    def _wire_order(self, state: OrderState, *, what_if: bool = False) -> msg.WireOrder:
        link = self._links.get(state.order_id)
        return msg.WireOrder(
            order_id=link.api_order_id if link else 0,
            client_id=link.client_id if link else 0,
            perm_id=_perm_id(state),
            contract=state.contract,
            action=state.action.value,
            quantity=state.quantity,
            order_type=state.order_type.value,
            limit_price=state.limit_price,
            tif=link.tif if link else "DAY",
            account=self.exchange.account,
            order_ref=state.order_ref,
            status=_IB_STATUS[state.status],
            filled=state.filled,
            avg_fill_price=state.avg_fill_price,
            last_fill_price=self._last_fill.get(state.order_id, math.nan),
            what_if=what_if,
            completed_status=state.message or _IB_STATUS[state.status],
        )

    def _open_orders(self, s: _Session, *, all_clients: bool) -> None:
        cid = self._cid(s)
        for state in self.exchange.open_orders():
            link = self._links.get(state.order_id)
            if not all_clients and (link is None or link.client_id != cid):
                continue
            w = self._wire_order(state)
            s.send(msg.open_order(w))
            s.send(msg.order_status(w))
        s.send(msg.open_order_end())

    def _order_request(self, s: _Session, r: rq.PlaceOrder, contract: Contract) -> OrderRequest:
        try:
            action = Action(r.action.upper())
        except ValueError:
            raise ValueError(f"action {r.action!r} must be BUY or SELL") from None
        try:
            order_type = OrderType(r.order_type.upper())
        except ValueError:
            raise ValueError(f"order type {r.order_type!r} is not simulated (LMT, MKT)") from None
        qty = r.total_quantity
        if qty != int(qty) or qty <= 0:
            raise ValueError(f"totalQuantity {qty} must be a positive whole number")
        return OrderRequest(
            contract=contract,
            action=action,
            quantity=int(qty),
            order_type=order_type,
            limit_price=r.lmt_price if order_type is OrderType.LMT else None,
            order_ref=r.order_ref or f"ib:{self._cid(s)}:{r.order_id}",
            tif=r.tif or "DAY",
            what_if=r.what_if,
        )

    def _place_order(self, s: _Session, r: rq.PlaceOrder) -> None:
        cid = self._cid(s)
        self._next_ids[cid] = max(self._next_ids.get(cid, 1), r.order_id + 1)
        if r.n_conditions:
            s.send(
                msg.error(
                    r.order_id,
                    201,
                    "Order rejected - reason:order conditions are not supported by the simulator",
                )
            )
            return
        if (cid, r.order_id) in self._by_api and not r.what_if:
            s.send(
                msg.error(
                    r.order_id,
                    321,
                    "Error validating request:-'order modification' is "
                    "not supported by the simulator",
                )
            )
            return
        contract = self._resolve(r.contract)
        if contract is None:  # let the exchange record (and reject) what it cannot resolve
            try:
                contract = r.contract.to_domain()
            except ValueError as exc:
                s.send(
                    msg.error(
                        r.order_id,
                        200,
                        f"No security definition has been found for the request: {exc}",
                    )
                )
                return
        try:
            order = self._order_request(s, r, contract)
        except ValueError as exc:
            s.send(msg.error(r.order_id, 201, f"Order rejected - reason:{exc}"))
            return
        if r.what_if:
            self._what_if(s, r, order)
            return
        drop = self.faults.drop_on_next_order > 0
        if drop:
            self.faults.drop_on_next_order -= 1
        pending = len(self._events)
        state = self.exchange.place_order(order, client_id=cid)
        link = _Link(client_id=cid, api_order_id=r.order_id, tif=order.tif)
        self._links[state.order_id] = link
        self._by_api[(cid, r.order_id)] = state.order_id
        if drop:
            logger.info(
                "gateway fault: dropping clientId %d after placing order %d", cid, r.order_id
            )
            s.abort()
            return
        emitted = len(self._events) > pending
        self._pump()
        if state.status is OrderStatus.REJECTED:
            self._send_reject(s, r.order_id, state)
        elif not emitted or state.order_id not in self._seen_order_msgs:
            w = self._wire_order(self.exchange.order(state.order_id))
            s.send(msg.open_order(w))
            s.send(msg.order_status(w))

    def _what_if(self, s: _Session, r: rq.PlaceOrder, order: OrderRequest) -> None:
        """IB's what-if answer: one openOrder with whatIf set and the margin figures as
        strings (Reg-T: a spread's initial margin change is width x multiplier x qty, the
        credit shows in equity with loan). Nothing is placed; no orderStatus follows."""
        try:
            impact = self.exchange.margin_impact(order)
        except ValueError as exc:
            code, text = _coded(exc, 201)
            s.send(msg.error(r.order_id, code, text))
            return
        figures = {
            "initMarginBefore": impact.init_before,
            "maintMarginBefore": impact.maint_before,
            "equityWithLoanBefore": impact.equity_with_loan_before,
            "initMarginChange": impact.init_change,
            "maintMarginChange": impact.maint_change,
            "equityWithLoanChange": impact.equity_with_loan_change,
            "initMarginAfter": impact.init_after,
            "maintMarginAfter": impact.maint_after,
            "equityWithLoanAfter": impact.equity_with_loan_after,
        }
        w = msg.WireOrder(
            order_id=r.order_id,
            client_id=self._cid(s),
            perm_id=0,
            contract=order.contract,
            action=order.action.value,
            quantity=order.quantity,
            order_type=order.order_type.value,
            limit_price=order.limit_price,
            tif=order.tif,
            account=self.exchange.account,
            order_ref=order.order_ref,
            status="PreSubmitted",
            what_if=True,
            margins={k: math.nan if v is None else v for k, v in figures.items()},
            what_if_raw=dict(self.faults.what_if_fields),
        )
        s.send(msg.open_order(w))

    def _send_reject(self, s: _Session, api_order_id: int, state: OrderState) -> None:
        if state.order_id in self._rejected_sent:
            return
        self._rejected_sent.add(state.order_id)
        code, text = _split_code(state.message, 201)
        if state.order_id in self._links:  # the order exists (Inactive) with its permId
            w = self._wire_order(state)
            s.send(msg.open_order(w))
            s.send(msg.order_status(w))
        s.send(msg.error(api_order_id, code, text))

    def _cancel_order(self, s: _Session, r: rq.CancelOrder) -> None:
        """Only the placing client (or the master client 0) can name an order: another
        client's orderId is not found (10147). A cancel can lose to a fill: 161 then."""
        cid = self._cid(s)
        order_id = self._by_api.get((cid, r.order_id))
        if order_id is None and cid == MASTER_CLIENT_ID:
            found = [oid for (_, api), oid in self._by_api.items() if api == r.order_id]
            order_id = found[0] if len(found) == 1 else None
        if order_id is None:
            text = f"OrderId {r.order_id} that needs to be cancelled is not found."
            s.send(msg.error(r.order_id, 10147, text))
            return
        state = self.exchange.order(order_id)
        if state.status.is_done:
            text = (
                f"OrderId {r.order_id} that needs to be cancelled cannot be cancelled, "
                f"state: {_IB_STATUS[state.status]}."
            )
            s.send(msg.error(r.order_id, 10148, text))
            return
        pending = len(self._events)
        after = self.exchange.cancel_order(order_id)
        announced = len(self._events) > pending
        self._pump()  # a racing fill goes out before the answer, as IB sends it
        if not announced:  # the exchange did not announce it: do it here
            self._emit_order(after)
        if after.status is OrderStatus.FILLED:
            text = (
                "Cancel attempted when order is not in a cancellable state. "
                f"Order permId ={_perm_id(after)}"
            )
            s.send(msg.error(r.order_id, 161, text))

    # ------------------------------------------------------------------ executions
    def _executions(self, s: _Session, r: rq.ReqExecutions) -> None:
        """IB answers with the current day's executions only (New York date)."""
        try:
            since = rq.parse_ib_time(r.time)
        except ValueError as exc:
            s.send(msg.error(r.req_id, 321, f"Error validating request:-'time': {exc}"))
            s.send(msg.exec_details_end(r.req_id))
            return
        today = self.now.astimezone(MARKET_TZ).date()
        for report in self.exchange.reports(since):
            e = report.execution
            if e.time.astimezone(MARKET_TZ).date() != today:
                continue
            link = self._links.get(e.order_id)
            cid = link.client_id if link else 0
            if r.client_id and cid != r.client_id:
                continue
            if r.symbol and e.contract.symbol != r.symbol:
                continue
            if r.sec_type and e.contract.sec_type.value != r.sec_type:
                continue
            if r.side and r.side.upper() not in (
                e.side.value,
                "BOT" if e.side is Action.BUY else "SLD",
            ):
                continue
            if r.account and r.account != e.account:
                continue
            self._send_execution(s, r.req_id, e)
        s.send(msg.exec_details_end(r.req_id))

    def _cum(self, e: Execution) -> tuple[int, float]:
        """cumQty and avgPrice of the order's contract up to this report (a corrected
        version counts only as itself; BAG-level reports add up on their own)."""
        got = self._exec_cum.get(e.exec_id)
        if got is not None:
            return got
        qty: dict[tuple[int, int, SecType], int] = {}
        notional: dict[tuple[int, int, SecType], float] = {}
        for report in self.exchange.reports(None):
            x = report.execution
            key = (x.order_id, x.contract.con_id, x.contract.sec_type)
            q = qty.get(key, 0) + x.quantity
            n = notional.get(key, 0.0) + x.quantity * x.price
            self._exec_cum[x.exec_id] = (q, n / q)
            if report.booked or x.contract.sec_type is SecType.BAG:
                qty[key], notional[key] = q, n
        return self._exec_cum.get(e.exec_id, (e.quantity, e.price))

    def _send_execution(self, s: _Session, req_id: int, e: Execution) -> None:
        link = self._links.get(e.order_id)
        cum, avg = self._cum(e)
        s.send(
            msg.exec_details(
                req_id,
                e,
                order_id=link.api_order_id if link else 0,
                client_id=link.client_id if link else 0,
                cum_qty=cum,
                avg_price=avg,
            )
        )
        if math.isfinite(e.commission) and e.exec_id not in self._late:
            s.send(msg.commission_report(e.exec_id, e.commission))

    def _hold_commission(self, e: Execution, client_id: int) -> None:
        """Maybe send this fill's commission report late (`habits.late_commission_rate`):
        after later messages, or, when its client is gone by then, after a reconnect."""
        forced = self.faults.late_commission_next > 0
        habits = self.exchange.habits
        if forced or self._rng_commission.random() < habits.late_commission_rate:
            self.faults.late_commission_next -= int(forced)
            due = to_epoch(self.now) + math.ceil(habits.late_commission_s)
            self._late[e.exec_id] = _LateCommission(due, client_id, e.commission)

    def _release_commissions(self) -> None:
        """Send the late commission reports that are due to their client, if connected;
        reqExecutions carries them from now on either way."""
        now = to_epoch(self.now)
        for exec_id, late in list(self._late.items()):
            if late.due > now:
                continue
            del self._late[exec_id]
            s = self._session_of(late.client_id)
            if s is not None:
                s.send(msg.commission_report(exec_id, late.commission))

    # ------------------------------------------------------------------ exchange events
    def _on_event(self, event: Any) -> None:
        """Queue an exchange event; pump soon when it did not come from a request we run."""
        self._events.append(event)
        if self._dispatching or self._pump_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (sync caller): the next request or advance() pumps it
        self._pump_scheduled = True
        loop.call_soon(self._pump_and_flush)

    def _pump_and_flush(self) -> None:
        self._pump_scheduled = False
        self._pump()
        self._flush_all()

    def _pump(self) -> None:
        while self._events:
            ev = self._events.popleft()
            if hasattr(ev, "execution"):
                self._emit_execution(ev)
            elif hasattr(ev, "state"):
                self._emit_order(ev.state)
            elif hasattr(ev, "position"):
                self._emit_position(ev.position)

    def _emit_order(self, state: OrderState) -> None:
        self._seen_order_msgs.add(state.order_id)
        link = self._links.get(state.order_id)
        if link is None:
            return
        s = self._session_of(link.client_id)
        if s is None:
            return
        if state.status is OrderStatus.REJECTED:
            self._send_reject(s, link.api_order_id, state)
            return
        w = self._wire_order(state)
        if state.status is OrderStatus.CANCELLED:
            s.send(msg.order_status(w))
            _, text = _split_code(state.message or "Order Canceled - reason:", 202)
            s.send(msg.error(link.api_order_id, 202, text))
            return
        s.send(msg.open_order(w))
        s.send(msg.order_status(w))

    def _emit_execution(self, report: ExecutionReported) -> None:
        e = report.execution
        link = self._links.get(e.order_id)
        if link is None:
            return
        if report.booked or e.contract.sec_type is SecType.BAG:  # a combo's: the net price
            self._last_fill[e.order_id] = e.price
        if report.booked and not report.duplicate and math.isfinite(e.commission):
            self._hold_commission(e, link.client_id)
        s = self._session_of(link.client_id)
        if s is not None:
            self._send_execution(s, -1, e)

    def _emit_position(self, p: Position) -> None:
        acct = self.exchange.account
        for s in self._sessions.values():
            if s.closed or s.client_id is None:
                continue
            if s.positions_sub:
                s.send(self._position_fields(p))
            if s.account_updates:
                for key, value, cur in self._account_values():
                    s.send(msg.account_value(key, value, cur, acct))
                s.send(self._portfolio_fields(p))
                s.send(msg.account_time(self.now))
            for req_id, tags in s.summary_subs.items():
                self._send_summary(s, req_id, tags)

    def _flush_all(self) -> None:
        for s in self._sessions.values():
            s.flush()


def _option_family(wc: rq.WireContract) -> bool:
    """An option described down to its expiry but not to one contract (strike 0 and/or no
    right, no conId or local symbol): IB answers with every listed match."""
    return (
        wc.sec_type == "OPT"
        and wc.con_id <= 0
        and not wc.local_symbol
        and bool(wc.symbol)
        and bool(wc.expiry)
        and (not wc.strike or not wc.right)
    )


RTH_OPEN, RTH_CLOSE = dt_time(9, 30), dt_time(16, 0)  # New York


def _regular_hours(t: datetime) -> bool:
    """Does a bar starting at `t` lie in regular trading hours (09:30-16:00 New York on a
    weekday)? For ES and the other equity-index futures IB's liquid hours are the same
    span (08:30-15:00 Chicago), narrower than their near-24-hour Globex session."""
    local = t.astimezone(MARKET_TZ)
    return local.weekday() < 5 and RTH_OPEN <= local.time() < RTH_CLOSE


def hmds_no_data(c: Contract, what: str) -> str:
    """IB's text for a historical query without data (error 162)."""
    return (
        "Historical Market Data Service error message:HMDS query returned no data: "
        f"{c.local_symbol or c.symbol}@{c.exchange} {what.title()}"
    )


def _future_family(wc: rq.WireContract) -> bool:
    """A futures root without an expiry (or a continuous future): IB lists every
    contract (CONTFUT: resolves to the front one)."""
    return (
        wc.sec_type in ("FUT", "CONTFUT")
        and wc.con_id <= 0
        and not wc.local_symbol
        and not wc.expiry
        and bool(wc.symbol)
    )


def _split_code(text: str, default: int) -> tuple[int, str]:
    """'[201] Order rejected - ...' -> (201, 'Order rejected - ...'); the exchange's form."""
    m = re.match(r"\s*\[(\d+)\]\s*(.*)", text, re.S)
    if m:
        return int(m.group(1)), m.group(2)
    return default, text


def _coded(exc: Exception, default: int) -> tuple[int, str]:
    code = getattr(exc, "code", None)
    c, text = _split_code(str(exc), default)
    return (code if isinstance(code, int) else c), text


def _perm_id(state: OrderState) -> int:
    return state.perm_id or 1_000_000 + state.order_id


def _price_tick(req_id: int, tick_type: int, price: float, size: int) -> list[object]:
    """A bid/ask tick; an absent side goes out as IB does it: price -1, size 0."""
    if not math.isfinite(price):
        return msg.tick_price(req_id, tick_type, -1.0, 0)
    return msg.tick_price(req_id, tick_type, price, max(int(size), 1))


async def run_gateway(
    host: str,
    port: int,
    settings: Settings,
    *,
    speed: float = 1.0,
    tick_s: float = 1.0,
    on_ready: Callable[[GatewayServer], None] | None = None,
    realtime_data: bool = False,
) -> None:
    """Serve a SimExchange built from `settings` forever, advancing its clock in real time.

    `speed` is simulated seconds per wall second (1.0 = real time); the clock moves every
    `tick_s` wall seconds. `on_ready` receives the started server (its `.port`), which
    matters when `port` is 0. `realtime_data`: the account holds real-time subscriptions
    (default: none, as a new paper account; delayed requests get delayed data). Cancel
    the task to stop."""
    if speed <= 0 or tick_s <= 0:
        raise ValueError(f"speed ({speed}) and tick_s ({tick_s}) must be > 0")
    exchange = _build_exchange(settings)
    server = GatewayServer(
        exchange,
        host=host,
        port=port,
        market_data_lines=settings.broker.market_data_lines,
        realtime_data=realtime_data,
    )
    await server.start()
    logger.info(
        "gateway simulator for account %s on %s:%d, clock %s x%g",
        mask_account(exchange.account),
        host,
        server.port,
        server.now.isoformat(),
        speed,
    )
    if on_ready is not None:
        on_ready(server)
    loop = asyncio.get_running_loop()
    last = loop.time()
    try:
        while True:
            await asyncio.sleep(tick_s)
            t = loop.time()
            server.advance(timedelta(seconds=(t - last) * speed))
            last = t
    finally:
        await server.close()


def _build_exchange(settings: Settings) -> ExchangeLike:
    """A SimExchange from settings (clock: a SimClock at the first session's open)."""
    from core.sim.exchange import build_exchange

    return build_exchange(settings)


__all__ = ["ExchangeLike", "GatewayServer", "run_gateway"]
