"""Exit rules: 12 priority-ordered, audited rules evaluated over polars frames in one pass.

Entry points: `evaluate` (pure) and `RulesEngine(store, settings).run(snapshot, now)`
(loads and persists the durable rule state, writes the `decisions` audit rows).
"""

from core.rules.definitions import RULE_NAMES, RULES, Rule
from core.rules.engine import RulesEngine, RulesRun, check_settings, evaluate
from core.rules.inputs import (
    SNAPSHOT_SCHEMA,
    build_snapshot,
    normalize_snapshot,
    profit_pct_expr,
    underlying_move_1h,
)
from core.rules.regime import daily_closes, detect_regimes
from core.rules.targets import profit_target, profit_target_expr
from core.rules.vocab import ExitAction, Urgency

__all__ = [
    "RULES",
    "RULE_NAMES",
    "SNAPSHOT_SCHEMA",
    "ExitAction",
    "Rule",
    "RulesEngine",
    "RulesRun",
    "Urgency",
    "build_snapshot",
    "check_settings",
    "daily_closes",
    "detect_regimes",
    "evaluate",
    "normalize_snapshot",
    "profit_pct_expr",
    "profit_target",
    "profit_target_expr",
    "underlying_move_1h",
]
