"""The same 15 rules as a per-strategy Python loop: the way most trading bots write them.

Lives in benchmarks/, not core: production never runs it. It is the oracle the vectorised
engine is tested against (same decisions on random snapshots, nulls included) and the
baseline `benchmarks/rules.py` times. It is written to be obviously right rather than
fast: one dict per strategy, one function per rule, explicit three-valued logic (None =
unknown) mirroring polars' Kleene semantics, and the same rule for NO_DATA (a rule is
clear only when False with all its inputs present; an undecided rule that can only CLOSE
lets a lower CLOSE decide, and the time exit closes whatever is undecided). Shares only
the settings, rule order and target table with the engine.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

import polars as pl

from core.config import RuleSettings
from core.domain.strategies import StrategyType
from core.domain.timezones import MARKET_TZ
from core.rules.definitions import RULES, check_disabled
from core.rules.targets import profit_target
from core.rules.vocab import MANAGED, MULTI_LEG, ExitAction, Urgency

Tri = bool | None  # True fired, False clear, None unknown
Check = tuple[Tri, str, str]  # fired, action, urgency
CheckFn = Callable[[dict[str, Any], RuleSettings], Check]
Describe = Callable[[dict[str, Any], RuleSettings], str]


def _num(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _pos(x: Any) -> float | None:
    v = _num(x)
    return v if v is not None and v > 0 else None


def _any(*xs: Tri) -> Tri:
    if any(x is True for x in xs):
        return True
    return None if any(x is None for x in xs) else False


def _all(*xs: Tri) -> Tri:
    if any(x is False for x in xs):
        return False
    return None if any(x is None for x in xs) else True


def _lt(a: float | None, b: float | None) -> Tri:
    return None if a is None or b is None else a < b


def _le(a: float | None, b: float | None) -> Tri:
    return None if a is None or b is None else a <= b


def _gt(a: float | None, b: float | None) -> Tri:
    return None if a is None or b is None else a > b


def _ge(a: float | None, b: float | None) -> Tri:
    return None if a is None or b is None else a >= b


def _abs(a: float | None) -> float | None:
    return None if a is None else abs(a)


def _catastrophe(x: dict[str, Any], s: RuleSettings) -> Check:
    fired = _any(
        _lt(x["underlying_move_1h_pct"], -s.catastrophe_drop_pct),
        _gt(x["iv_change_pct"], s.catastrophe_iv_jump_pct),
    )
    return fired, ExitAction.CLOSE, Urgency.IMMEDIATE


def _single_leg(x: dict[str, Any], s: RuleSettings) -> Check:
    p, dte = x["profit_pct"], x["dte"]
    fired = _any(
        _ge(p, s.single_leg_profit_pct),
        _le(p, -s.single_leg_loss_pct),
        _le(dte, s.single_leg_max_dte),
    )
    return fired, ExitAction.CLOSE, Urgency.NORMAL


def _trailing(x: dict[str, Any], s: RuleSettings) -> Check:
    peak = x["peak_profit_pct"]
    floor = None if peak is None else round(peak * s.trailing_giveback_ratio, 9)
    fired = _all(_ge(peak, s.trailing_activation_pct), _le(x["profit_pct"], floor))
    return fired, ExitAction.CLOSE, Urgency.NORMAL


def _vix(x: dict[str, Any], s: RuleSettings) -> Check:
    fired = _any(_gt(x["vix"], s.vix_level), _gt(x["vix_change"], s.vix_rise_points))
    return fired, ExitAction.CLOSE, Urgency.HIGH


def _take_profit(x: dict[str, Any], s: RuleSettings) -> Check:
    p = x["profit_pct"]
    full = _ge(p, x["profit_target_pct"])
    partial = _all(_ge(p, s.partial_take_profit_pct), not x["reduced"])
    action = ExitAction.CLOSE if full else ExitAction.REDUCE
    return _any(full, partial), action, Urgency.NORMAL


def _stop_loss(x: dict[str, Any], s: RuleSettings) -> Check:
    p, dte = x["profit_pct"], x["dte"]
    fired = _any(
        _le(p, -s.stop_loss_pct),
        _all(_lt(dte, s.stop_loss_near_expiry_dte), _le(p, -s.stop_loss_near_expiry_pct)),
    )
    return fired, ExitAction.CLOSE, Urgency.IMMEDIATE


def _delta_limit(x: dict[str, Any], s: RuleSettings) -> float:
    if x["strategy_type"] == StrategyType.IRON_CONDOR:
        return s.delta_limit_iron_condor
    return s.delta_limit_vertical


def _delta(x: dict[str, Any], s: RuleSettings) -> Check:
    return _gt(_abs(x["net_delta"]), _delta_limit(x, s)), ExitAction.CLOSE, Urgency.HIGH


def _iv_crush(x: dict[str, Any], s: RuleSettings) -> Check:
    fired = _all(
        _lt(x["iv_change_pct"], -s.iv_crush_pct), _gt(x["profit_pct"], s.iv_crush_min_profit_pct)
    )
    return fired, ExitAction.CLOSE, Urgency.NORMAL


def _iv_pct(x: dict[str, Any], s: RuleSettings) -> Check:
    fired = _all(
        _lt(x["iv_percentile"], s.iv_percentile_floor),
        _gt(x["profit_pct"], s.iv_percentile_min_profit_pct),
    )
    return fired, ExitAction.CLOSE, Urgency.NORMAL


def _roll(x: dict[str, Any], s: RuleSettings) -> Check:
    dte = x["dte"]
    fired = _all(_gt(dte, s.time_exit_dte), _le(dte, s.roll_window_max_dte))
    must = dte is not None and dte <= s.roll_must_dte
    return fired, ExitAction.ROLL, Urgency.HIGH if must else Urgency.NORMAL


def _gamma(x: dict[str, Any], s: RuleSettings) -> Check:
    fired = _all(_gt(_abs(x["net_gamma"]), s.gamma_limit), _lt(x["dte"], s.gamma_max_dte))
    return fired, ExitAction.CLOSE, Urgency.HIGH


def _delivered_stock(x: dict[str, Any], s: RuleSettings) -> Check:
    shares = x.get("stock_shares", 0)
    fired = None if shares is None else shares != 0
    return fired, ExitAction.CLOSE, Urgency.IMMEDIATE


def _pin_risk(x: dict[str, Any], s: RuleSettings) -> Check:
    t = s.pin_risk_from
    fired = _all(
        _le(x["pin_distance_pct"], s.pin_risk_distance_pct),
        x["market_seconds"] >= t.hour * 3600 + t.minute * 60 + t.second,
    )
    return fired, ExitAction.CLOSE, Urgency.IMMEDIATE


def _early_assignment(x: dict[str, Any], s: RuleSettings) -> Check:
    call = _all(_lt(x["dividend_cushion"], 0.0), _le(x["dividend_days"], s.dividend_window_days))
    put = _all(_lt(x["put_extrinsic"], s.put_extrinsic_floor), _le(x["dte"], s.put_assignment_dte))
    return _any(call, put), ExitAction.CLOSE, Urgency.HIGH


def _exposure(v: Any) -> float | None:
    """An exposure column: +inf is "nothing exposed" and compares; NaN and -inf are unknown."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) or v == math.inf else None


