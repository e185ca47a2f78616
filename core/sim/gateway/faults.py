"""Connection-level faults and historical-data pacing of the gateway simulator.

Market-level faults (rejects, partial/delayed fills, duplicate or corrected executions,
fills racing cancels, assignments, NaN/stale greeks) live on `SimExchange.faults` so
SimBroker sees them too; what only exists on a socket lives here: dropped connections,
clientIds already in use, late commission reports, pacing violations.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class GatewayFaults:
    """Mutable knobs; one-shot counters decrement as they fire."""

    claimed_client_ids: set[int] = field(default_factory=set)  # answered with 326, then closed
    drop_on_next_order: int = 0  # place the next N orders, then drop before any ack
    pacing_violations: int = 0  # answer the next N historical requests with 162
    silent_market_data: bool = False  # accept market-data requests, never send a tick
    # conId -> raw (position, avgCost) wire fields sent instead of the true ones: absurd
    # numbers ("1e15", "1e300"), or text ib_async cannot decode (it logs and drops the message)
    position_reports: dict[int, tuple[str, str]] = field(default_factory=dict)
    late_commission_next: int = 0  # the next N commission reports come late
    hold_next_client_id: bool = False  # the next startApi finds its id held by a ghost (326)
    # symbol ("*" = every symbol) -> the entitlement answer its market-data requests get:
    # 354, 10168, 10197 (no data at all) or 10090 (part of the data: no bid/ask)
    entitlement: dict[str, int] = field(default_factory=dict)
    # OrderState field name (e.g. "initMarginAfter") -> raw text every what-if answer
    # carries instead of the true figure: IB's unset value, "", or text that is no number
    what_if_fields: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class HistoricalPacing:
    """IB's historical-data pacing rules (defaults as IB documents them).

    - no more than `max_requests` requests in any `window_s` seconds;
    - no more than `same_contract_max` requests for one contract in `same_contract_window_s`;
    - optionally, no identical request within `identical_within_s` (0 disables it).
    """

    max_requests: int = 60
    window_s: float = 600.0
    same_contract_max: int = 6
    same_contract_window_s: float = 2.0
    identical_within_s: float = 0.0

    def __post_init__(self) -> None:
        if self.max_requests < 1:
            raise ValueError(f"HistoricalPacing.max_requests must be >= 1, got {self.max_requests}")
        if self.window_s <= 0 or self.same_contract_window_s <= 0:
            raise ValueError("HistoricalPacing windows must be > 0 seconds")
        if self.same_contract_max < 1:
            raise ValueError(
                f"HistoricalPacing.same_contract_max must be >= 1, got {self.same_contract_max}"
            )


class Pacer:
    """Tracks recent historical requests in wall-clock time (pacing is a real-time limit)."""

    def __init__(self, rules: HistoricalPacing, now: Callable[[], float] = time.monotonic) -> None:
        self.rules = rules
        self._now = now
        self._all: deque[float] = deque()
        self._by_contract: dict[object, deque[float]] = {}
        self._identical: dict[object, float] = {}

    def check(self, contract_key: object, request_key: object) -> str | None:
        """Record a request; return why it violates pacing, or None when it is allowed."""
        r = self.rules
        t = self._now()
        while self._all and t - self._all[0] > r.window_s:
            self._all.popleft()
        if len(self._all) >= r.max_requests:
            return f"more than {r.max_requests} requests within {r.window_s:g} s"
        recent = self._by_contract.setdefault(contract_key, deque())
        while recent and t - recent[0] > r.same_contract_window_s:
            recent.popleft()
        if len(recent) >= r.same_contract_max:
            return (
                f"more than {r.same_contract_max} requests for one contract within "
                f"{r.same_contract_window_s:g} s"
            )
        if r.identical_within_s > 0:
            last = self._identical.get(request_key)
            if last is not None and t - last < r.identical_within_s:
                return f"identical request within {r.identical_within_s:g} s"
        self._all.append(t)
        recent.append(t)
        self._identical[request_key] = t
        return None
