"""Contracts: qualification (con_ids) with a cache and batched requests, option chains.

Why not one request per contract: IB paces at `max_messages_per_s`, and a chain snapshot
asks for hundreds of options. Positive answers are cached (con_ids are permanent; options
and futures drop out once expired); options of one expiry asked `qualify_batch_min` or
more at a time are qualified with ONE request that leaves the strike and right open, and
matched back by (strike, right).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import replace
from datetime import date

from ib_async import Contract as IBContract

from core.broker.base import BrokerError
from core.broker.ib.connection import Connection
from core.broker.ib.convert import chain_from_ib, from_ib_contract, to_ib_contract
from core.broker.ib.requests import Requests
from core.clock import Clock
from core.domain import Contract, OptionChain, Right, SecType
from core.domain.timezones import MARKET_TZ

_QualKey = tuple[object, ...]
QUALIFY_BATCH_MIN = 4  # from this many options of one expiry, one wildcard request is cheaper


class Contracts:
    """Qualification and option chains over one connection, with the con_id cache."""

    def __init__(
        self, conn: Connection, requests: Requests, clock: Clock, qualify_batch_min: int
    ) -> None:
        if qualify_batch_min < 0:
            raise ValueError(
                f"qualify_batch_min must be >= 0 (0 = one request per contract), "
                f"got {qualify_batch_min}"
            )
        self._conn = conn
        self._requests = requests
        self._clock = clock
        # options of one expiry asked together from this many on go out as ONE request
        self.qualify_batch_min = qualify_batch_min
        self._qualified_by_key: dict[_QualKey, Contract] = {}
        self._qualified_by_id: dict[int, Contract] = {}
        self._pruned_on: date | None = None

    async def qualify(self, contracts: Sequence[Contract]) -> list[Contract | None]:
        """Qualified contracts in the order asked (None: IB does not know it)."""
        await self._conn.ready()
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
            asyncio.gather(*(self.qualify_one(unique[k]) for k in singles)),
            asyncio.gather(*(self._qualify_family([unique[k] for k in ks]) for ks in batches)),
        )
        answers.update(zip(singles, got_single, strict=True))
        for keys, got in zip(batches, got_batch, strict=True):
            answers.update(zip(keys, got, strict=True))
        return [answers[_qual_key(c)] for c in contracts]

    async def qualified(self, c: Contract) -> Contract:
        """`c` with a con_id (qualified when it had none); unchanged if IB does not know it."""
        if c.con_id or c.sec_type is SecType.BAG:
            return c
        q = await self.qualify_one(c)
        return q if q is not None else c

    async def option_chain(self, underlying: str) -> list[OptionChain]:
        await self._conn.ready()
        und = await self.qualify_one(Contract.stock(underlying))
        if und is None:
            und = await self.qualify_one(Contract.index(underlying))
        if und is None:
            return []
        chains = await self._requests.request(
            f"option chains of {underlying}",
            self._conn.ib.reqSecDefOptParamsAsync(und.symbol, "", und.sec_type.value, und.con_id),
        )
        return [chain_from_ib(und.symbol, ch) for ch in chains]

    # ----------------------------------------------------------- qualification cache
    def _market_date(self) -> date:
        return self._clock.now().astimezone(MARKET_TZ).date()

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
    async def qualify_one(self, c: Contract) -> Contract | None:
        """One contract, from the cache or its own request (a combo: when its legs are known)."""
        if c.sec_type is SecType.BAG:  # details carry no legs: a combo is known when its legs are
            legs = await asyncio.gather(*(self._known_con_id(leg.con_id) for leg in c.combo_legs))
            return c if all(legs) else None
        key = _qual_key(c)
        hit = self._cached(key)
        if hit is not None:
            return hit
        try:
            details = await self._requests.request(
                f"contract details for {c.describe()}",
                self._conn.ib.reqContractDetailsAsync(to_ib_contract(c)),
            )
        except BrokerError as exc:
            if exc.code == 200:
                return None
            raise
        if len(details) != 1 or details[0].contract is None:
            return None
        q = from_ib_contract(details[0].contract)
        self._remember(key, q)
        return q

    async def _qualify_family(self, contracts: list[Contract]) -> list[Contract | None]:
        """Options sharing (symbol, expiry, multiplier, exchange, currency, trading class),
        qualified with one strike-0/any-right request; each is matched back by
        (strike, right). A (strike, right) listed more than once (several trading classes)
        is asked for on its own, as `qualify_one` would; not listed -> None."""
        first = contracts[0]
        ask = to_ib_contract(first)
        ask.strike, ask.right = 0.0, ""
        try:
            details = await self._requests.request(
                f"option contracts of {first.symbol} {first.expiry} (all strikes and rights)",
                self._conn.ib.reqContractDetailsAsync(ask),
            )
        except BrokerError as exc:
            if exc.code == 200:
                return [None] * len(contracts)
            raise
        listed: dict[tuple[float, Right], list[Contract]] = {}
        for d in details:
            if d.contract is None or d.contract.secType != SecType.OPT.value:
                continue
            q = from_ib_contract(d.contract)
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
            again = await asyncio.gather(*(self.qualify_one(contracts[i]) for i in ambiguous))
            for i, answer in zip(ambiguous, again, strict=True):
                out[i] = answer
        return out

    async def _known_con_id(self, con_id: int) -> bool:
        hit = self._qualified_by_id.get(con_id)
        if hit is not None and not self._expired(hit):
            return True
        try:
            details = await self._requests.request(
                f"contract details for conId {con_id}",
                self._conn.ib.reqContractDetailsAsync(IBContract(conId=con_id)),
            )
        except BrokerError as exc:
            if exc.code == 200:
                return False
            raise
        if len(details) != 1:
            return False
        with contextlib.suppress(ValueError):  # a sec type V6 does not model: known, uncached
            if details[0].contract is not None:
                self._qualified_by_id[con_id] = from_ib_contract(details[0].contract)
        return True


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