def _time_exit(x: dict[str, Any], s: RuleSettings) -> Check:
    return _le(x["dte"], s.time_exit_dte), ExitAction.CLOSE, Urgency.IMMEDIATE


# Reason text, formatted only for the rule that decided (as the engine does).
_DESCRIBE: dict[str, Describe] = {
    "delivered_stock": lambda x, s: f"{x.get('stock_shares')} shares delivered",
    "pin_risk": lambda x, s: f"short strike {x['pin_distance_pct']}% from the underlying",
    "early_assignment": lambda x, s: (
        f"call cushion {x['dividend_cushion']}, put extrinsic {x['put_extrinsic']}"
    ),
    "catastrophe": lambda x, s: (
        f"underlying {x['underlying_move_1h_pct']}% in 1h, IV {x['iv_change_pct']}% vs entry"
    ),
    "single_leg_exit": lambda x, s: f"single leg: profit {x['profit_pct']}%, DTE {x['dte']}",
    "trailing_stop": lambda x, s: f"profit {x['profit_pct']}% vs peak {x['peak_profit_pct']}%",
    "vix_exit": lambda x, s: f"VIX {x['vix']}, {x['vix_change']} points since entry",
    "take_profit": lambda x, s: f"profit {x['profit_pct']}% vs target {x['profit_target_pct']}%",
    "stop_loss": lambda x, s: f"profit {x['profit_pct']}%, DTE {x['dte']}",
    "delta_risk": lambda x, s: f"abs delta {_abs(x['net_delta'])} > {_delta_limit(x, s)}",
    "iv_crush": lambda x, s: f"IV {x['iv_change_pct']}% since entry, profit {x['profit_pct']}%",
    "iv_percentile": lambda x, s: f"IV percentile {x['iv_percentile']}",
    "dte_roll": lambda x, s: f"DTE {x['dte']}: roll to ~{s.roll_target_dte} DTE",
    "gamma_risk": lambda x, s: f"abs gamma {_abs(x['net_gamma'])}, DTE {x['dte']}",
    "time_exit": lambda x, s: f"DTE {x['dte']}: close before expiry",
}
_IMPL: dict[str, tuple[frozenset[str], CheckFn]] = {
    "delivered_stock": (MANAGED, _delivered_stock),
    "pin_risk": (MANAGED, _pin_risk),
    "early_assignment": (MANAGED, _early_assignment),
    "catastrophe": (MANAGED, _catastrophe),
    "single_leg_exit": (frozenset({StrategyType.SINGLE.value}), _single_leg),
    "trailing_stop": (MANAGED, _trailing),
    "vix_exit": (MANAGED, _vix),
    "take_profit": (MANAGED, _take_profit),
    "stop_loss": (MANAGED, _stop_loss),
    "delta_risk": (MULTI_LEG, _delta),
    "iv_crush": (MANAGED, _iv_crush),
    "iv_percentile": (MANAGED, _iv_pct),
    "dte_roll": (MULTI_LEG, _roll),
    "gamma_risk": (MANAGED, _gamma),
    "time_exit": (MANAGED, _time_exit),
}
# What each rule reads: a rule is clear only when it is False with all of these present.
_INPUTS: dict[str, tuple[str, ...]] = {
    "delivered_stock": ("stock_shares",),
    "pin_risk": ("pin_distance_pct",),
    "early_assignment": ("dividend_cushion", "dividend_days", "put_extrinsic", "dte"),
    "catastrophe": ("underlying_move_1h_pct", "iv", "entry_iv"),
    "single_leg_exit": ("profit_pct", "dte"),
    "trailing_stop": ("profit_pct",),
    "vix_exit": ("vix", "entry_vix"),
    "take_profit": ("profit_pct",),
    "stop_loss": ("profit_pct", "dte"),
    "delta_risk": ("net_delta",),
    "iv_crush": ("iv", "entry_iv", "profit_pct"),
    "iv_percentile": ("iv_percentile", "profit_pct"),
    "dte_roll": ("dte",),
    "gamma_risk": ("net_gamma", "dte"),
    "time_exit": ("dte",),
}
# Rules whose every decision is CLOSE: when missing data leaves one undecided, the walk goes
# on, and a lower rule that fires CLOSE still closes (take profit may REDUCE, a roll ROLLs).
_CLOSE_ONLY = frozenset(_IMPL) - {"take_profit", "dte_roll"}
_URGENCY_RANK = {Urgency.IMMEDIATE.value: 0, Urgency.HIGH.value: 1, Urgency.NORMAL.value: 2}
# Same order as the engine's table (the priority order).
_ORDER = [r.name for r in RULES]


