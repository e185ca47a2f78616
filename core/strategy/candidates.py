"""Entry candidates: iron condors, bull put spreads and bear call spreads, scored.

Pipeline over a chain snapshot (any number of underlyings), vectorised with polars:
`prepare_chain` (mid, T, forward, IV/delta fill) -> expiry nearest `target_dte` in
[dte_min, dte_max] -> `measure_skew` + `lean` -> `select_strikes` -> structures -> metrics
-> score. Prices are per share (IB's); a credit is positive here.

Metrics (per strategy unit):
- credit = sum(short mid) - sum(long mid); `credit_natural` = short bids - long asks.
- width = the wider wing (an iron condor can lose on one side only); max loss =
  (width - credit) x multiplier; buying power of a defined-risk spread = max loss.
- model: the underlying ends lognormal around the forward with the ATM implied vol
  (`model_iv`, no skew). `model_value` = Black-76 value of the spreads under it;
  expected return % = (credit - model_value) / credit x 100 (what the trade earns if the
  smile's extra premium over ATM vol is not realised, the edge of selling skew);
  POP = P(the underlying ends beyond the breakeven(s)) under the same model. Without an
  ATM vol, POP falls back to 1 - |short delta| (summed over sides) and expected return
  to 0, and `pop_source` says "delta".

Score (documented, config in `StrategySettings`): components in [0, 1]
    credit_to_width = min(credit / width / credit_to_width_full, 1)
    prob_profit     = POP
    iv_rank         = IV rank / 100 (unknown: 0.5)
    regime          = regime_fit[structure][regime]   (0 vetoes the entry)
    lead            = lead_fit[structure][direction of a fresh futures signal, else unknown]
    score_raw = sum(w_i * c_i) / sum(w_i) with w = score_weights
    score     = score_raw * clip(strategy-type weight, weight_min, weight_max) (default 1)
A candidate is eligible when credit > 0, credit/width >= min_credit_to_width, no veto and
score >= min_score; others stay in the frame with `status` = why.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
from scipy.special import ndtr

from core.analysis.futures import InsufficientData, LeadingSignal
from core.config import Settings
from core.domain import Contract, Right
from core.domain.strategies import LegSpec, StrategyType, strategy_id_for
from core.domain.timezones import UTC_US
from core.pricing import bs_price
from core.strategy.chain import prepare_chain
from core.strategy.skew import SKEW_SCHEMA, lean, measure_skew
from core.strategy.strikes import delta_targets, select_strikes

log = logging.getLogger(f"v6.{__name__}")

STRUCTURES = ("iron_condor", "bull_put_spread", "bear_call_spread")
OK = "ok"
UNKNOWN = "unknown"
_LEG = (
    "strike",
    "con_id",
    "bid",
    "ask",
    "mid",
    "delta_used",
    "iv_used",
    "local_symbol",
    "trading_class",
)


@dataclass(frozen=True)
class EntrySignals:
    """What the cycle knows per underlying beyond the chain (all optional).

    `regimes`: regime value (see `core.domain.regimes.Regime`); `iv_rank`: 0-100 or None;
    `lead`: the futures leading signal (`core.analysis.futures.latest_signal`).
    """

    regimes: Mapping[str, str] = field(default_factory=dict)
    iv_rank: Mapping[str, float | None] = field(default_factory=dict)
    lead: Mapping[str, LeadingSignal | InsufficientData | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CandidateLeg:
    """One leg: a qualified option, its signed ratio per strategy unit and its quote."""

    contract: Contract
    ratio: int
    bid: float
    ask: float
    mid: float
    delta: float
    iv: float


@dataclass(frozen=True)
class Candidate:
    """A strategy V6 could open, with every number that chose and scored it."""

    strategy_id: str
    strategy_type: str
    underlying: str
    expiry: date
    dte: int
    quantity: int
    legs: tuple[CandidateLeg, ...]
    multiplier: int
    credit: float  # per share, at mid
    credit_natural: float  # per share, at the touch
    width: float
    max_loss: float  # USD for `quantity` units
    buying_power: float  # USD for `quantity` units
    pop: float
    pop_source: str
    expected_return_pct: float
    model_value: float  # per share
    model_iv: float
    forward: float
    T: float
    score: float
    score_raw: float
    weight: float
    components: Mapping[str, float]
    iv_rank: float | None
    regime: str
    lead_direction: str
    skew_norm: float | None
    put_call_ratio: float | None
    rr25: float | None
    atm_iv: float | None
    lean: float
    put_target_delta: float | None
    call_target_delta: float | None
    skew_source: str
    skew_reason: str
    nonce: int = 0
    notes: tuple[str, ...] = ()

    @property
    def credit_to_width(self) -> float:
        return self.credit / self.width

    def leg_specs(self) -> list[LegSpec]:
        return [LegSpec(leg.contract, leg.ratio) for leg in self.legs]

    def with_nonce(self, nonce: int, opened_on: date) -> Candidate:
        """The same candidate as the `nonce`-th identical strategy of the day (new id)."""
        sid = strategy_id_for(
            self.strategy_type, self.underlying, self.leg_specs(), opened_on, nonce
        )
        return replace(self, strategy_id=sid, nonce=nonce)

    def with_quantity(self, quantity: int) -> Candidate:
        """Resized (max loss and buying power scale; per-share prices do not)."""
        if quantity <= 0:
            raise ValueError(f"Candidate.quantity must be a positive integer, got {quantity}")
        per_unit = self.max_loss / self.quantity
        return replace(
            self, quantity=quantity, max_loss=per_unit * quantity, buying_power=per_unit * quantity
        )

    def limit_frames(self, now: datetime) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(legs, strategy) frames in the shape `core.risk.limits.candidate_book` takes."""
        legs = pl.DataFrame(
            {
                "strategy_id": [self.strategy_id] * len(self.legs),
                "underlying": [self.underlying] * len(self.legs),
                "quantity": [leg.ratio * self.quantity for leg in self.legs],
                "delta": [leg.delta for leg in self.legs],
                "multiplier": [leg.contract.multiplier for leg in self.legs],
                "strike": [leg.contract.strike for leg in self.legs],
            },
            schema={
                "strategy_id": pl.String,
                "underlying": pl.String,
                "quantity": pl.Int64,
                "delta": pl.Float64,
                "multiplier": pl.Int64,
                "strike": pl.Float64,
            },
        )
        strategy = pl.DataFrame(
            {
                "strategy_id": [self.strategy_id],
                "underlying": [self.underlying],
                "max_loss": [self.max_loss],
                "buying_power": [self.buying_power],
                "opened_at": [now],
            }
        ).with_columns(pl.col("opened_at").cast(UTC_US))
        return legs, strategy

    def describe(self) -> str:
        strikes = "/".join(
            f"{leg.contract.strike:g}{leg.contract.right}"
            for leg in self.legs
            if leg.contract.right is not None
        )
        return (
            f"{self.strategy_type} {self.underlying} {self.expiry} {strikes} x{self.quantity} "
            f"credit {self.credit:.2f}/{self.width:g} POP {self.pop:.2f} score {self.score:.3f}"
        )


