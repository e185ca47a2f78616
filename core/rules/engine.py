"""Evaluate every exit rule for every strategy in one vectorised pass.

`evaluate` is pure: snapshot + settings + prior state in, one decision row per strategy out
(the exact `decisions` table schema, inputs included, so the audit row *is* the output).
`RulesEngine.run` wraps it with the durable parts: load `rule_state`, evaluate, then one
commit to `decisions` and one to `rule_state` (never one per strategy).

How one strategy is decided (see `definitions.py` for the rules and their Kleene logic):
1. `external` strategies are never actioned: HOLD, reason "external, untagged".
2. Each rule is, per strategy, one of
   - fired: its condition is True on the inputs present (polars' Kleene logic: a crash of
     -5% fires the catastrophe rule even when IV is missing, since `True | null` is True);
   - clear: it does not apply to the strategy type, or its condition is False AND every
     input it reads (`Rule.inputs`) is present;
   - undecidable: anything else (an input is null/NaN and the rest do not prove it fires).
   A NaN gamma at 40 DTE is therefore undecidable, not clear, although the gamma rule could
   not fire at that DTE: a missing input never silently means HOLD.
3. Walk the enabled rules in priority order; the first that is not clear decides:
   - fired: that rule's action, urgency and reason (with the numbers that fired it);
   - undecidable: what it could have done decides (see "Missing data" in `definitions.py`).
     If it can only CLOSE, the walk goes on: a lower rule that fires CLOSE decides, at the
     most urgent of the passed rules' urgencies. If the time exit fires, it decides. Else
     NO_DATA, naming every missing input and the first undecided rule: a lower rule that
     fires REDUCE or ROLL does not override it (the undecided rule might have closed).
   The walk runs on two bit sets per strategy (rules fired, rules undecided): the lowest set
   bit is the highest-priority rule, so each step is an integer operation, not a chain.
4. Every enabled rule clear: HOLD.
Disabled rules are skipped, but still evaluated so the output can say which of them would
have fired (`suppressed_rules`, and a note in the reason); `disabled_rules` lists them all.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import polars as pl
import polars.selectors as cs
from polars.exceptions import PanicException

from core.config import RuleSettings
from core.domain.regimes import Regime
from core.domain.strategies import StrategyType
from core.domain.timezones import MARKET_TZ, UTC_US
from core.rules.definitions import INPUT_COLUMNS, RULES, TIME_EXIT, Rule, check_disabled
from core.rules.inputs import SNAPSHOT_SCHEMA, normalize_snapshot, snapshot_exprs
from core.rules.state import (
    empty_state,
    entries_update,
    load_state,
    next_state,
    normalize_state,
)
from core.rules.targets import check_targets, profit_target
from core.rules.vocab import KNOWN_REGIMES, ExitAction, Urgency
from core.store import REGISTRY, DeltaStore, WriteResult

log = logging.getLogger(f"v6.{__name__}")
c = pl.col

DECISIONS = "decisions"
STATE = "rule_state"
DECISION_SCHEMA = REGISTRY[DECISIONS].schema
_EXTERNAL = StrategyType.EXTERNAL.value


def check_settings(settings: RuleSettings) -> tuple[str, ...]:
    """Fail fast on settings the engine cannot honour; returns the disabled rule names."""
    check_targets(settings)
    return check_disabled(settings)


def evaluation_id_for(now: datetime) -> str:
    return "rules-" + _utc(now).strftime("%Y%m%dT%H%M%S.%fZ")


def evaluate(
    snapshot: pl.DataFrame,
    settings: RuleSettings,
    state: pl.DataFrame | None,
    now: datetime,
    *,
    evaluation_id: str | None = None,
) -> pl.DataFrame:
    """Decide every strategy in `snapshot`; returns rows in the `decisions` table schema.

    `state` is the prior `rule_state` (None = nothing remembered). The returned rows carry
    the post-decision memory (`peak_profit_pct`, effective `entry_iv`/`entry_vix`,
    `reduced`), from which `state.next_state` derives what to persist.
    """
    now = _utc(now)
    plan = _plan(settings.model_dump_json())
    normalize = snapshot_exprs(snapshot, check_vocabulary=False)  # vocabulary: main query
    raw = snapshot.select(name for name in snapshot.columns if name in SNAPSHOT_SCHEMA)
    mem = normalize_state(state).select(
        "strategy_id",
        c("peak_profit_pct").alias("_st_peak"),
        c("entry_iv").alias("_st_entry_iv"),
        c("entry_vix").alias("_st_entry_vix"),
        c("reduced").alias("_st_reduced"),
    )
    # The join runs eagerly (measured ~2x cheaper than inside the streaming query); the
    # normalization and the rules then run as one lazy query over the joined frame.
    joined = raw.join(mem, on="strategy_id", how="left", maintain_order="left")
    lf = joined.lazy().with_columns(*normalize, _market_seconds(now))
    for stage in plan.stages:
        if stage:
            lf = lf.with_columns(stage)
    # One contiguous chunk per column: polars 2.1 panics ("assertion failed: i < self.len()")
    # formatting reason text over a filtered frame whose columns are chunked differently,
    # which the snapshot's own layout and the streaming engine's morsels can both produce.
    frame = _collect_main(lf.drop(cs.starts_with("_f_", "_fd_", "_applies_"))).rechunk()
    check_vocabulary(frame)
    out = frame.with_columns(
        _reasons(frame, plan).alias("reason"),
        (c("reduced") | (c("action") == ExitAction.REDUCE.value)).alias("reduced"),
        pl.lit(evaluation_id or evaluation_id_for(now)).alias("evaluation_id"),
        pl.lit(now).cast(UTC_US).alias("evaluated_at"),
        pl.lit(now.date()).alias("date"),
        pl.lit(plan.disabled_text, dtype=pl.String).alias("disabled_rules"),
    )
    return out.select(DECISION_SCHEMA.names())


def _market_seconds(now: datetime) -> pl.Expr:
    """The evaluation time as seconds since midnight New York (the pin-risk rule's clock)."""
    t = now.astimezone(MARKET_TZ)
    return pl.lit(t.hour * 3600 + t.minute * 60 + t.second, dtype=pl.Int64).alias("market_seconds")


def _collect_main(lf: pl.LazyFrame) -> pl.DataFrame:
    """Run the main query: the joined snapshot to decisions in one query.

    The streaming engine runs it in one pipelined pass, measured faster here than eager
    steps or the in-memory engine. polars 2.1's streaming engine was seen to panic on
    `str.format` inside when/then over a filtered frame (the reason texts, which therefore
    run in-memory); this query uses no string functions, but should a panic ever surface the
    same query is re-run on the in-memory engine rather than failing the cycle.
    """
    try:
        return lf.collect()
    except PanicException:
        log.warning("polars streaming engine panicked on the rules query; re-running in-memory")
        return lf.collect(engine="in-memory")


# -- the compiled plan --------------------------------------------------------------------------

_TYPE_CODES = {t.value: i for i, t in enumerate(StrategyType)}
_REGIMES = frozenset({*KNOWN_REGIMES, Regime.UNKNOWN.value})
_G_EXTERNAL, _G_NO_DATA, _G_HOLD = -3, -2, -1  # reason groups; >= 0 = index of the fired rule


@dataclass(frozen=True)
class _Plan:
    """Every expression one evaluation needs, built once per settings (building ~400 polars
    expressions costs more Python time than running them on a small book)."""

    disabled: tuple[str, ...]
    disabled_text: str | None
    stages: tuple[tuple[pl.Expr, ...], ...]  # with_columns stages after the state join
    reasons: dict[int, pl.Expr]  # reason group -> text expression (aliased "r")
    reason_columns: tuple[str, ...]  # what those expressions read


@functools.lru_cache(maxsize=16)
def _plan(settings_json: str) -> _Plan:
    s = RuleSettings.model_validate_json(settings_json)
    disabled = check_settings(s)
    enabled = [r for r in RULES if r.name not in disabled]
    off = [r for r in RULES if r.name in disabled]
    masks = {ts: f"_applies_{i}" for i, ts in enumerate(dict.fromkeys(r.applies_to for r in RULES))}
    derived, changes = _derive_stages(s)
    stages = (
        (*derived, _type_code().alias("_type")),
        (
            *changes,
            (c("_type") == _TYPE_CODES[_EXTERNAL]).alias("_ext"),
            *[
                _code_in(c("_type"), {_TYPE_CODES[t] for t in ts}).alias(n)
                for ts, n in masks.items()
            ],
        ),
        # disabled rules: three-valued (to report what they would do); enabled: fired or not
        (
            *[_fires(r, s, c(masks[r.applies_to])).alias(f"_f_{r.name}") for r in off],
            *[
                _fired(r, s, c(masks[r.applies_to])).alias(f"_fd_{i}")
                for i, r in enumerate(enabled)
            ],
        ),
        (
            _bits([c(f"_fd_{i}") for i in range(len(enabled))]).alias("_fired_bits"),
            _bits(
                [
                    c(masks[r.applies_to]) & ~c(f"_fd_{i}") & _missing(r)
                    for i, r in enumerate(enabled)
                ]
            ).alias("_undecided_bits"),
            _bits(_missing_flags(enabled, masks)).alias("_missing_bits"),
            _bits(_suppressed_flags(off)).alias("_suppressed_bits"),
        ),
        *_walk_stages(enabled, s),
        (
            _lookup([r.name for r in enabled], pl.String).alias("rule"),
            _lookup([r.priority for r in enabled], pl.Float64).alias("priority"),
            _action(enabled, s).alias("action"),
            _urgency(enabled, s).alias("urgency"),
            pl.when(c("_ext"))
            .then(_G_EXTERNAL)
            .when(c("_nodata"))
            .then(_G_NO_DATA)
            .otherwise(c("_k").fill_null(_G_HOLD))
            .alias("_group"),
            _names(c("_missing_bits"), INPUT_COLUMNS).alias("missing_inputs"),
            _names(c("_suppressed_bits"), tuple(r.name for r in off)).alias("suppressed_rules"),
            pl.lit(pl.Series([r.name for r in enabled], dtype=pl.String))
            .gather(pl.when(c("_despite") > 0).then(c("_first_undecided")))
            .alias("_undecided_rule"),
            pl.lit(pl.Series(["no rule fired", "external, untagged"]))
            .gather(c("_ext").cast(pl.UInt8))
            .alias("_base_reason"),
        ),
    )
    nodata = pl.format(
        "missing inputs: {}; cannot decide rule {} (or any below it)",
        c("missing_inputs").fill_null("?"),
        c("rule"),
    )
    reasons = {_G_NO_DATA: nodata} | {i: r.reason(s) for i, r in enumerate(enabled)}
    reasons = {g: e.cast(pl.String).alias("r") for g, e in reasons.items()}
    columns = {name for e in reasons.values() for name in e.meta.root_names()}
    return _Plan(
        disabled=disabled,
        disabled_text=", ".join(disabled) or None,
        stages=stages,
        reasons=reasons,
        reason_columns=tuple(sorted(columns)),
    )


def _code_in(code: pl.Expr, codes: set[int]) -> pl.Expr:
    """Membership in a set of small codes; a range test when they are contiguous (cheaper)."""
    lo, hi = min(codes), max(codes)
    if len(codes) == hi - lo + 1:
        return code.is_between(lo, hi)
    return code.is_in(sorted(codes))


def _derive_stages(
    settings: RuleSettings,
) -> tuple[tuple[pl.Expr, ...], tuple[pl.Expr, ...]]:
    """The derived columns the rules read, after the state join (`_st_*` columns).

    Derived percentages are rounded to 1e-9 so a threshold behaves as a human reads it
    (0.375 / 0.25 is exactly +50%, not 49.999999999999993).
    """

    def positive(expr: pl.Expr) -> pl.Expr:  # a non-positive IV/VIX is not a measurement
        return pl.when(expr > 0).then(expr)

    return (
        (
            positive(c("iv")).alias("iv"),
            positive(c("vix")).alias("vix"),
            pl.coalesce(positive(c("_st_entry_iv")), positive(c("entry_iv"))).alias("entry_iv"),
            pl.coalesce(positive(c("_st_entry_vix")), positive(c("entry_vix"))).alias("entry_vix"),
            pl.max_horizontal("_st_peak", "profit_pct").alias("peak_profit_pct"),
            c("_st_reduced").fill_null(False).alias("reduced"),
            _regime_code().alias("_regime"),
        ),
        (
            ((c("iv") / c("entry_iv") - 1.0) * 100.0).round(9).alias("iv_change_pct"),
            (c("vix") - c("entry_vix")).round(9).alias("vix_change"),
            # = targets.profit_target_expr, via the regime code (one string pass, not two)
            pl.lit(_target_table(settings))
            .gather(c("_regime"))
            .fill_null(settings.profit_target_fallback_pct)
            .alias("profit_target_pct"),
            (c("regime").is_null() | c("_regime").is_not_null()).alias("_regime_ok"),
        ),
    )


_REGIME_CODES = {name: i for i, name in enumerate(sorted(_REGIMES))}


def _regime_code() -> pl.Expr:
    """regime as a small int; null for null and for a word that is not a regime."""
    chain: Any = pl
    for name, code in _REGIME_CODES.items():
        chain = chain.when(c("regime") == name).then(pl.lit(code, dtype=pl.Int8))
    return chain.otherwise(pl.lit(None, dtype=pl.Int8))


def _target_table(settings: RuleSettings) -> pl.Series:
    return pl.Series([profit_target(name, settings) for name in _REGIME_CODES], dtype=pl.Float64)


def _fired_col(name: str) -> pl.Expr:
    return c(f"_f_{name}")


def _fires(rule: Rule, settings: RuleSettings, applies: pl.Expr) -> pl.Expr:
    """True: fired; False: clear (does not apply, or False with every input present);
    null: undecidable (an input is missing and the inputs present do not prove it fires)."""
    return (
        pl.when(~applies)
        .then(False)
        .when(rule.condition(settings))
        .then(True)
        .when(_missing(rule))
        .then(None)
        .otherwise(False)
    )


def _fired(rule: Rule, settings: RuleSettings, applies: pl.Expr) -> pl.Expr:
    """True when the rule fired (its condition is True on the inputs present); else False."""
    return (applies & rule.condition(settings)).fill_null(False)


def _close_only(rule: Rule) -> bool:
    """Every decision the rule can make is CLOSE (no variant turns it into REDUCE or ROLL)."""
    return rule.action is ExitAction.CLOSE and all(
        v.action in (None, ExitAction.CLOSE) for v in rule.variants
    )


def _most_urgent(rule: Rule) -> int:
    """The most urgent urgency (lowest code) the rule can decide with, variants included."""
    found = [rule.urgency, *(v.urgency for v in rule.variants if v.urgency is not None)]
    return min(_URGENCIES.index(u.value) for u in found)


def _first(bits: pl.Expr) -> pl.Expr:
    """Index of the lowest set bit: the highest-priority rule in the set; 64 for none."""
    return bits.bitwise_trailing_zeros().cast(pl.Int32)


def _walk_stages(enabled: Sequence[Rule], s: RuleSettings) -> tuple[tuple[pl.Expr, ...], ...]:
    """The priority walk over the fired and undecided bit sets (see the module docstring).

    Columns: `_k` the deciding rule (for NO_DATA the first undecided one; null for HOLD),
    `_nodata`, `_despite` (0; 1 every outcome closes: the first fired rule decides, at the
    most urgent urgency of the undecided rules it passed, `_passed_urgency`; 2 the time
    exit fires and decides) and `_first_undecided`.
    """
    n = len(enabled)
    open_mask = sum(1 << i for i, r in enumerate(enabled) if not _close_only(r))
    te = next((i for i, r in enumerate(enabled) if r.name == TIME_EXIT), None)
    time_fires = pl.lit(False) if te is None else (c("_fired_bits") & (1 << te)) != 0
    fired, undecided = c("_first_fired"), c("_first_undecided")
    close = _ACTIONS.index(ExitAction.CLOSE.value)
    below = pl.lit(pl.Series([(1 << i) - 1 for i in range(n + 1)], dtype=pl.Int64))
    passed = c("_undecided_bits") & below.gather(pl.when(c("_despite") == 1).then(fired))
    passed_urgency: Any = pl
    for code in range(len(_URGENCIES)):
        mask = sum(1 << i for i, r in enumerate(enabled) if _most_urgent(r) == code)
        passed_urgency = passed_urgency.when((passed & mask) != 0).then(pl.lit(code, pl.Int8))
    k: Any = pl.when(c("_nodata")).then(undecided)
    if te is not None:
        k = k.when(c("_despite") == 2).then(te)
    return (
        (
            _first(c("_fired_bits")).alias("_first_fired"),
            _first(c("_undecided_bits")).alias("_first_undecided"),
            _first(c("_undecided_bits") & open_mask).alias("_first_open"),
        ),
        (
            (undecided < fired).alias("_blocked"),
            _coded(enabled, s, "action", _ACTIONS, pl.when(fired < n).then(fired)).alias(
                "_fired_action"
            ),
        ),
        (
            pl.when(~c("_blocked"))
            .then(0)
            .when((fired < c("_first_open")) & (c("_fired_action") == close))
            .then(1)
            .when(time_fires)
            .then(2)
            .otherwise(0)
            .cast(pl.Int8)
            .alias("_despite"),
        ),
        ((c("_blocked") & (c("_despite") == 0)).alias("_nodata"),),
        (
            k.when(fired < n).then(fired).otherwise(None).cast(pl.Int32).alias("_k"),
            passed_urgency.otherwise(None).alias("_passed_urgency"),
        ),
    )


def _missing(rule: Rule) -> pl.Expr:
    return pl.any_horizontal([c(name).is_null() for name in rule.inputs])


def _missing_flags(enabled: Sequence[Rule], masks: dict[frozenset[str], str]) -> list[pl.Expr]:
    """Per input (in INPUT_COLUMNS order): null, and needed by an enabled applicable rule."""
    flags: list[pl.Expr] = []
    for name in INPUT_COLUMNS:
        users = {masks[r.applies_to] for r in enabled if name in r.inputs}
        needed = pl.any_horizontal(sorted(users)) if users else pl.lit(False)
        flags.append(needed & c(name).is_null())
    return flags


def _suppressed_flags(off: Sequence[Rule]) -> list[pl.Expr]:
    """Per disabled rule: its condition is True for a strategy rules may act on."""
    return [~c("_ext") & _fired_col(r.name).fill_null(False) for r in off]


def _bits(flags: Sequence[pl.Expr]) -> pl.Expr:
    """Boolean flags packed into one Int64 (bit j = flag j): cheap to carry and to name."""
    if not flags:
        return pl.lit(0, dtype=pl.Int64)
    return pl.sum_horizontal([f.cast(pl.Int64) * (1 << j) for j, f in enumerate(flags)]).cast(
        pl.Int64
    )


def _names(bits: pl.Expr, names: tuple[str, ...]) -> pl.Expr:
    """Comma-joined names of the set bits (null for none): one gather from a table of every
    combination (2^len(names) entries, cached)."""
    if not names:
        return pl.lit(None, dtype=pl.String)
    return pl.lit(_name_table(names)).gather(bits)


@functools.lru_cache(maxsize=64)
def _name_table(names: tuple[str, ...]) -> pl.Series:
    return pl.Series(
        [
            ", ".join(n for j, n in enumerate(names) if m >> j & 1) or None
            for m in range(1 << len(names))
        ],
        dtype=pl.String,
    )


def _type_code() -> pl.Expr:
    """strategy_type as a small int (null = not a known type): one string pass, then every
    applies-to mask is an integer test."""
    chain: Any = pl
    for name, code in _TYPE_CODES.items():
        chain = chain.when(c("strategy_type") == name).then(pl.lit(code, dtype=pl.Int8))
    return chain.otherwise(pl.lit(None, dtype=pl.Int8))


def check_vocabulary(frame: pl.DataFrame) -> None:
    """Unknown strategy types or regimes are programming errors: name them (rare path)."""
    types_ok = frame["_type"].null_count() == 0
    regimes_ok = frame["_regime_ok"].all()
    if types_ok and regimes_ok:
        return
    problems: list[str] = []
    if not types_ok:
        bad = frame.filter(c("_type").is_null())["strategy_type"].unique().head(5).to_list()
        problems.append(f"strategy_type values {bad} are not one of {list(_TYPE_CODES)}")
    if not regimes_ok:
        bad = frame.filter(~c("_regime_ok"))["regime"].unique().head(5).to_list()
        problems.append(f"regime values {bad} are not one of {sorted(_REGIMES)} (or null)")
    raise ValueError("strategy snapshot: " + "; ".join(problems))


def _lookup(values: Sequence[Any], dtype: pl.DataType | type[pl.DataType]) -> pl.Expr:
    """Per-rule value of the deciding (or, for NO_DATA, blocked) rule; null for HOLD/external."""
    if not values:
        return pl.lit(None, dtype=dtype)
    table = pl.Series(values, dtype=dtype)
    return pl.when(~c("_ext")).then(pl.lit(table).gather(c("_k")))


_ACTIONS = [a.value for a in ExitAction]
_URGENCIES = [u.value for u in Urgency]


def _with_variants(
    base: pl.Expr,
    enabled: Sequence[Rule],
    s: RuleSettings,
    attr: str,
    codes: list[str],
    key: pl.Expr,
) -> pl.Expr:
    """Apply the rules' declared variants (e.g. take profit below target -> REDUCE), on
    integer codes (index into `codes`): int selects are much cheaper than string ones."""
    out = base
    for i, rule in enumerate(enabled):
        for v in rule.variants:
            value = getattr(v, attr)
            if value is not None:
                hit = (key == i) & v.when(s)
                code = pl.lit(codes.index(value.value), dtype=pl.Int8)
                out = pl.when(hit).then(code).otherwise(out)
    return out


def _coded(
    enabled: Sequence[Rule], s: RuleSettings, attr: str, codes: list[str], key: pl.Expr
) -> pl.Expr:
    """Rule `key`'s action/urgency code (null for no rule/external), variants applied."""
    if not enabled:
        return pl.lit(None, dtype=pl.Int8)
    table = pl.Series([codes.index(getattr(r, attr).value) for r in enabled], dtype=pl.Int8)
    base = pl.when(~c("_ext")).then(pl.lit(table).gather(key))
    return _with_variants(base, enabled, s, attr, codes, key)


def _action(enabled: Sequence[Rule], s: RuleSettings) -> pl.Expr:
    code = (
        pl.when(c("_nodata"))
        .then(pl.lit(_ACTIONS.index(ExitAction.NO_DATA.value), dtype=pl.Int8))
        .otherwise(_coded(enabled, s, "action", _ACTIONS, c("_k")))
        .fill_null(_ACTIONS.index(ExitAction.HOLD.value))
    )
    return pl.lit(pl.Series(_ACTIONS, dtype=pl.String)).gather(code)


def _urgency(enabled: Sequence[Rule], s: RuleSettings) -> pl.Expr:
    # closing despite an undecided rule: the most urgent of the outcomes it might have had
    own = _coded(enabled, s, "urgency", _URGENCIES, c("_k"))
    code = pl.when(~c("_nodata")).then(pl.min_horizontal(own, c("_passed_urgency")))
    return pl.lit(pl.Series(_URGENCIES, dtype=pl.String)).gather(code)


def _reasons(frame: pl.DataFrame, plan: _Plan) -> pl.Series:
    """Reason text, formatted only on the rows each rule decided.

    A when/then chain would format every rule's text for every row (12x the work, and
    float-to-text is the costliest thing the engine does). Instead HOLD and external rows
    get a constant; the decided rows are taken out once (only the columns reasons read),
    formatted per deciding rule (the groups in parallel), and scattered back.
    """
    base = frame["_base_reason"]
    sub = (
        frame.select(
            pl.int_range(pl.len(), dtype=pl.UInt32).alias("_row"), "_group", *plan.reason_columns
        )
        .filter((c("_group") >= 0) | (c("_group") == _G_NO_DATA))
        .lazy()
    )
    groups = [g for g in frame["_group"].unique().to_list() if g in plan.reasons]
    reason = base
    if groups:
        pieces = [sub.filter(c("_group") == g).select("_row", plan.reasons[g]) for g in groups]
        # in-memory: polars 2.1's streaming engine can panic on str.format in when/then here
        texts = pl.concat(pieces).collect(engine="in-memory")
        reason = base.scatter(texts["_row"], texts["r"])
    despite = frame["_despite"]
    if (despite > 0).any():
        why = pl.lit(pl.Series(["", "every outcome it could have closes", "the time exit applies"]))
        reason = pl.select(
            pl.when(despite > 0)
            .then(
                pl.format(
                    "{}; closed although missing {} left rule {} undecided: {}",
                    reason,
                    frame["missing_inputs"],
                    frame["_undecided_rule"],
                    why.gather(despite),
                )
            )
            .otherwise(reason)
        ).to_series()
    suppressed = frame["suppressed_rules"]
    if suppressed.null_count() == suppressed.len():
        return reason
    return pl.select(
        pl.when(suppressed.is_not_null())
        .then(pl.format("{}; disabled rule(s) would have fired: {}", reason, suppressed))
        .otherwise(reason)
    ).to_series()


# -- durable engine ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RulesRun:
    """The outcome of one evaluation: decisions (as written) and what was committed."""

    evaluation_id: str
    decisions: pl.DataFrame
    counts: dict[str, int]  # per action, every action present (0 when none)
    disabled: tuple[str, ...]
    decisions_write: WriteResult
    state_write: WriteResult
    state_rows: int = 0

    @property
    def no_data(self) -> int:
        return self.counts.get(ExitAction.NO_DATA.value, 0)

    def actionable(self) -> pl.DataFrame:
        """Decisions that ask for an order (CLOSE, REDUCE, ROLL), most urgent first."""
        order = {"immediate": 0, "high": 1, "normal": 2}
        acts = [ExitAction.CLOSE.value, ExitAction.REDUCE.value, ExitAction.ROLL.value]
        return self.decisions.filter(c("action").is_in(acts)).sort(
            c("urgency").replace_strict(order, default=3, return_dtype=pl.Int8),
            "priority",
            "strategy_id",
        )


class RulesEngine:
    """The rules over a `DeltaStore`: state loaded from and persisted to Delta every run, so
    a restarted process carries on with the same trailing peaks and entry values."""

    def __init__(self, store: DeltaStore, settings: RuleSettings) -> None:
        self.store = store
        self.settings = settings
        self.disabled = check_settings(settings)

    def load_state(self, strategy_ids: Sequence[str] | None = None) -> pl.DataFrame:
        return load_state(self.store, strategy_ids)

    def run(
        self, snapshot: pl.DataFrame, now: datetime, *, evaluation_id: str | None = None
    ) -> RulesRun:
        """Load state, evaluate, then commit decisions (insert-only on (strategy_id,
        evaluated_at): a replay of the same evaluation adds nothing) and then the state.

        Decisions are written first so that a crash between the two commits never loses
        the record of a decision; the state write is an idempotent upsert.
        """
        now = _utc(now)
        snap = normalize_snapshot(snapshot)
        prior = self.load_state(snap["strategy_id"].to_list()) if snap.height else empty_state()
        eval_id = evaluation_id or evaluation_id_for(now)
        decisions = evaluate(snap, self.settings, prior, now, evaluation_id=eval_id)
        dec_write = self.store.merge(DECISIONS, decisions, update=False)
        updates = next_state(decisions, prior, now)
        state_write = self.store.merge(STATE, updates)
        counts = _counts(decisions)
        run = RulesRun(
            evaluation_id=eval_id,
            decisions=decisions,
            counts=counts,
            disabled=self.disabled,
            decisions_write=dec_write,
            state_write=state_write,
            state_rows=updates.height,
        )
        log.info(
            "rules %s: %d strategies, %s%s",
            eval_id,
            decisions.height,
            ", ".join(f"{k}={v}" for k, v in counts.items() if v),
            f"; disabled: {', '.join(self.disabled)}" if self.disabled else "",
        )
        if run.no_data:
            log.warning(
                "rules %s: %d strateg(ies) NO_DATA (missing inputs), not held silently",
                eval_id,
                run.no_data,
            )
        return run

    def record_entries(self, entries: pl.DataFrame, now: datetime) -> WriteResult:
        """Store entry IV/VIX for strategies (strategy_id, entry_iv, entry_vix); write-once."""
        prior = self.load_state(entries["strategy_id"].cast(pl.String).to_list())
        return self.store.merge(STATE, entries_update(entries, prior, _utc(now)))

    def clear_reduced(self, strategy_ids: Sequence[str], now: datetime) -> WriteResult:
        """Re-arm the partial take-profit (e.g. the REDUCE order did not fill)."""
        prior = self.load_state(strategy_ids).filter(c("reduced"))
        rows = prior.with_columns(
            pl.lit(False).alias("reduced"), pl.lit(_utc(now)).cast(UTC_US).alias("updated_at")
        )
        return self.store.merge(STATE, rows)


def _counts(decisions: pl.DataFrame) -> dict[str, int]:
    got = dict(decisions.group_by("action").len().iter_rows())
    return {a.value: int(got.get(a.value, 0)) for a in ExitAction}


def _utc(ts: datetime) -> datetime:
    if ts.tzinfo is None:
        raise ValueError(f"now={ts!r} is naive; pass a tz-aware datetime (e.g. datetime.now(UTC))")
    return ts.astimezone(UTC)