def evaluate_loop(
    rows: Iterable[Mapping[str, Any]],
    settings: RuleSettings,
    state: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    now: datetime,
) -> list[dict[str, Any]]:
    """Decide each strategy in turn and build its audit record, as the engine does.

    `rows` are snapshot dicts (columns as in `inputs.SNAPSHOT_SCHEMA`); `state` maps
    strategy_id to its remembered values; `now` is the evaluation time (pin risk's clock).
    Returns one dict per strategy with the decision (action, urgency, rule, priority,
    reason, missing_inputs, suppressed_rules, disabled_rules), the effective inputs and
    derived values, and the new peak / reduced.
    """
    disabled = set(check_disabled(settings))
    active = [(name, *_IMPL[name]) for name in _ORDER if name not in disabled]
    off = [(name, *_IMPL[name]) for name in _ORDER if name in disabled]
    disabled_text = ", ".join(name for name, _, _ in off) or None
    priority = {r.name: r.priority for r in RULES}
    order = list(dict.fromkeys(i for name in _ORDER for i in _INPUTS[name]))
    needed = {  # per strategy type: the inputs some enabled, applicable rule reads
        t.value: [i for i in order if any(i in _INPUTS[n] and t.value in ap for n, ap, _ in active)]
        for t in StrategyType
    }
    time_exit_on = "time_exit" not in disabled
    state = state or {}
    local = now.astimezone(MARKET_TZ)
    market_seconds = local.hour * 3600 + local.minute * 60 + local.second
    out: list[dict[str, Any]] = []
    for row in rows:
        mem = state.get(row["strategy_id"], {})
        x = dict(row)
        for key in ("profit_pct", "net_delta", "net_gamma", "iv_percentile"):
            x[key] = _num(x.get(key))
        x["underlying_move_1h_pct"] = _num(x.get("underlying_move_1h_pct"))
        for key in ("pin_distance_pct", "dividend_cushion", "dividend_days", "put_extrinsic"):
            x[key] = _exposure(x.get(key, math.inf))
        x["market_seconds"] = market_seconds
        x.setdefault("stock_shares", 0)  # absent: none delivered (as `inputs.py` reads it)
        x["iv"], x["vix"] = _pos(x.get("iv")), _pos(x.get("vix"))
        x["entry_iv"] = _pos(mem.get("entry_iv")) or _pos(x.get("entry_iv"))
        x["entry_vix"] = _pos(mem.get("entry_vix")) or _pos(x.get("entry_vix"))
        peaks = [v for v in (_num(mem.get("peak_profit_pct")), x["profit_pct"]) if v is not None]
        x["peak_profit_pct"] = max(peaks) if peaks else None
        x["reduced"] = bool(mem.get("reduced") or False)
        x["profit_target_pct"] = profit_target(
            None if x.get("regime") == "unknown" else x.get("regime"), settings
        )
        x["iv_change_pct"] = (
            round((x["iv"] / x["entry_iv"] - 1.0) * 100.0, 9)
            if x["iv"] is not None and x["entry_iv"] is not None
            else None
        )
        x["vix_change"] = (
            round(x["vix"] - x["entry_vix"], 9)
            if x["vix"] is not None and x["entry_vix"] is not None
            else None
        )
        kind = x["strategy_type"]
        missing = ", ".join(i for i in needed[kind] if x[i] is None) or None
        action, urgency, rule, reason = ExitAction.HOLD.value, None, None, "no rule fired"
        suppressed = None
        if kind == StrategyType.EXTERNAL:
            reason = "external, untagged"
        else:
            blocked: str | None = None  # the first rule missing data left undecided
            passed: list[str] = []  # urgencies of the undecided close-only rules walked past
            for name, applies, fn in active:
                if kind not in applies:
                    continue
                fired, act, urg = fn(x, settings)
                if fired is False and any(x[i] is None for i in _INPUTS[name]):
                    fired = None  # clear only with every input present
                if fired is None:
                    blocked = blocked or name
                    if name in _CLOSE_ONLY:  # it would close: what follows decides the rest
                        passed.append(str(urg))
                        continue
                    break
                if fired:
                    if blocked is None or act == ExitAction.CLOSE:
                        action, rule = str(act), name
                        urgency = min((str(urg), *passed), key=_URGENCY_RANK.__getitem__)
                        reason = _DESCRIBE[name](x, settings)
                        if blocked:
                            reason += f"; closed although {blocked} undecided: all outcomes close"
                    break
            if blocked and rule is None:
                action, rule = ExitAction.NO_DATA.value, blocked
                reason = f"missing inputs: {missing}; cannot decide rule {blocked}"
                if time_exit_on and kind in _IMPL["time_exit"][0] and _time_exit(x, settings)[0]:
                    # missing data never keeps a position past the time exit
                    _, act, urg = _time_exit(x, settings)
                    action, urgency, rule = str(act), str(urg), "time_exit"
                    reason = f"{_DESCRIBE[rule](x, settings)}; closed: the time exit applies"
            would = [n for n, ap, fn in off if kind in ap and fn(x, settings)[0] is True]
            if would:
                suppressed = ", ".join(would)
                reason = f"{reason}; disabled rule(s) would have fired: {suppressed}"
        x.update(
            action=action,
            urgency=urgency,
            rule=rule,
            priority=priority[rule] if rule else None,
            reason=reason,
            missing_inputs=missing,
            suppressed_rules=suppressed,
            disabled_rules=disabled_text,
            reduced=x["reduced"] or action == ExitAction.REDUCE,
        )
        out.append(x)
    return out