@dataclass(frozen=True)
class CandidateSet:
    """Every structure built this cycle (`frame`, one row each with `status`), the eligible
    ones as objects (`eligible`, best score first), and sides no strike fitted (`missing`)."""

    frame: pl.DataFrame
    eligible: list[Candidate]
    missing: pl.DataFrame
    skew: pl.DataFrame


# ----------------------------------------------------------------------------------------


def build_candidates(
    chain: pl.DataFrame,
    now: datetime,
    settings: Settings,
    signals: EntrySignals | None = None,
    weights: Mapping[str, float] | None = None,
) -> CandidateSet:
    """All enabled structures for every underlying in `chain`, scored (pure)."""
    st = settings.strategies
    signals = signals or EntrySignals()
    if chain.is_empty():
        return CandidateSet(pl.DataFrame(), [], pl.DataFrame(), pl.DataFrame(schema=SKEW_SCHEMA))
    prepared = prepare_chain(chain, now)
    window = prepared.filter(pl.col("dte").is_between(st.dte_min, st.dte_max))
    nearest = (
        window.select("underlying", "expiry", "dte")
        .unique()
        .sort((pl.col("dte") - st.target_dte).abs(), "dte")
        .group_by("underlying", maintain_order=True)
        .first()
        .select("underlying", "expiry")
    )
    chosen = window.join(nearest, on=["underlying", "expiry"], how="semi")
    skew = lean(measure_skew(chosen), st)
    targets = delta_targets(skew, st)
    sides, missing = select_strikes(chosen, targets, st)
    frame = _structures(sides, targets, st.enabled)
    if frame.is_empty():
        return CandidateSet(frame, [], missing, skew)
    frame = _metrics(frame)
    frame = _score(frame, settings, signals, weights or {}, now)
    eligible = [
        _candidate(row, now, st.contracts_per_entry)
        for row in frame.filter(pl.col("status") == OK).iter_rows(named=True)
    ]
    eligible.sort(key=lambda c: -c.score)
    return CandidateSet(frame, eligible, missing, skew)


