"""The 15 exit rules as data: name, priority, which strategies, inputs, condition, action.

Each condition is a polars expression over the engine's evaluation frame (see `engine.py`
for the derived columns: `iv_change_pct`, `vix_change`, `peak_profit_pct`,
`profit_target_pct`, `reduced`, and `market_seconds`, the evaluation time as seconds since
midnight New York). Conditions use polars' three-valued (Kleene) logic: a
comparison with a null input is null and `True | null` is True, so a rule fires when the
inputs it has already prove it (VIX 40 fires the VIX exit even if entry VIX is unknown).
A rule is clear only when its condition is False and every column in `inputs` is present;
otherwise it is undecidable, which the engine turns into NO_DATA, never HOLD.
`inputs` must name every snapshot/state column the condition reads (derived columns are
null only when one of these is).

Thresholds follow the plan's comparison signs exactly ("falls > 3%" is strict, "profit >=
80%" is not, "profit <= trailing stop" closes at equality); engine and reference alike:
0.5  delivered_stock  stock_shares != 0 (assignment/exercise delivered it)    CLOSE immediate
0.7  pin_risk         short leg expiring today: distance <= pin%  AND         CLOSE immediate
                      market time >= pin_risk_from
0.8  early_assignment short ITM call: extrinsic - dividend < 0 AND days to    CLOSE high
                      ex-date <= window;  OR short ITM put: extrinsic < floor
                      AND dte <= put_assignment_dte
1    catastrophe      move_1h < -drop  OR  iv_change > jump                  CLOSE immediate
1.3  single_leg_exit  single:     profit >= x OR profit <= -y OR dte <= d   CLOSE normal
1.4  trailing_stop    peak >= activation AND profit <= ratio * peak          CLOSE normal
1.5  vix_exit         vix > level  OR  vix - entry_vix > rise                 CLOSE high
2    take_profit      profit >= regime target -> CLOSE;                       normal
                      profit >= partial AND not yet reduced -> REDUCE (half)
3    stop_loss        profit <= -stop  OR (dte < d AND profit <= -near)       CLOSE immediate
4    delta_risk       abs(delta) > 0.30 iron condor / 0.40 vertical           CLOSE high
5    iv_crush         iv_change < -crush AND profit > min                     CLOSE normal
5.5  iv_percentile    iv_percentile < floor AND profit > min                  CLOSE normal
6    dte_roll         time_exit_dte < dte <= window: ROLL; high when <= must  ROLL
7    gamma_risk       abs(gamma) > limit AND dte < max                        CLOSE high
8    time_exit        dte <= time_exit_dte                                    CLOSE immediate

Missing data never keeps a position open past the time exit. An undecided rule stands for
every outcome it could have had: when all of them are CLOSE, the position closes. So the
walk in priority order passes an undecided rule whose every decision is CLOSE (all but take
profit, which may REDUCE, and the roll); the first rule that then fires CLOSE decides, at
the most urgent urgency among it and the undecided rules passed. And when the time exit
fires (it needs only DTE), anything undecided closes through it. Otherwise an undecided
rule is NO_DATA, which may therefore only ever hold a position that has time. The audit row
names the missing inputs and the undecided rule either way.

Precedence notes. The roll window stops above `time_exit_dte`, so on the last day the
time exit (8) closes instead of trying to roll (you cannot roll an expiring position). A
single leg is closed by 1.3 at <= 21 DTE and never rolled (rolls are for the multi-leg
spreads V6 opens). Because every multi-leg strategy in the roll window is rolled by rule 6,
the gamma rule (7) acts only when `dte_roll` is disabled, or at DTE <= `time_exit_dte`
where rolls stop: there, as the table orders them, it outranks the time exit (CLOSE high
rather than immediate). Delta risk applies to iron condors and verticals only (no limit is
defined for a single leg).

Delivered stock (0.5) outranks everything: a strategy that holds stock an assignment or
exercise put into it is no longer the position its rules were written for (a half-assigned
spread is stock plus the leg that hedged it). It closes whole, the stock first as its own
order, then the remaining option legs as one combo (`ComboExecutor.execute_exit`). Disable
the rule (`rules.disabled = ["delivered_stock"]`) to keep delivered stock: exits then close
the option legs only.

Pin risk (0.7) and early assignment (0.8) close what an assignment would otherwise turn into
stock. On expiry day a short strike near the underlying may or may not be exercised after
the close (exercise by exception, late news, the holder's own choice), so the position is
closed from `pin_risk_from` (before the 15:30 ET cut-off V6 keeps for itself) rather than
left to guesswork. Early assignment is rational for the holder of an ITM call whose
extrinsic value is worth less than the dividend it would collect by exercising on the eve
of the ex-date, and of a deep ITM put whose extrinsic value is nearly gone. Both outrank
everything but delivered stock: a take profit that REDUCEs half, or a roll, would leave the
exposed leg in place. Each reads only its own exposure columns (+inf = nothing exposed, see
`inputs.py`) and DTE, so a strategy with nothing exposed never waits on them.

A rule has one action and urgency; row-dependent exceptions are declared as `Variant`s
(take profit below the target -> REDUCE; roll at or below the must-roll DTE -> high).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import time

import polars as pl

from core.config import RuleSettings
from core.domain.strategies import StrategyType
from core.rules.vocab import MANAGED, MULTI_LEG, ExitAction, Urgency

c = pl.col
TIME_EXIT = "time_exit"  # the rule missing data never overrides (see "Missing data" above)
ExprFn = Callable[[RuleSettings], pl.Expr]


@dataclass(frozen=True)
class Variant:
    """When the rule decided and `when` holds, this action and/or urgency replace the rule's."""

    when: ExprFn
    action: ExitAction | None = None
    urgency: Urgency | None = None


