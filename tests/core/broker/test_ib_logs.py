"""IB log hygiene: account numbers never reach a log in full, from ib_async or from V6."""

from __future__ import annotations

import logging
from types import ModuleType

import pytest

from core.broker.ib import connection, executions, market_data, orders


@pytest.mark.parametrize("module", [connection, executions, market_data, orders])
def test_v6_ib_loggers_mask_account_numbers(
    module: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    logger: logging.Logger = module.logger
    with caplog.at_level(logging.INFO, logger=logger.name):
        logger.info("IB error 321 reqId 5: account %s is not allowed", "DU1234567")
    assert "DU1234567" not in caplog.text
    assert "******567" in caplog.text


def test_ib_async_loggers_mask_account_numbers(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="ib_async.client"):
        logging.getLogger("ib_async.client").debug("<<< 4,2,-1,U7654321")
    assert "U7654321" not in caplog.text and "*****321" in caplog.text
