"""Portfolio limits and hard caps: may this entry candidate join the book?

Every check is computed from the current book plus the candidate and reported as one
row: limit, scope, current value, value with the candidate, cap, ok. A rejection keeps
those numbers (written to `limit_rejections`, listed in the cycle's artifact), so a
refused entry is never a mystery.

Caps are inclusive (a value equal to the cap is allowed). A candidate that leaves a
measure strictly smaller than it was (it reduces delta that is already over the cap) is
not refused by that measure: refusing it would keep the book riskier.

Hard caps (`HARD_CAPS`) are module constants, not settings: no configuration, file or
environment variable can raise or disable them. Two are absolute (contracts and notional
per order and per market day, whatever the account); two scale with the account: an
order's max loss at most `MAX_LOSS_PER_ORDER_PCT` % of net liquidation, the max loss of
the market day's risk-adding orders at most `MAX_LOSS_PER_DAY_PCT` %. With the net
liquidation unknown (NaN, <= 0) the max-loss caps refuse every order that adds risk: no
entries on an account V6 cannot size. `check_hard_caps` is meant to be called again right
before an order goes to the broker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any

import polars as pl

from core.config import LimitSettings
from core.domain import AccountSummary
from core.domain.timezones import MARKET_TZ, UTC_US
from core.risk.exposure import (
    LEG_SCHEMA,
    STRATEGY_SCHEMA,
    conform,
    correlations,
    daily_returns,
    delta_by_underlying,
    leg_delta,
    order_size,
)
from core.store.delta import DeltaStore, WriteResult

MAX_CONTRACTS_PER_ORDER = 50
MAX_NOTIONAL_PER_ORDER = 5_000_000.0  # USD, sum |qty| * multiplier * strike
MAX_CONTRACTS_PER_DAY = 500
MAX_NOTIONAL_PER_DAY = 50_000_000.0  # USD
# A careful trader risks a few % per trade; V6's soft limits bound the book far below
# these. They are the backstop against a bug or a loosened config, sized to the account.
MAX_LOSS_PER_ORDER_PCT = 10.0  # an order's max loss, % of net liquidation
MAX_LOSS_PER_DAY_PCT = 25.0  # the market day's risk-adding orders' max loss, % of net liq
HARD_CAPS: MappingProxyType[str, float] = MappingProxyType(
    {
        "hard_contracts_per_order": MAX_CONTRACTS_PER_ORDER,
        "hard_notional_per_order": MAX_NOTIONAL_PER_ORDER,
        "hard_max_loss_per_order": MAX_LOSS_PER_ORDER_PCT,
        "hard_contracts_per_day": MAX_CONTRACTS_PER_DAY,
        "hard_notional_per_day": MAX_NOTIONAL_PER_DAY,
        "hard_max_loss_per_day": MAX_LOSS_PER_DAY_PCT,
    }
)

REJECTIONS_TABLE = "limit_rejections"
PCT_NET_LIQ = "% of net liquidation"
DELTA_UNIT = "delta (shares/100)"

CHECK_SCHEMA = pl.Schema(
    {
        "limit": pl.String,
        "scope": pl.String,
        "current": pl.Float64,
        "with_candidate": pl.Float64,
        "cap": pl.Float64,
        "unit": pl.String,
        "ok": pl.Boolean,
        "hard": pl.Boolean,
        "detail": pl.String,
    }
)


@dataclass(frozen=True)
class Book:
    """Open legs and strategies (see `core.risk.exposure` for the columns and units)."""

    legs: pl.DataFrame
    strategies: pl.DataFrame

    def __post_init__(self) -> None:
        object.__setattr__(self, "legs", conform(self.legs, LEG_SCHEMA, "legs"))
        object.__setattr__(
            self, "strategies", conform(self.strategies, STRATEGY_SCHEMA, "strategies")
        )
        _require_not_null(
            self.legs, ["strategy_id", "underlying", "quantity", "multiplier"], "legs"
        )
        _require_not_null(
            self.strategies,
            ["strategy_id", "underlying", "max_loss", "buying_power", "opened_at"],
            "strategies",
        )
        bad = self.strategies.filter(
            ~pl.col("max_loss").is_finite()
            | (pl.col("max_loss") <= 0)
            | ~pl.col("buying_power").is_finite()
            | (pl.col("buying_power") < 0)
        )
        if not bad.is_empty():
            raise ValueError(
                "strategies: max_loss must be finite and > 0 and buying_power finite and >= 0 "
                f"(defined-risk strategies only); offending strategy_id(s): "
                f"{bad['strategy_id'].to_list()[:5]}"
            )

    @classmethod
    def empty(cls) -> Book:
        return cls(pl.DataFrame(schema=LEG_SCHEMA), pl.DataFrame(schema=STRATEGY_SCHEMA))

    @property
    def open_strategies(self) -> pl.DataFrame:
        return self.strategies.filter(pl.col("closed_at").is_null())

    @property
    def open_legs(self) -> pl.DataFrame:
        """Legs not belonging to a strategy known to be closed (unattributed legs count)."""
        closed = self.strategies.filter(pl.col("closed_at").is_not_null())["strategy_id"]
        return self.legs.filter(~pl.col("strategy_id").is_in(closed.implode()))


def candidate_book(legs: pl.DataFrame, strategy: pl.DataFrame) -> Book:
    """A Book holding exactly one new strategy and its legs, checked for consistency."""
    book = Book(legs, strategy)
    s = book.strategies
    if s.height != 1:
        raise ValueError(f"candidate: expected exactly 1 strategy row, got {s.height}")
    sid, und = s["strategy_id"][0], s["underlying"][0]
    if book.legs.is_empty():
        raise ValueError(f"candidate {sid}: has no legs")
    wrong = book.legs.filter((pl.col("strategy_id") != sid) | (pl.col("underlying") != und))
    if not wrong.is_empty():
        raise ValueError(
            f"candidate {sid}: every leg must have strategy_id={sid!r} and underlying={und!r}; "
            f"got {wrong.select('strategy_id', 'underlying').unique().rows()}"
        )
    if (book.legs["quantity"] == 0).any():
        raise ValueError(f"candidate {sid}: leg quantity 0 is not an order; remove the leg")
    if book.legs["strike"].is_null().any() or (book.legs["strike"] <= 0).any():
        raise ValueError(f"candidate {sid}: every leg needs a strike > 0 (for the hard caps)")
    return book


@dataclass(frozen=True)
class DayUsage:
    """What V6 already sent on a market day, which the day hard caps add an order to."""

    contracts: int = 0
    notional: float = 0.0  # USD, sum |qty| x multiplier x strike
    max_loss: float = 0.0  # USD, of the risk-adding orders (entries, rolls)


@dataclass(frozen=True)
class LimitResult:
    """All checks for one candidate (one row each, `CHECK_SCHEMA`)."""

    strategy_id: str
    underlying: str
    checks: pl.DataFrame

    @property
    def ok(self) -> bool:
        return bool(self.checks["ok"].all())

    @property
    def rejections(self) -> pl.DataFrame:
        return self.checks.filter(~pl.col("ok"))

    def describe(self) -> str:
        """One line per failed check, e.g. for logs and the cycle artifact."""
        return "; ".join(
            f"{r['limit']}[{r['scope']}]: {_fmt(r['current'])} -> {_fmt(r['with_candidate'])} "
            f"> cap {_fmt(r['cap'])} {r['unit']}"
            for r in self.rejections.iter_rows(named=True)
        )

    def rejection_rows(self, *, run_id: str, now: datetime) -> pl.DataFrame:
        """The rejections as `limit_rejections` rows."""
        return self.rejections.select(
            pl.lit(now, dtype=UTC_US).alias("ts"),
            pl.lit(run_id).alias("run_id"),
            pl.lit(self.strategy_id).alias("strategy_id"),
            pl.lit(self.underlying).alias("underlying"),
            "limit",
            "scope",
            "current",
            "with_candidate",
            "cap",
            "unit",
            "hard",
            "detail",
        )


def check_limits(
    book: Book,
    candidate: Book,
    account: AccountSummary,
    settings: LimitSettings,
    now: datetime,
    *,
    bars: pl.DataFrame | pl.LazyFrame | None = None,
    day_contracts: int = 0,
    day_notional: float = 0.0,
    day_max_loss: float = 0.0,
) -> LimitResult:
    """Every portfolio limit and hard cap for `candidate` (one strategy) against `book`.

    - portfolio_delta / underlying_delta: |net delta| in shares/100 (see exposure.py).
    - concentration: max loss on the candidate's underlying, % of net liquidation.
    - correlated_exposure: max loss across the candidate's underlying and every held
      underlying whose |daily-return correlation| over `correlation_lookback_days`
      exceeds `correlation_threshold` (absolute, since short-premium books lose on big
      moves either way). Too little data to measure (fewer than half the lookback of
      overlapping returns) counts as correlated: unknown risk is not diversification.
    - buying_power: margin in use, the larger of the broker's maintenance margin and the
      book's own figure (the broker's may lag a fill), plus the candidate's, % of net liq.
    - open_strategies / new_strategies_today (market date of `now`, closed ones count).
    - hard caps on the candidate's order and the day's totals (`day_contracts`,
      `day_notional`, `day_max_loss` = what was already sent today).

    An unknown net liquidation (NaN, <= 0) makes every "% of net liquidation" value
    unknown, which refuses the candidate (no entries on an account V6 cannot size).
    """
    if candidate.strategies.height != 1:
        raise ValueError(
            f"candidate: expected exactly 1 strategy, got {candidate.strategies.height}; "
            "build it with candidate_book()"
        )
    net_liq = _known_net_liq(account.net_liquidation)
    cand = candidate.strategies.row(0, named=True)
    sid, und = cand["strategy_id"], cand["underlying"]
    open_s = book.open_strategies
    legs = book.open_legs
    rows: list[dict[str, Any]] = []

    # -- delta -------------------------------------------------------------------------
    book_delta = legs.select(leg_delta().sum()).item() if legs.height else 0.0
    cand_delta = candidate.legs.select(leg_delta().sum()).item()
    by_und = delta_by_underlying(legs).filter(pl.col("underlying") == und)
    und_delta = by_und["delta"][0] if by_und.height else 0.0
    rows.append(
        _row(
            "portfolio_delta",
            "portfolio",
            abs(book_delta),
            abs(book_delta + cand_delta),
            settings.max_portfolio_delta,
            DELTA_UNIT,
            f"net delta {book_delta:+.2f} -> {book_delta + cand_delta:+.2f}",
        )
    )
    rows.append(
        _row(
            "underlying_delta",
            und,
            abs(und_delta),
            abs(und_delta + cand_delta),
            settings.max_underlying_delta,
            DELTA_UNIT,
            f"{und} net delta {und_delta:+.2f} -> {und_delta + cand_delta:+.2f}",
        )
    )

    # -- concentration and correlated exposure (max loss, % of net liq) ---------------------
    loss_by_und = open_s.group_by("underlying").agg(pl.col("max_loss").sum())
    loss_map = dict(loss_by_und.iter_rows())
    cand_loss = float(cand["max_loss"])
    und_loss = float(loss_map.get(und, 0.0))
    rows.append(
        _row(
            "concentration",
            und,
            _pct(und_loss, net_liq),
            _pct(und_loss + cand_loss, net_liq),
            settings.max_concentration_pct,
            PCT_NET_LIQ,
            f"max loss on {und} {und_loss:,.2f} -> {und_loss + cand_loss:,.2f} USD of net "
            f"liquidation {net_liq:,.2f}",
        )
    )
    group, group_note = _correlated_group(und, sorted(loss_map), bars, settings, now)
    group_loss = float(sum(loss_map.get(s, 0.0) for s in group))
    rows.append(
        _row(
            "correlated_exposure",
            und,
            _pct(group_loss, net_liq),
            _pct(group_loss + cand_loss, net_liq),
            settings.max_correlated_exposure_pct,
            PCT_NET_LIQ,
            f"max loss across {', '.join(group)} {group_loss:,.2f} -> "
            f"{group_loss + cand_loss:,.2f} USD; {group_note}",
        )
    )

    # -- buying power ------------------------------------------------------------------------
    book_bp = float(open_s["buying_power"].sum())
    used = max(float(account.maintenance_margin), book_bp)
    cand_bp = float(cand["buying_power"])
    rows.append(
        _row(
            "buying_power",
            "portfolio",
            _pct(used, net_liq),
            _pct(used + cand_bp, net_liq),
            settings.max_buying_power_pct,
            PCT_NET_LIQ,
            f"margin in use {used:,.2f} (broker {account.maintenance_margin:,.2f}, book "
            f"{book_bp:,.2f}) + candidate {cand_bp:,.2f} USD",
        )
    )

    # -- counts ------------------------------------------------------------------------------
    n_open = open_s.height
    rows.append(
        _row(
            "open_strategies",
            "portfolio",
            n_open,
            n_open + 1,
            settings.max_open_strategies,
            "strategies",
            f"{n_open} open",
        )
    )
    today = now.astimezone(MARKET_TZ).date()
    n_today = book.strategies.filter(
        pl.col("opened_at").dt.convert_time_zone(MARKET_TZ.key).dt.date() == today
    ).height
    rows.append(
        _row(
            "new_strategies_today",
            "day",
            n_today,
            n_today + 1,
            settings.max_new_strategies_per_day,
            "strategies",
            f"{n_today} opened on {today.isoformat()} (market date)",
        )
    )

    checks = pl.DataFrame(rows, schema=CHECK_SCHEMA)
    hard = check_hard_caps(
        candidate.legs,
        order_max_loss=cand_loss,
        net_liquidation=net_liq,
        day_contracts=day_contracts,
        day_notional=day_notional,
        day_max_loss=day_max_loss,
    ).checks
    return LimitResult(sid, und, pl.concat([checks, hard]))


def check_hard_caps(
    order_legs: pl.DataFrame,
    *,
    order_max_loss: float,
    net_liquidation: float,
    day_contracts: int,
    day_notional: float,
    day_max_loss: float,
    reduces_risk: bool = False,
) -> LimitResult:
    """The hard caps for one order; they take no settings, so nothing can raise them.

    `order_max_loss` is the order's worst loss in USD (NaN = unknown, refused);
    `day_contracts` / `day_notional` / `day_max_loss` are what was already sent today.
    An order that only reduces risk (`reduces_risk=True`, a closing order) is still bound
    by the per-order contract and notional caps, but not refused by the day caps nor the
    max-loss caps: refusing an exit would leave more risk on.
    """
    if (
        day_contracts < 0
        or not (math.isfinite(day_notional) and day_notional >= 0)
        or not (math.isfinite(day_max_loss) and day_max_loss >= 0)
    ):
        raise ValueError(
            f"day_contracts ({day_contracts}), day_notional ({day_notional}) and "
            f"day_max_loss ({day_max_loss}) must be finite and >= 0"
        )
    net_liq = _known_net_liq(net_liquidation)
    liq_note = (
        f"of net liquidation {net_liq:,.2f} USD"
        if math.isfinite(net_liq)
        else f"net liquidation unknown ({net_liquidation!r})"
    )
    legs = conform(order_legs, LEG_SCHEMA, "order legs")
    if legs.is_empty():
        raise ValueError("order legs: empty order")
    contracts, notional = order_size(legs)
    if not math.isfinite(notional):
        raise ValueError("order legs: notional is not finite; every leg needs a strike")
    sid = legs["strategy_id"][0] or ""
    und = legs["underlying"][0] or ""
    day_note = " (closing order: reported, not enforced)" if reduces_risk else ""
    rows = [
        _row(
            "hard_contracts_per_order",
            "order",
            0,
            contracts,
            MAX_CONTRACTS_PER_ORDER,
            "contracts",
            f"{contracts} contracts in the order",
            hard=True,
        ),
        _row(
            "hard_notional_per_order",
            "order",
            0.0,
            notional,
            MAX_NOTIONAL_PER_ORDER,
            "USD",
            f"notional {notional:,.2f} USD (sum |qty| x multiplier x strike)",
            hard=True,
        ),
        _row(
            "hard_max_loss_per_order",
            "order",
            0.0,
            _pct(order_max_loss, net_liq),
            MAX_LOSS_PER_ORDER_PCT,
            PCT_NET_LIQ,
            f"max loss {order_max_loss:,.2f} USD {liq_note}{day_note}",
            hard=True,
            enforce=not reduces_risk,
        ),
        _row(
            "hard_contracts_per_day",
            "day",
            day_contracts,
            day_contracts + contracts,
            MAX_CONTRACTS_PER_DAY,
            "contracts",
            f"{day_contracts} already sent today{day_note}",
            hard=True,
            enforce=not reduces_risk,
        ),
        _row(
            "hard_notional_per_day",
            "day",
            day_notional,
            day_notional + notional,
            MAX_NOTIONAL_PER_DAY,
            "USD",
            f"{day_notional:,.2f} USD already sent today{day_note}",
            hard=True,
            enforce=not reduces_risk,
        ),
        _row(
            "hard_max_loss_per_day",
            "day",
            _pct(day_max_loss, net_liq),
            _pct(day_max_loss + order_max_loss, net_liq),
            MAX_LOSS_PER_DAY_PCT,
            PCT_NET_LIQ,
            f"max loss {day_max_loss:,.2f} USD already sent today {liq_note}{day_note}",
            hard=True,
            enforce=not reduces_risk,
        ),
    ]
    return LimitResult(sid, und, pl.DataFrame(rows, schema=CHECK_SCHEMA))


def record_rejections(
    store: DeltaStore, results: list[LimitResult], *, run_id: str, now: datetime
) -> WriteResult:
    """Write every rejection of this run to `limit_rejections` exactly once (a replay of the
    same run writes nothing new)."""
    frames = [r.rejection_rows(run_id=run_id, now=now) for r in results if not r.ok]
    batch = pl.concat(frames) if frames else store.spec(REJECTIONS_TABLE).empty()
    return store.merge(REJECTIONS_TABLE, batch, update=False)


# --------------------------------------------------------------------------------------


def _row(
    limit: str,
    scope: str,
    current: float,
    with_candidate: float,
    cap: float,
    unit: str,
    detail: str,
    *,
    hard: bool = False,
    enforce: bool = True,
) -> dict[str, Any]:
    cur, new = float(current), float(with_candidate)
    # NaN (unknown, e.g. a missing delta) fails both comparisons: unknown risk is refused.
    ok = (not enforce) or new <= cap or new < cur
    if math.isnan(new):
        detail = f"{detail}; value unknown (missing data), refused"
    return {
        "limit": limit,
        "scope": scope,
        "current": None if math.isnan(cur) else cur,
        "with_candidate": None if math.isnan(new) else new,
        "cap": float(cap),
        "unit": unit,
        "ok": bool(ok),
        "hard": hard,
        "detail": detail,
    }


def _pct(amount: float, net_liq: float) -> float:
    return amount * 100.0 / net_liq  # multiply first: 40000*100/100000 is exactly 40.0


def _known_net_liq(value: float) -> float:
    """The net liquidation, or NaN when it is unknown or absurd (every % of it is then
    unknown, and unknown risk is refused)."""
    v = float(value)
    return v if math.isfinite(v) and v > 0 else math.nan


def _correlated_group(
    target: str,
    held: list[str],
    bars: pl.DataFrame | pl.LazyFrame | None,
    settings: LimitSettings,
    now: datetime,
) -> tuple[list[str], str]:
    """The target plus every held underlying correlated with it (or unmeasurable)."""
    others = [s for s in held if s != target]
    if not others:
        return [target], "no other underlying held"
    lookback = settings.correlation_lookback_days
    min_obs = max(3, math.ceil(lookback / 2))
    if bars is None:
        returns = pl.DataFrame()
    else:
        returns = daily_returns(bars, [target, *others], now, lookback)
    corr = (
        correlations(returns, target, others)
        .with_columns(measured=pl.col("corr").is_not_null() & (pl.col("n_obs") >= min_obs))
        .with_columns(
            member=~pl.col("measured") | (pl.col("corr").abs() > settings.correlation_threshold)
        )
    )
    members = corr.filter(pl.col("member"))
    notes = [
        f"{r['symbol']} corr {r['corr']:+.2f}"
        if r["measured"]
        else f"{r['symbol']} assumed correlated ({r['n_obs']} returns < {min_obs})"
        for r in members.iter_rows(named=True)
    ]
    group = [target, *members["symbol"].to_list()]
    threshold = f"|corr| > {settings.correlation_threshold:.2f}"
    return group, (f"{threshold}: " + ", ".join(notes)) if notes else f"none held with {threshold}"


def _fmt(x: float | None) -> str:
    """Enough digits to show why 60.001 breaches 60, none wasted on whole numbers."""
    return "n/a" if x is None else f"{x:,.4f}".rstrip("0").rstrip(".")


def _require_not_null(frame: pl.DataFrame, cols: list[str], what: str) -> None:
    nulls = [c for c in cols if frame[c].null_count()]
    if nulls:
        raise ValueError(f"{what}: columns {nulls} contain nulls; every row needs a value")


__all__ = [
    "HARD_CAPS",
    "MAX_CONTRACTS_PER_DAY",
    "MAX_CONTRACTS_PER_ORDER",
    "MAX_LOSS_PER_DAY_PCT",
    "MAX_LOSS_PER_ORDER_PCT",
    "MAX_NOTIONAL_PER_DAY",
    "MAX_NOTIONAL_PER_ORDER",
    "Book",
    "DayUsage",
    "LimitResult",
    "candidate_book",
    "check_hard_caps",
    "check_limits",
    "record_rejections",
]