@dataclass(frozen=True)
class Rule:
    name: str
    priority: float
    summary: str
    applies_to: frozenset[str]
    inputs: tuple[str, ...]  # snapshot/state columns the condition reads; null -> undecidable
    condition: ExprFn
    action: ExitAction
    urgency: Urgency
    reason: ExprFn
    variants: tuple[Variant, ...] = ()


def num(expr: pl.Expr, digits: int = 2) -> pl.Expr:
    """A number for reason text: rounded, "n/a" when missing (pl.format nulls on any null)."""
    return expr.round(digits).cast(pl.String).fill_null("n/a")


def num_int(expr: pl.Expr) -> pl.Expr:
    return expr.cast(pl.String).fill_null("n/a")


_profit = c("profit_pct")
_dte = c("dte")


def _trail_floor(s: RuleSettings) -> pl.Expr:
    return (c("peak_profit_pct") * s.trailing_giveback_ratio).round(9)


def _seconds(t: time) -> int:
    return t.hour * 3600 + t.minute * 60 + t.second


def _call_at_risk(s: RuleSettings) -> pl.Expr:
    return (c("dividend_cushion") < 0) & (c("dividend_days") <= s.dividend_window_days)


def _delta_limit(s: RuleSettings) -> pl.Expr:
    return (
        pl.when(c("strategy_type") == StrategyType.IRON_CONDOR.value)
        .then(pl.lit(s.delta_limit_iron_condor))
        .otherwise(pl.lit(s.delta_limit_vertical))
    )


def _regime_name() -> pl.Expr:
    return c("regime").fill_null("unknown")