def _side(sides: pl.DataFrame, right: str, prefix: str) -> pl.DataFrame:
    cols = [f"short_{c}" for c in _LEG] + [f"long_{c}" for c in _LEG]
    return sides.filter(pl.col("right") == right).select(
        "underlying",
        "expiry",
        "T",
        "dte",
        "forward",
        "multiplier",
        *[pl.col(c).alias(f"{prefix}_{c}") for c in cols],
        pl.col("width").alias(f"{prefix}_width"),
        pl.col("target_delta").alias(f"{prefix}_target_delta"),
    )


def _structures(sides: pl.DataFrame, targets: pl.DataFrame, enabled: Sequence[str]) -> pl.DataFrame:
    keys = ["underlying", "expiry"]
    puts = _side(sides, "P", "put")
    calls = _side(sides, "C", "call")
    common = ["T", "dte", "forward", "multiplier"]
    parts = []
    if StrategyType.BULL_PUT_SPREAD in enabled:
        parts.append(puts.with_columns(strategy_type=pl.lit(StrategyType.BULL_PUT_SPREAD.value)))
    if StrategyType.BEAR_CALL_SPREAD in enabled:
        parts.append(calls.with_columns(strategy_type=pl.lit(StrategyType.BEAR_CALL_SPREAD.value)))
    if StrategyType.IRON_CONDOR in enabled:
        parts.append(
            puts.join(calls.drop(common), on=keys).with_columns(
                strategy_type=pl.lit(StrategyType.IRON_CONDOR.value)
            )
        )
    if not parts:
        return pl.DataFrame()
    skew_cols = targets.select(
        *keys,
        "atm_iv",
        "skew_norm",
        "put_call_ratio",
        "rr25",
        "lean",
        "skew_source",
        "skew_reason",
        put_target="put_target",
        call_target="call_target",
    )
    return pl.concat(parts, how="diagonal_relaxed").join(skew_cols, on=keys, how="left")


def _col(frame: pl.DataFrame, name: str) -> np.ndarray:
    if name not in frame.columns:
        return np.full(frame.height, np.nan)
    return frame[name].cast(pl.Float64).fill_null(np.nan).to_numpy()


