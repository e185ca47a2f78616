"""Entry planning: candidates from chain snapshots, through the portfolio limits (pure).

`plan_entries` builds and scores candidates (`candidates.build_candidates`), then walks
them best score first and admits each one only if `check_limits` passes against the book
*including the candidates already admitted this cycle* (two entries that each fit alone
but breach together are not both taken). Per underlying at most
`entries_per_underlying` are admitted; a structure already held (open or pending) on the
same underlying and expiry is skipped, and an identical strategy id already used today
(closed or cancelled) gets the next nonce so the new entry is a new strategy.

Returns what to execute (`accepted`), what the limits refused (`rejections`, ready for
`core.risk.limits.record_rejections`) and what was skipped for other reasons.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl

from core.config import Settings
from core.domain import AccountSummary
from core.domain.strategies import StrategyStatus
from core.domain.timezones import MARKET_TZ
from core.risk.exposure import LEG_SCHEMA, STRATEGY_SCHEMA, order_size
from core.risk.limits import Book as RiskBook
from core.risk.limits import LimitResult, candidate_book, check_limits
from core.strategy.candidates import Candidate, CandidateSet, EntrySignals, build_candidates

log = logging.getLogger(f"v6.{__name__}")

HELD_SCHEMA = pl.Schema(
    {
        "strategy_id": pl.String(),
        "underlying": pl.String(),
        "strategy_type": pl.String(),
        "expiry": pl.Date(),
        "status": pl.String(),
    }
)
SKIPPED_SCHEMA = pl.Schema(
    {
        "strategy_id": pl.String(),
        "underlying": pl.String(),
        "strategy_type": pl.String(),
        "reason": pl.String(),
    }
)
_LIVE = (StrategyStatus.OPEN.value, StrategyStatus.PENDING.value)


@dataclass(frozen=True)
class EntryPlan:
    accepted: list[Candidate]
    rejections: list[LimitResult]
    skipped: pl.DataFrame  # SKIPPED_SCHEMA
    candidates: CandidateSet

    def summary(self) -> dict[str, int]:
        return {
            "built": self.candidates.frame.height,
            "eligible": len(self.candidates.eligible),
            "accepted": len(self.accepted),
            "rejected_by_limits": len(self.rejections),
            "skipped": self.skipped.height,
        }


def held_structures(strategies: pl.DataFrame, legs: pl.DataFrame) -> pl.DataFrame:
    """`HELD_SCHEMA` rows from the ledger's `strategies` and `legs` tables (first expiry of
    each strategy's legs)."""
    exp = legs.group_by("strategy_id").agg(pl.col("expiry").min())
    return (
        strategies.select("strategy_id", "underlying", "strategy_type", "status")
        .join(exp, on="strategy_id", how="left")
        .select(list(HELD_SCHEMA))
        .cast(HELD_SCHEMA)
    )


MIN_MAX_LOSS = 0.01  # USD: the risk book needs > 0; a locked-in profit risks ~nothing
FAR_FACTOR = 3.0  # stress price for legs with unbounded upside risk: 3 x the highest strike