RULES: tuple[Rule, ...] = (
    Rule(
        name="delivered_stock",
        priority=0.5,
        summary="stock delivered by assignment or exercise is held: close it and the rest",
        applies_to=MANAGED,
        inputs=("stock_shares",),
        condition=lambda s: c("stock_shares") != 0,
        action=ExitAction.CLOSE,
        urgency=Urgency.IMMEDIATE,
        reason=lambda s: pl.format(
            "{} shares delivered by assignment or exercise: close them and the option legs left",
            num_int(c("stock_shares")),
        ),
    ),
    Rule(
        name="pin_risk",
        priority=0.7,
        summary="expiry day: a short strike within pin% of the underlying, from pin_risk_from",
        applies_to=MANAGED,
        inputs=("pin_distance_pct",),
        condition=lambda s: (
            (c("pin_distance_pct") <= s.pin_risk_distance_pct)
            & (c("market_seconds") >= _seconds(s.pin_risk_from))
        ),
        action=ExitAction.CLOSE,
        urgency=Urgency.IMMEDIATE,
        reason=lambda s: pl.format(
            f"expiry day: a short strike {{}}% from the underlying (pin risk at <= "
            f"{s.pin_risk_distance_pct}%, from {s.pin_risk_from:%H:%M} New York)",
            num(c("pin_distance_pct"), 3),
        ),
    ),
    Rule(
        name="early_assignment",
        priority=0.8,
        summary="short ITM call worth less than the coming dividend, or short ITM put "
        "with almost no extrinsic value near expiry",
        applies_to=MANAGED,
        inputs=("dividend_cushion", "dividend_days", "put_extrinsic", "dte"),
        condition=lambda s: (
            _call_at_risk(s)
            | ((c("put_extrinsic") < s.put_extrinsic_floor) & (_dte <= s.put_assignment_dte))
        ),
        action=ExitAction.CLOSE,
        urgency=Urgency.HIGH,
        reason=lambda s: (
            pl.when(_call_at_risk(s))
            .then(
                pl.format(
                    f"short ITM call: extrinsic less the dividend {{}} $/share < 0 with the "
                    f"ex-date in {{}} day(s) (window {s.dividend_window_days})",
                    num(c("dividend_cushion"), 4),
                    num(c("dividend_days"), 0),
                )
            )
            .otherwise(
                pl.format(
                    f"short ITM put: extrinsic {{}} $/share < {s.put_extrinsic_floor} with DTE "
                    f"{{}} <= {s.put_assignment_dte}",
                    num(c("put_extrinsic"), 4),
                    num_int(_dte),
                )
            )
        ),
    ),
    Rule(
        name="catastrophe",
        priority=1.0,
        summary="underlying falls > drop% in an hour, or IV jumps > jump% since entry",
        applies_to=MANAGED,
        inputs=("underlying_move_1h_pct", "iv", "entry_iv"),
        condition=lambda s: (
            (c("underlying_move_1h_pct") < -s.catastrophe_drop_pct)
            | (c("iv_change_pct") > s.catastrophe_iv_jump_pct)
        ),
        action=ExitAction.CLOSE,
        urgency=Urgency.IMMEDIATE,
        reason=lambda s: pl.format(
            f"underlying {{}}% in 1h (limit -{s.catastrophe_drop_pct}%), "
            f"IV {{}}% vs entry (limit +{s.catastrophe_iv_jump_pct}%)",
            num(c("underlying_move_1h_pct")),
            num(c("iv_change_pct"), 1),
        ),
    ),
    Rule(
        name="single_leg_exit",
        priority=1.3,
        summary="single leg: profit >= x%, loss >= y%, or DTE <= d",
        applies_to=frozenset({StrategyType.SINGLE.value}),
        inputs=("profit_pct", "dte"),
        condition=lambda s: (
            (_profit >= s.single_leg_profit_pct)
            | (_profit <= -s.single_leg_loss_pct)
            | (_dte <= s.single_leg_max_dte)
        ),
        action=ExitAction.CLOSE,
        urgency=Urgency.NORMAL,
        reason=lambda s: pl.format(
            f"single leg: profit {{}}% (take >= {s.single_leg_profit_pct}%, "
            f"stop <= -{s.single_leg_loss_pct}%), DTE {{}} (close at <= {s.single_leg_max_dte})",
            num(_profit),
            num_int(_dte),
        ),
    ),
    Rule(
        name="trailing_stop",
        priority=1.4,
        summary="peak profit >= activation and profit fell to ratio x peak or below",
        applies_to=MANAGED,
        inputs=("profit_pct",),
        condition=lambda s: (
            (c("peak_profit_pct") >= s.trailing_activation_pct) & (_profit <= _trail_floor(s))
        ),
        action=ExitAction.CLOSE,
        urgency=Urgency.NORMAL,
        reason=lambda s: pl.format(
            f"profit {{}}% at or below {s.trailing_giveback_ratio} x peak {{}}% = {{}}% "
            f"(armed at peak >= {s.trailing_activation_pct}%)",
            num(_profit),
            num(c("peak_profit_pct")),
            num(_trail_floor(s)),
        ),
    ),
    Rule(
        name="vix_exit",
        priority=1.5,
        summary="VIX above level, or up more than rise points since entry",
        applies_to=MANAGED,
        inputs=("vix", "entry_vix"),
        condition=lambda s: (c("vix") > s.vix_level) | (c("vix_change") > s.vix_rise_points),
        action=ExitAction.CLOSE,
        urgency=Urgency.HIGH,
        reason=lambda s: pl.format(
            f"VIX {{}} (limit {s.vix_level}), {{}} points since entry {{}} "
            f"(limit +{s.vix_rise_points})",
            num(c("vix")),
            num(c("vix_change")),
            num(c("entry_vix")),
        ),
    ),
    Rule(
        name="take_profit",
        priority=2.0,
        summary="profit >= regime target: CLOSE; >= partial and not reduced: REDUCE half",
        applies_to=MANAGED,
        inputs=("profit_pct",),
        condition=lambda s: (
            (_profit >= c("profit_target_pct"))
            | ((_profit >= s.partial_take_profit_pct) & ~c("reduced"))
        ),
        action=ExitAction.CLOSE,
        urgency=Urgency.NORMAL,
        variants=(Variant(lambda s: _profit < c("profit_target_pct"), action=ExitAction.REDUCE),),
        reason=lambda s: (
            pl.when(_profit >= c("profit_target_pct"))
            .then(
                pl.format(
                    "profit {}% >= {} regime target {}%",
                    num(_profit),
                    _regime_name(),
                    num(c("profit_target_pct")),
                )
            )
            .otherwise(
                pl.format(
                    f"profit {{}}% >= partial {s.partial_take_profit_pct}% "
                    "(below {} regime target {}%): reduce half",
                    num(_profit),
                    _regime_name(),
                    num(c("profit_target_pct")),
                )
            )
        ),
    ),
    Rule(
        name="stop_loss",
        priority=3.0,
        summary="loss >= stop% of credit; or DTE < d and loss >= near%",
        applies_to=MANAGED,
        inputs=("profit_pct", "dte"),
        condition=lambda s: (
            (_profit <= -s.stop_loss_pct)
            | ((_dte < s.stop_loss_near_expiry_dte) & (_profit <= -s.stop_loss_near_expiry_pct))
        ),
        action=ExitAction.CLOSE,
        urgency=Urgency.IMMEDIATE,
        reason=lambda s: pl.format(
            f"loss {{}}% of credit (stop {s.stop_loss_pct}%, or "
            f"{s.stop_loss_near_expiry_pct}% when DTE < {s.stop_loss_near_expiry_dte}), DTE {{}}",
            num(-_profit),
            num_int(_dte),
        ),
    ),
    Rule(
        name="delta_risk",
        priority=4.0,
        summary="abs(net delta) above the iron-condor / vertical limit",
        applies_to=MULTI_LEG,
        inputs=("net_delta",),
        condition=lambda s: c("net_delta").abs() > _delta_limit(s),
        action=ExitAction.CLOSE,
        urgency=Urgency.HIGH,
        reason=lambda s: pl.format(
            "abs net delta {} > {} limit {}",
            num(c("net_delta").abs(), 3),
            c("strategy_type"),
            num(_delta_limit(s)),
        ),
    ),
    Rule(
        name="iv_crush",
        priority=5.0,
        summary="IV down > crush% since entry with profit > min%",
        applies_to=MANAGED,
        inputs=("iv", "entry_iv", "profit_pct"),
        condition=lambda s: (
            (c("iv_change_pct") < -s.iv_crush_pct) & (_profit > s.iv_crush_min_profit_pct)
        ),
        action=ExitAction.CLOSE,
        urgency=Urgency.NORMAL,
        reason=lambda s: pl.format(
            f"IV {{}}% since entry (limit -{s.iv_crush_pct}%) with profit {{}}% "
            f"> {s.iv_crush_min_profit_pct}%",
            num(c("iv_change_pct"), 1),
            num(_profit),
        ),
    ),
    Rule(
        name="iv_percentile",
        priority=5.5,
        summary="IV percentile below floor with profit > min%",
        applies_to=MANAGED,
        inputs=("iv_percentile", "profit_pct"),
        condition=lambda s: (
            (c("iv_percentile") < s.iv_percentile_floor)
            & (_profit > s.iv_percentile_min_profit_pct)
        ),
        action=ExitAction.CLOSE,
        urgency=Urgency.NORMAL,
        reason=lambda s: pl.format(
            f"IV percentile {{}} < {s.iv_percentile_floor} with profit {{}}% "
            f"> {s.iv_percentile_min_profit_pct}%",
            num(c("iv_percentile"), 1),
            num(_profit),
        ),
    ),
    Rule(
        name="dte_roll",
        priority=6.0,
        summary="roll window: ROLL to ~target DTE; at or below must-roll DTE, urgently",
        applies_to=MULTI_LEG,
        inputs=("dte",),
        condition=lambda s: (_dte > s.time_exit_dte) & (_dte <= s.roll_window_max_dte),
        action=ExitAction.ROLL,
        urgency=Urgency.NORMAL,
        variants=(Variant(lambda s: _dte <= s.roll_must_dte, urgency=Urgency.HIGH),),
        reason=lambda s: (
            pl.when(_dte <= s.roll_must_dte)
            .then(
                pl.format(
                    f"DTE {{}} <= {s.roll_must_dte}: must roll to ~{s.roll_target_dte} DTE",
                    num_int(_dte),
                )
            )
            .otherwise(
                pl.format(
                    f"DTE {{}} in roll window ({s.roll_must_dte}, {s.roll_window_max_dte}]: "
                    f"roll to ~{s.roll_target_dte} DTE",
                    num_int(_dte),
                )
            )
        ),
    ),
    Rule(
        name="gamma_risk",
        priority=7.0,
        summary="abs(gamma) above limit close to expiry",
        applies_to=MANAGED,
        inputs=("net_gamma", "dte"),
        condition=lambda s: (c("net_gamma").abs() > s.gamma_limit) & (_dte < s.gamma_max_dte),
        action=ExitAction.CLOSE,
        urgency=Urgency.HIGH,
        reason=lambda s: pl.format(
            f"abs gamma {{}} > {s.gamma_limit} with DTE {{}} < {s.gamma_max_dte}",
            num(c("net_gamma").abs(), 3),
            num_int(_dte),
        ),
    ),
    Rule(
        name=TIME_EXIT,
        priority=8.0,
        summary="DTE at or below the time exit: close before expiry",
        applies_to=MANAGED,
        inputs=("dte",),
        condition=lambda s: _dte <= s.time_exit_dte,
        action=ExitAction.CLOSE,
        urgency=Urgency.IMMEDIATE,
        reason=lambda s: pl.format(
            f"DTE {{}} <= {s.time_exit_dte}: close before expiry", num_int(_dte)
        ),
    ),
)

RULE_NAMES: tuple[str, ...] = tuple(r.name for r in RULES)
RULES_BY_NAME: dict[str, Rule] = {r.name: r for r in RULES}
INPUT_COLUMNS: tuple[str, ...] = tuple(dict.fromkeys(i for r in RULES for i in r.inputs))


def check_disabled(settings: RuleSettings) -> tuple[str, ...]:
    """The disabled rule names, after rejecting any that is not a rule (a typo would silently
    leave the rule on)."""
    unknown = [n for n in settings.disabled if n not in RULES_BY_NAME]
    if unknown:
        raise ValueError(
            f"rules.disabled names unknown rule(s) {unknown}; known rules: {list(RULE_NAMES)}"
        )
    return tuple(r.name for r in RULES if r.name in settings.disabled)