def _metrics(frame: pl.DataFrame) -> pl.DataFrame:
    """Credit, width, max loss, model value, expected return and POP (numpy, vectorised)."""
    has_p = (
        frame["strategy_type"]
        .is_in([StrategyType.IRON_CONDOR.value, StrategyType.BULL_PUT_SPREAD.value])
        .to_numpy()
    )
    has_c = (
        frame["strategy_type"]
        .is_in([StrategyType.IRON_CONDOR.value, StrategyType.BEAR_CALL_SPREAD.value])
        .to_numpy()
    )
    z = np.zeros(frame.height)
    ps_mid, pl_mid = _col(frame, "put_short_mid"), _col(frame, "put_long_mid")
    cs_mid, cl_mid = _col(frame, "call_short_mid"), _col(frame, "call_long_mid")
    put_credit = np.where(has_p, ps_mid - pl_mid, z)
    call_credit = np.where(has_c, cs_mid - cl_mid, z)
    credit = np.round(put_credit + call_credit, 6)  # cent prices: drop float dust
    natural = np.round(
        np.where(has_p, _col(frame, "put_short_bid") - _col(frame, "put_long_ask"), z)
        + np.where(has_c, _col(frame, "call_short_bid") - _col(frame, "call_long_ask"), z),
        6,
    )
    width = np.fmax(
        np.where(has_p, _col(frame, "put_width"), np.nan),
        np.where(has_c, _col(frame, "call_width"), np.nan),
    )
    mult = frame["multiplier"].cast(pl.Float64).to_numpy()
    F, T = _col(frame, "forward"), _col(frame, "T")
    atm = _col(frame, "atm_iv")
    short_ivs = np.where(has_p, _col(frame, "put_short_iv_used"), np.nan)
    short_ivs = np.where(
        np.isfinite(short_ivs),
        short_ivs,
        np.where(has_c, _col(frame, "call_short_iv_used"), np.nan),
    )
    sigma = np.where(np.isfinite(atm) & (atm > 0), atm, np.nan)
    kps, kpl = _col(frame, "put_short_strike"), _col(frame, "put_long_strike")
    kcs, kcl = _col(frame, "call_short_strike"), _col(frame, "call_long_strike")
    with np.errstate(all="ignore"):
        put_val = bs_price(F, kps, T, 0.0, 0.0, sigma, False) - bs_price(
            F, kpl, T, 0.0, 0.0, sigma, False
        )
        call_val = bs_price(F, kcs, T, 0.0, 0.0, sigma, True) - bs_price(
            F, kcl, T, 0.0, 0.0, sigma, True
        )
        model_value = np.where(has_p, put_val, z) + np.where(has_c, call_val, z)
        pop_model = _pop_model(has_p, has_c, F, T, sigma, kps, kcs, credit)
        pop_delta = (
            1.0
            - np.where(has_p, np.abs(_col(frame, "put_short_delta_used")), z)
            - (np.where(has_c, np.abs(_col(frame, "call_short_delta_used")), z))
        )
        model_ok = np.isfinite(model_value) & np.isfinite(pop_model)
        pop = np.clip(np.where(model_ok, pop_model, pop_delta), 0.0, 1.0)
        exp_ret = np.where(model_ok & (credit > 0), (credit - model_value) / credit * 100.0, 0.0)
    return frame.with_columns(
        credit=pl.Series(credit),
        credit_natural=pl.Series(natural),
        width=pl.Series(width),
        credit_to_width=pl.Series(np.round(credit / width, 9)),
        max_loss_unit=pl.Series((width - credit) * mult),
        model_iv=pl.Series(np.where(np.isfinite(sigma), sigma, short_ivs)),
        model_value=pl.Series(np.where(model_ok, model_value, np.nan)),
        expected_return_pct=pl.Series(exp_ret),
        pop=pl.Series(pop),
        pop_source=pl.Series(np.where(model_ok, "model", "delta")),
    )


def _pop_model(
    has_p: np.ndarray,
    has_c: np.ndarray,
    F: np.ndarray,
    T: np.ndarray,
    sigma: np.ndarray,
    k_put: np.ndarray,
    k_call: np.ndarray,
    credit: np.ndarray,
) -> np.ndarray:
    """P(the underlying ends beyond the breakevens), lognormal around F with vol sigma."""
    sd = sigma * np.sqrt(T)
    with np.errstate(all="ignore"):

        def above(k: np.ndarray) -> np.ndarray:  # P(S_T > k)
            out: np.ndarray = ndtr((np.log(F / k) - 0.5 * sd * sd) / sd)
            return out

        pop: np.ndarray = np.where(has_p, above(k_put - credit), 1.0) - np.where(
            has_c, above(k_call + credit), 0.0
        )
    return pop


def model_at_credit(candidate: Candidate, credit: float) -> tuple[float, float]:
    """(POP, expected return %) of `candidate` had it been entered at `credit` per share.

    Same model as the candidate's own numbers (so a fill better or worse than mid moves the
    prediction by exactly what the price changed). Falls back to the candidate's numbers
    when it had no model (POP from deltas).
    """
    if candidate.pop_source != "model" or not math.isfinite(candidate.model_value):
        return candidate.pop, candidate.expected_return_pct
    k_put = next(
        (
            leg.contract.strike
            for leg in candidate.legs
            if leg.ratio < 0 and leg.contract.right is Right.PUT
        ),
        math.nan,
    )
    k_call = next(
        (
            leg.contract.strike
            for leg in candidate.legs
            if leg.ratio < 0 and leg.contract.right is Right.CALL
        ),
        math.nan,
    )
    one = np.ones(1)
    pop = _pop_model(
        np.array([math.isfinite(k_put or math.nan)]),
        np.array([math.isfinite(k_call or math.nan)]),
        one * candidate.forward,
        one * candidate.T,
        one * candidate.model_iv,
        one * (k_put or math.nan),
        one * (k_call or math.nan),
        one * credit,
    )
    p = float(np.clip(pop[0], 0.0, 1.0))
    ret = (credit - candidate.model_value) / credit * 100.0 if credit > 0 else 0.0
    return (p if math.isfinite(p) else candidate.pop), ret