def risk_book(
    positions: pl.DataFrame,
    strategies: pl.DataFrame,
    deltas: Mapping[int, float],
    now: datetime,
) -> RiskBook:
    """The limits' view of the ledger (`core.risk.limits.Book`), vectorised.

    `positions`: `Book.leg_positions(open_only=False)` (legs with derived quantity and
    avg_price); `strategies`: the `strategies` table; `deltas`: con_id -> delta per unit
    from fresh quotes (a leg without one is NaN, which the limits refuse: unknown risk).

    - Exposure: OPEN strategies count what they hold; PENDING ones (an order may still
      fill) count their full intended size, ratio x quantity.
    - Max loss per strategy: the worst expiry P&L of its legs, evaluated at 0, at every
      strike and at `FAR_FACTOR` x the highest strike (P&L is piecewise linear, so the
      extremes sit on those points), net of the premium the fills paid or received.
      A PENDING strategy gets no premium credit (conservative). Buying power = max loss
      (defined-risk spreads).
    - Strategies that filled today (opened_at) are kept even when closed, for the
      new-strategies-per-day count; entries that never filled (cancelled) do not count.
    """
    day = now.astimezone(MARKET_TZ).date()
    s = strategies.with_columns(
        _opened=pl.coalesce("opened_at", "created_at"),
        _live=pl.col("status").is_in(list(_LIVE)),
    )
    filled_today = pl.col("opened_at").dt.convert_time_zone(MARKET_TZ.key).dt.date() == day
    keep = s.filter(pl.col("_live") | filled_today)
    legs = (
        positions.drop("underlying", "strategy_quantity", strict=False)
        .join(
            keep.select("strategy_id", "underlying", "status", "_live", _sq="quantity"),
            on="strategy_id",
        )
        .with_columns(
            q=pl.when(pl.col("status") == StrategyStatus.PENDING.value)
            .then(pl.col("ratio") * pl.col("_sq"))
            .otherwise(pl.col("quantity"))
            .cast(pl.Int64)
        )
        .filter(pl.col("_live") & (pl.col("q") != 0))
        .with_columns(
            delta=pl.when(pl.col("sec_type") == "STK")
            .then(pl.lit(1.0))
            .otherwise(
                pl.col("con_id").replace_strict(dict(deltas), default=None, return_dtype=pl.Float64)
            ),
            premium=pl.when(pl.col("status") == StrategyStatus.PENDING.value)
            .then(0.0)
            .otherwise(pl.col("q") * pl.col("multiplier") * pl.col("avg_price").fill_null(0.0)),
        )
    )
    ids = legs.select("strategy_id").unique()
    points = pl.concat(
        [
            ids.with_columns(S=pl.lit(0.0)),
            legs.select("strategy_id", S="strike").drop_nulls(),
            legs.group_by("strategy_id").agg(S=pl.col("strike").max().fill_null(0.0) * FAR_FACTOR),
        ]
    ).unique()
    k, S = pl.col("strike"), pl.col("S")
    value = (
        pl.when(pl.col("sec_type") == "STK")
        .then(S)
        .when(pl.col("right") == "C")
        .then((S - k).clip(lower_bound=0.0))
        .otherwise((k - S).clip(lower_bound=0.0))
    )
    pnl = (
        legs.join(points, on="strategy_id")
        .group_by("strategy_id", "S")
        .agg(v=(pl.col("q") * pl.col("multiplier") * value).sum())
        .group_by("strategy_id")
        .agg(worst=pl.col("v").min())
        .join(legs.group_by("strategy_id").agg(pl.col("premium").sum()), on="strategy_id")
        .select("strategy_id", max_loss=(pl.col("premium") - pl.col("worst")))
    )
    strat = (
        keep.join(pnl, on="strategy_id", how="left")
        .with_columns(
            max_loss=pl.max_horizontal(pl.col("max_loss").fill_null(0.0), pl.lit(MIN_MAX_LOSS)),
            opened_at=pl.col("_opened"),
            closed_at=pl.when(pl.col("_live"))
            .then(None)
            .otherwise(pl.coalesce("closed_at", "updated_at")),
        )
        .with_columns(buying_power=pl.when(pl.col("_live")).then(pl.col("max_loss")).otherwise(0.0))
    )
    return RiskBook(
        legs.with_columns(quantity=pl.col("q")).select(list(LEG_SCHEMA)),
        strat.select(list(STRATEGY_SCHEMA)),
    )