# What `compare` checks: decisions exactly, derived numbers to 1e-9 (polars and Python may
# round the 9th decimal of a derived percentage differently).
EXACT = (
    "action",
    "urgency",
    "rule",
    "priority",
    "missing_inputs",
    "suppressed_rules",
    "disabled_rules",
    "reduced",
    "dte",
)
CLOSE = (
    "peak_profit_pct",
    "profit_target_pct",
    "iv_change_pct",
    "vix_change",
    "entry_iv",
    "entry_vix",
    "iv",
    "vix",
    "profit_pct",
)


def compare(engine: pl.DataFrame, loop: list[dict[str, Any]]) -> pl.DataFrame:
    """Strategies where the engine's decisions frame and the loop's records disagree."""
    cols = ["strategy_id", *EXACT, *CLOSE]
    ref = pl.DataFrame(loop, schema={c: engine.schema[c] for c in cols})
    joined = engine.select(cols).join(ref, on="strategy_id", how="full", suffix="_loop")
    col = pl.col
    differs = [col(c).ne_missing(col(f"{c}_loop")) for c in EXACT] + [
        ~(
            (col(c).is_null() & col(f"{c}_loop").is_null())
            | ((col(c) - col(f"{c}_loop")).abs() <= 1e-9)
        )
        for c in CLOSE
    ]
    return joined.filter(pl.any_horizontal(differs) | col("strategy_id").is_null())