def _fit(table: Mapping[str, Mapping[str, float]], structure: pl.Expr, key: pl.Expr) -> pl.Expr:
    """Look up table[structure][key], falling back to table[structure]["unknown"], then 0.5."""
    flat = {f"{s}|{k}": v for s, t in table.items() for k, v in t.items()}
    unknown = {s: t.get(UNKNOWN, 0.5) for s, t in table.items()}
    fallback = structure.replace_strict(unknown, default=0.5, return_dtype=pl.Float64)
    return (
        pl.concat_str(structure, pl.lit("|"), key)
        .replace_strict(flat, default=None, return_dtype=pl.Float64)
        .fill_null(fallback)
    )


def _lead_direction(
    sig: LeadingSignal | InsufficientData | None, now: datetime, max_age: timedelta
) -> tuple[str, str]:
    if sig is None:
        return UNKNOWN, "lead: no futures signal"
    if isinstance(sig, InsufficientData):
        return UNKNOWN, f"lead: {sig.message}"
    if not sig.is_fresh(now, max_age):
        return UNKNOWN, f"lead: signal of {sig.ts:%Y-%m-%d %H:%M} is stale"
    if sig.direction is None:
        return UNKNOWN, "lead: current futures data missing"
    return sig.direction, ""


def _score(
    frame: pl.DataFrame,
    settings: Settings,
    signals: EntrySignals,
    weights: Mapping[str, float],
    now: datetime,
) -> pl.DataFrame:
    st, an = settings.strategies, settings.analysis
    unds = frame["underlying"].unique().to_list()
    max_age = timedelta(minutes=st.lead_max_age_min)
    lead = {u: _lead_direction(signals.lead.get(u), now, max_age) for u in unds}
    ivr = {u: signals.iv_rank.get(u) for u in unds}
    ivr_clean = {
        u: (float(v) if v is not None and math.isfinite(v) else None) for u, v in ivr.items()
    }
    regime = {u: (signals.regimes.get(u) or UNKNOWN) for u in unds}
    w_type = {
        s: float(min(max(weights.get(s, 1.0), an.weight_min), an.weight_max)) for s in STRUCTURES
    }
    sw = st.score_weights
    total = sum(sw.values())
    und, typ = pl.col("underlying"), pl.col("strategy_type")
    frame = frame.with_columns(
        regime=und.replace_strict(regime, return_dtype=pl.String),
        lead_direction=und.replace_strict(
            {u: d for u, (d, _) in lead.items()}, return_dtype=pl.String
        ),
        lead_note=und.replace_strict({u: n for u, (_, n) in lead.items()}, return_dtype=pl.String),
        iv_rank=und.replace_strict(ivr_clean, return_dtype=pl.Float64),
        weight=typ.replace_strict(w_type, default=1.0, return_dtype=pl.Float64),
    )
    comps = {
        "credit_to_width": (pl.col("credit_to_width") / st.credit_to_width_full).clip(0.0, 1.0),
        "prob_profit": pl.col("pop"),
        "iv_rank": (pl.col("iv_rank") / 100.0).clip(0.0, 1.0).fill_null(0.5),
        "regime": _fit(st.regime_fit, typ, pl.col("regime")),
        "lead": _fit(st.lead_fit, typ, pl.col("lead_direction")),
    }
    frame = frame.with_columns(**{f"c_{k}": v.fill_nan(0.0) for k, v in comps.items()})
    raw = sum((pl.col(f"c_{k}") * (w / total) for k, w in sw.items()), pl.lit(0.0))
    frame = frame.with_columns(score_raw=raw).with_columns(
        score=pl.col("score_raw") * pl.col("weight")
    )
    status = (
        pl.when(~(pl.col("credit") > 0))
        .then(pl.format("no credit at mid ({})", pl.col("credit").round(2)))
        .when(pl.col("credit_to_width") < st.min_credit_to_width)
        .then(
            pl.format(
                "credit/width {} < min {}",
                pl.col("credit_to_width").round(3),
                pl.lit(st.min_credit_to_width),
            )
        )
        .when(pl.col("c_regime") <= 0)
        .then(pl.format("regime {} vetoes {}", pl.col("regime"), typ))
        .when(pl.col("score") < st.min_score)
        .then(pl.format("score {} < min {}", pl.col("score").round(3), pl.lit(st.min_score)))
        .otherwise(pl.lit(OK))
    )
    return frame.with_columns(status=status).sort(
        pl.col("status") != OK, pl.col("score"), descending=[False, True]
    )


