"""IB's what-if answer (an OrderState of strings) as a `MarginImpact`, fail-closed.

IB sends every margin figure of a what-if as text: a number, its unset double
(1.7976931348623157E308) or empty when it does not know. Anything but a finite number
below the unset value is unknown (None): a margin check must never read it as 0.
"""

from __future__ import annotations

import math

from ib_async import OrderState as IBOrderState

from core.broker.ib.convert import UNSET_DOUBLE
from core.broker.ib.logs import v6_logger
from core.domain import MarginImpact

logger = v6_logger(__name__)


def parse_margin(text: object) -> float | None:
    """One of IB's what-if figures: the number, or None when unset, empty or not a number."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        logger.warning("what-if figure %r is not a number: treated as unknown", text)
        return None
    if not math.isfinite(value) or abs(value) >= UNSET_DOUBLE:
        return None
    return value


def margin_impact(state: IBOrderState) -> MarginImpact:
    """The account's margin before/after and the order's change, each None if unknown."""
    return MarginImpact(
        init_before=parse_margin(state.initMarginBefore),
        init_change=parse_margin(state.initMarginChange),
        init_after=parse_margin(state.initMarginAfter),
        maint_before=parse_margin(state.maintMarginBefore),
        maint_change=parse_margin(state.maintMarginChange),
        maint_after=parse_margin(state.maintMarginAfter),
        equity_with_loan_before=parse_margin(state.equityWithLoanBefore),
        equity_with_loan_change=parse_margin(state.equityWithLoanChange),
        equity_with_loan_after=parse_margin(state.equityWithLoanAfter),
    )
