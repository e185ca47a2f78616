"""The account: its summary (one subscription per connection) and its positions."""

from __future__ import annotations

from core.broker.ib.connection import Connection
from core.broker.ib.convert import account_summary_from_values, position_from_ib
from core.broker.ib.requests import Requests
from core.domain import AccountSummary, Position


class Account:
    """Account summary and positions of the connection's managed account."""

    def __init__(self, conn: Connection, requests: Requests) -> None:
        self._conn = conn
        self._requests = requests
        self._summary_subscribed = False

    def reset(self) -> None:
        """A new connection holds no summary subscription yet."""
        self._summary_subscribed = False

    async def account_summary(self) -> AccountSummary:
        await self._conn.ready()
        ib = self._conn.ib
        if not self._summary_subscribed:  # one subscription per connection (IB allows 2)
            await self._requests.request("account summary", ib.reqAccountSummaryAsync())
            self._summary_subscribed = True
        else:
            await self._requests.barrier()  # pushed updates sent before now are in
        account = self._conn.account
        assert account is not None
        values = await ib.accountSummaryAsync(account)
        return account_summary_from_values(account, values)

    async def positions(self) -> list[Position]:
        await self._conn.ready()
        async with self._requests.lock("positions"):
            got = await self._requests.request("positions", self._conn.ib.reqPositionsAsync())
        account = self._conn.account
        return [
            position_from_ib(p)
            for p in got
            if p.position != 0 and (account is None or p.account == account)
        ]
