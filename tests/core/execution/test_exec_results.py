"""ExecutionResult's constructors: combo units reported per strategy unit, errors mapped."""

from __future__ import annotations

import math

import pytest

from core.broker.base import BrokerError, ErrorClass
from core.domain.strategies import IntentPurpose
from core.execution.ladder import CancelUnconfirmed
from core.execution.results import Attempt, ExecStatus, ExecutionResult, Progress


def progress(filled: int, price: float) -> Progress:
    attempt = Attempt("ref-1", price, filled, filled, "Filled", price, price)
    return Progress(filled=filled, cost=filled * price, attempts=[attempt])


def test_settled_reports_per_strategy_unit() -> None:
    # 2 combo units make one strategy unit (a 2:2 combo bought as 1:1 twice)
    result = ExecutionResult.settled(
        progress(4, -1.5),
        strategy_id="s",
        purpose=IntentPurpose.OPEN,
        status=ExecStatus.FILLED,
        requested=2,
        combos_per_unit=2,
        message="2 of 2 units filled",
    )
    assert (result.filled, result.avg_price, result.credit) == (2, -3.0, 3.0)
    assert result.purpose == "open" and result.requested == 2 and result.ok
    assert [a.order_ref for a in result.attempts] == ["ref-1"]


def test_nothing_filled_has_no_price() -> None:
    result = ExecutionResult.already_done(
        Progress(), strategy_id="s", purpose=IntentPurpose.CLOSE, reason="nothing open to close"
    )
    assert result.status is ExecStatus.ALREADY_DONE and result.ok
    assert (result.requested, result.filled) == (0, 0) and math.isnan(result.avg_price)
    assert result.summary()["avg_price"] is None


def test_not_closable_is_not_ok() -> None:
    result = ExecutionResult.not_closable(
        Progress(), strategy_id="s", purpose=IntentPurpose.ROLL, reason="nothing open to roll"
    )
    assert result.status is ExecStatus.NOT_CLOSABLE and not result.ok
    assert result.message == "nothing open to roll"


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (BrokerError("refused", ErrorClass.REJECTION, 201), ExecStatus.REJECTED),
        (BrokerError("no data", ErrorClass.DATA), ExecStatus.REJECTED),
        (BrokerError("socket closed", ErrorClass.CONNECTIVITY), ExecStatus.INTERRUPTED),
        (CancelUnconfirmed("cancel of r not confirmed"), ExecStatus.INTERRUPTED),
    ],
)
def test_from_error_rejects_refusals_and_interrupts_the_rest(
    error: Exception, status: ExecStatus
) -> None:
    result = ExecutionResult.from_error(
        progress(1, 2.0),
        strategy_id="s",
        purpose=IntentPurpose.OPEN,
        error=error,
        requested=3,
        combos_per_unit=1,
    )
    assert result.status is status
    assert result.message == f"{error}; intents kept: the next call resumes them"
    assert (result.requested, result.filled, result.avg_price) == (3, 1, 2.0)
