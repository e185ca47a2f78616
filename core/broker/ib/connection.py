"""The API connection: a free clientId, the managed account, reconnecting, readiness.

Why not plain `IB.connectAsync`: a clientId already in use answers 326, on which ib_async
would just time out, so each connection takes a unique clientId from [client_id_min,
client_id_max] and tries the next on 326; after `disconnectedEvent` it reconnects with
exponential back-off; the live-trading guard runs before and after connecting.

Why a reconnect waits for its old clientId: orders can be cancelled only by the clientId
that placed them (or clientId 0 / a global cancel), and IB keeps a dropped client's id
taken (326) for a while. So a reconnect retries its own id for up to
`CLIENT_ID_RECLAIM_S` before it falls back to another one; orders of the old id are then
reported, not cancelled (`Orders.cancel_order`).

Why 1101 matters: IB answers a short outage with 1101 ("restored - data lost") when it
dropped every subscription of the session. Nothing arrives on them again, so a cached
account summary would freeze (net liquidation, margin) and a quote being collected would
time out. On 1101 the connection counts the loss (`data_lost`), asks for the market-data
type and the account updates again and tells `on_data_lost` (the broker re-requests
the account summary; quotes in flight re-request their lines). 1102 (data kept) needs
nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from ib_async import IB, StartupFetch

from core.broker.base import BrokerError, ErrorClass
from core.broker.ib.convert import classify_error
from core.broker.ib.live_guard import LiveTradingRefusedError, check_live_account
from core.broker.ib.logs import REDACTOR, v6_logger
from core.config import BrokerSettings
from core.domain.accounts import mask_account

logger = v6_logger(__name__)

_STARTUP_FETCH = (
    StartupFetch.POSITIONS
    | StartupFetch.ORDERS_OPEN
    | StartupFetch.ORDERS_COMPLETE
    | StartupFetch.ACCOUNT_UPDATES
    | StartupFetch.SUB_ACCOUNT_UPDATES
)  # executions are fetched by the execution journal itself (since the last one seen)
_CLIENT_IDS_IN_USE: set[int] = set()  # clientIds held by connections of this process
CLIENT_ID_RECLAIM_S = 30.0  # how long a reconnect retries its own clientId on 326


class _ClientIdInUseError(Exception):
    pass


class Connection:
    """One API connection (one clientId) and its lifecycle. `on_connected` runs after each
    (re)connect, once the connection is ready (per-connection state, recovery)."""

    def __init__(
        self,
        ib: IB,
        settings: BrokerSettings,
        on_connected: Callable[[], Awaitable[None]],
        on_data_lost: Callable[[], None] = lambda: None,
    ) -> None:
        self.ib = ib
        self.settings = settings
        self._on_connected = on_connected
        self._on_data_lost = on_data_lost
        self.data_lost = 0  # 1101s seen: every subscription had to be requested again
        ib.errorEvent += self._on_error
        ib.disconnectedEvent += self._on_disconnected
        self._client_id: int | None = None
        self._account: str | None = None
        self._ready_flag = False
        self._closing = False
        self._connecting = False
        self._reconnect_task: asyncio.Task[None] | None = None
        self._gave_up: BrokerError | None = None
        self.reconnects = 0

    @property
    def is_connected(self) -> bool:
        return self._ready_flag and self.ib.isConnected()

    @property
    def client_id(self) -> int | None:
        return self._client_id

    @property
    def account(self) -> str | None:
        """The managed account in use (print it with `mask_account`)."""
        return self._account

    async def connect(self) -> None:
        if self.is_connected:
            return
        task = self._reconnect_task
        if task is not None and not task.done() and not self._closing:
            await self.ready()  # a reconnect is under way: join it instead of racing it
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
        self.ib.disconnect()
        self._release_client_id()

    async def ready(self) -> None:
        """Return once connected (joining a reconnect under way); BrokerError otherwise."""
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

    # ------------------------------------------------------------------ clientIds
    def _release_client_id(self) -> None:
        if self._client_id is not None:
            _CLIENT_IDS_IN_USE.discard(self._client_id)

    def _candidate_ids(self) -> list[int]:
        s = self.settings
        ids = list(range(s.client_id_min, s.client_id_max + 1))
        preferred = [self._client_id] if self._client_id is not None else []
        rest = [i for i in ids if i not in _CLIENT_IDS_IN_USE and i not in preferred]
        return preferred + rest

    async def _reclaim(self, cid: int) -> bool:
        """Retry our own clientId while IB still holds it after a drop (326), with
        back-off, for at most `CLIENT_ID_RECLAIM_S`; False when it stayed taken."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLIENT_ID_RECLAIM_S
        delay = self.settings.reconnect_backoff_s
        while True:
            try:
                await self._connect_once(cid)
                return True
            except _ClientIdInUseError:
                left = deadline - loop.time()
                if left <= 0:
                    logger.warning(
                        "clientId %d still in use after %.0f s; falling back to another id: "
                        "its open orders can no longer be cancelled by this connection",
                        cid,
                        CLIENT_ID_RECLAIM_S,
                    )
                    return False
                await asyncio.sleep(min(delay, left))
                delay = min(delay * 2, 1.0)

    async def _connect_any(self, *, reclaim: bool = False) -> None:
        """Connect under the first free clientId, our last one first; `reclaim` (after a
        drop): wait a bounded time for our last one rather than move to another."""
        s = self.settings
        candidates = self._candidate_ids()
        tried = 0
        if reclaim and self._client_id is not None:
            tried = 1
            if await self._reclaim(candidates.pop(0)):  # the first candidate is our own
                return
        for cid in candidates:
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

        self.ib.errorEvent += on_error
        _CLIENT_IDS_IN_USE.add(cid)
        self._connecting = True
        task = asyncio.ensure_future(
            self.ib.connectAsync(
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
                self.ib.disconnect()
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
            self.ib.errorEvent -= on_error
        if self._client_id is not None and self._client_id != cid:
            _CLIENT_IDS_IN_USE.discard(self._client_id)
        self._client_id = cid

    # ------------------------------------------------------------------ account
    async def _after_connect(self, *, reconnect: bool = False) -> None:
        """Account + live guard, market-data type, then `on_connected`."""
        s = self.settings
        accounts = list(self.ib.managedAccounts())
        REDACTOR.accounts.update(accounts)
        try:
            account = self._choose_account(accounts)
            check_live_account(s, account)
        except BrokerError:
            self._closing = True
            self.ib.disconnect()
            self._release_client_id()
            raise
        self._account = account
        self.ib.reqMarketDataType(s.market_data_type.ib_code)
        self._ready_flag = True
        if reconnect:
            self.reconnects += 1
        logger.info(
            "connected to IB %s:%d clientId %s account %s (market data %s)",
            s.host,
            s.port,
            self._client_id,
            mask_account(account),
            s.market_data_type.value,
        )
        await self._on_connected()

    def _choose_account(self, accounts: list[str]) -> str:
        wanted = self.settings.account
        if wanted:
            if wanted not in accounts:
                raise BrokerError(
                    f"broker.account {mask_account(wanted)} is not managed by this login "
                    f"(managed: {[mask_account(a) for a in accounts]}); fix broker.account",
                    ErrorClass.REJECTION,
                )
            return wanted
        if len(accounts) != 1:
            raise BrokerError(
                f"the login manages {len(accounts)} accounts "
                f"{[mask_account(a) for a in accounts]}; set broker.account to choose one",
                ErrorClass.REJECTION,
            )
        return accounts[0]

    # ------------------------------------------------------------------ events
    def _on_error(self, req_id: int, code: int, message: str, contract: object) -> None:
        kind = classify_error(code)
        if kind is ErrorClass.WARNING:
            logger.debug("IB %d (reqId %d): %s", code, req_id, message)
        else:
            logger.info("IB error %d [%s] reqId %d: %s", code, kind.value, req_id, message)
        if code in (1100, 1300):
            logger.warning("IB reports lost connectivity (%d): %s", code, message)
        if code == 1101 and self.is_connected:
            self.data_lost += 1
            logger.warning(
                "IB 1101 (restored, data lost): requesting market data and account "
                "subscriptions again"
            )
            self.ib.reqMarketDataType(self.settings.market_data_type.ib_code)
            if self._account is not None:
                self.ib.client.reqAccountUpdates(True, self._account)
            self._on_data_lost()

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
                await self._connect_any(reclaim=True)
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