def _leg(
    row: Mapping[str, Any],
    prefix: str,
    underlying: str,
    expiry: date,
    right: Right,
    ratio: int,
    multiplier: int,
) -> CandidateLeg:
    contract = Contract.option(underlying, expiry, row[f"{prefix}_strike"], right, multiplier)
    contract = contract.with_con_id(
        int(row[f"{prefix}_con_id"]),
        local_symbol=row.get(f"{prefix}_local_symbol") or "",
        trading_class=row.get(f"{prefix}_trading_class") or "",
    )
    return CandidateLeg(
        contract=contract,
        ratio=ratio,
        bid=float(row[f"{prefix}_bid"]),
        ask=float(row[f"{prefix}_ask"]),
        mid=float(row[f"{prefix}_mid"]),
        delta=float(row[f"{prefix}_delta_used"]),
        iv=float(row[f"{prefix}_iv_used"]),
    )


def _opt(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _candidate(row: Mapping[str, Any], now: datetime, quantity: int) -> Candidate:
    st = row["strategy_type"]
    und, exp, mult = row["underlying"], row["expiry"], int(row["multiplier"])
    legs: list[CandidateLeg] = []
    if st in (StrategyType.IRON_CONDOR, StrategyType.BULL_PUT_SPREAD):
        legs += [
            _leg(row, "put_long", und, exp, Right.PUT, 1, mult),
            _leg(row, "put_short", und, exp, Right.PUT, -1, mult),
        ]
    if st in (StrategyType.IRON_CONDOR, StrategyType.BEAR_CALL_SPREAD):
        legs += [
            _leg(row, "call_short", und, exp, Right.CALL, -1, mult),
            _leg(row, "call_long", und, exp, Right.CALL, 1, mult),
        ]
    opened_on = now.astimezone(UTC).date()  # the ledger's convention (Book.open_strategy)
    sid = strategy_id_for(
        StrategyType(st), und, [LegSpec(x.contract, x.ratio) for x in legs], opened_on
    )
    notes = [n for n in (row["skew_reason"], row["lead_note"]) if n]
    if row["iv_rank"] is None:
        notes.append("iv_rank: unknown, scored 0.5")
    if row["pop_source"] != "model":
        notes.append("POP from deltas (no ATM vol)")
    per_unit = float(row["max_loss_unit"])
    return Candidate(
        strategy_id=sid,
        strategy_type=st,
        underlying=und,
        expiry=exp,
        dte=int(row["dte"]),
        quantity=quantity,
        legs=tuple(legs),
        multiplier=mult,
        credit=float(row["credit"]),
        credit_natural=float(row["credit_natural"]),
        width=float(row["width"]),
        max_loss=per_unit * quantity,
        buying_power=per_unit * quantity,
        pop=float(row["pop"]),
        pop_source=row["pop_source"],
        expected_return_pct=float(row["expected_return_pct"]),
        model_value=float(row["model_value"]) if row["model_value"] is not None else math.nan,
        model_iv=float(row["model_iv"]) if row["model_iv"] is not None else math.nan,
        forward=float(row["forward"]),
        T=float(row["T"]),
        score=float(row["score"]),
        score_raw=float(row["score_raw"]),
        weight=float(row["weight"]),
        components={
            k: float(row[f"c_{k}"])
            for k in ("credit_to_width", "prob_profit", "iv_rank", "regime", "lead")
        },
        iv_rank=_opt(row["iv_rank"]),
        regime=row["regime"],
        lead_direction=row["lead_direction"],
        skew_norm=_opt(row["skew_norm"]),
        put_call_ratio=_opt(row["put_call_ratio"]),
        rr25=_opt(row["rr25"]),
        atm_iv=_opt(row["atm_iv"]),
        lean=float(row["lean"] or 0.0),
        put_target_delta=_opt(row.get("put_target_delta")),
        call_target_delta=_opt(row.get("call_target_delta")),
        skew_source=row["skew_source"],
        skew_reason=row["skew_reason"],
        notes=tuple(notes),
    )


__all__ = [
    "STRUCTURES",
    "Candidate",
    "CandidateLeg",
    "CandidateSet",
    "EntrySignals",
    "build_candidates",
    "model_at_credit",
]