def plan_entries(
    chains: pl.DataFrame | Sequence[pl.DataFrame],
    book: RiskBook,
    account: AccountSummary,
    settings: Settings,
    signals: EntrySignals | None,
    weights: Mapping[str, float] | None,
    now: datetime,
    *,
    bars: pl.DataFrame | pl.LazyFrame | None = None,
    day_contracts: int = 0,
    day_notional: float = 0.0,
    day_max_loss: float = 0.0,
    held: pl.DataFrame | None = None,
) -> EntryPlan:
    """Candidates that pass every limit, best first (pure: no I/O, no broker).

    `book`: the current risk book (`core.risk.limits.Book`); `bars`: daily/underlying
    bars for the correlation limit; `day_contracts`/`day_notional`/`day_max_loss`: already
    sent today (hard caps); `held`: `HELD_SCHEMA` (see `held_structures`) for duplicate checks.
    """
    if now.tzinfo is None:
        raise ValueError(f"now={now!r} is naive; pass a tz-aware UTC datetime")
    chain = chains if isinstance(chains, pl.DataFrame) else _concat(chains)
    cset = build_candidates(chain, now, settings, signals, weights)
    held = pl.DataFrame(schema=HELD_SCHEMA) if held is None else held
    used_ids = set(held["strategy_id"].to_list())
    live = held.filter(pl.col("status").is_in(_LIVE))
    live_keys = set(live.select("underlying", "strategy_type", "expiry").iter_rows())
    skipped: list[dict[str, str]] = [
        {
            "strategy_id": "",
            "underlying": r["underlying"],
            "strategy_type": r["strategy_type"],
            "reason": r["status"],
        }
        for r in _not_ok(cset.frame).iter_rows(named=True)
    ]
    accepted: list[Candidate] = []
    rejections: list[LimitResult] = []
    per_und: dict[str, int] = {}
    working = book
    opened_on = now.astimezone(UTC).date()
    for cand in cset.eligible:
        key = (cand.underlying, cand.strategy_type, cand.expiry)
        if per_und.get(cand.underlying, 0) >= settings.strategies.entries_per_underlying:
            skipped.append(
                _skip(
                    cand,
                    f"{cand.underlying} already has an entry this cycle "
                    f"(entries_per_underlying={settings.strategies.entries_per_underlying})",
                )
            )
            continue
        if key in live_keys:
            skipped.append(
                _skip(
                    cand,
                    f"{cand.strategy_type} on {cand.underlying} "
                    f"{cand.expiry} is already held or pending",
                )
            )
            continue
        nonce = 0
        while cand.strategy_id in used_ids:
            nonce += 1
            cand = cand.with_nonce(nonce, opened_on)
        legs, strat = cand.limit_frames(now)
        cbook = candidate_book(legs, strat)
        result = check_limits(
            working,
            cbook,
            account,
            settings.limits,
            now,
            bars=bars,
            day_contracts=day_contracts,
            day_notional=day_notional,
            day_max_loss=day_max_loss,
        )
        if not result.ok:
            log.info("entry %s refused: %s", cand.describe(), result.describe())
            rejections.append(result)
            continue
        accepted.append(cand)
        used_ids.add(cand.strategy_id)
        per_und[cand.underlying] = per_und.get(cand.underlying, 0) + 1
        working = RiskBook(
            pl.concat([working.legs, cbook.legs]),
            pl.concat([working.strategies, cbook.strategies], how="diagonal_relaxed"),
        )
        contracts, notional = order_size(cbook.legs)
        day_contracts += contracts
        day_notional += notional
        day_max_loss += cand.max_loss
    return EntryPlan(accepted, rejections, pl.DataFrame(skipped, schema=SKIPPED_SCHEMA), cset)


def _not_ok(frame: pl.DataFrame) -> pl.DataFrame:
    if "status" not in frame.columns:
        return pl.DataFrame(
            schema={"underlying": pl.String, "strategy_type": pl.String, "status": pl.String}
        )
    return frame.filter(pl.col("status") != "ok")


def _skip(cand: Candidate, reason: str) -> dict[str, str]:
    return {
        "strategy_id": cand.strategy_id,
        "underlying": cand.underlying,
        "strategy_type": cand.strategy_type,
        "reason": reason,
    }


def _concat(chains: Sequence[pl.DataFrame]) -> pl.DataFrame:
    frames = [c for c in chains if c.height]
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()


__all__ = [
    "HELD_SCHEMA",
    "SKIPPED_SCHEMA",
    "EntryPlan",
    "held_structures",
    "plan_entries",
    "risk_book",
]
