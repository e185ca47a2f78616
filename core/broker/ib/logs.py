"""Log hygiene for the IB connection, installed once (on import): account numbers never
reach a log in full, and IB's confirmation of a cancel V6 asked for is not an ERROR."""

from __future__ import annotations

import logging
import re

from core.domain.accounts import mask_account

IB_LOGGERS = ("ib_async.client", "ib_async.wrapper", "ib_async.ib", "ib_async.Decoder")


class AccountRedactor(logging.Filter):
    """Masks account numbers in log records (ib_async prints whole orders and, at DEBUG,
    every raw message): known accounts and anything shaped like an IB account."""

    PATTERN = re.compile(r"\b(?:DU|DF|DI|U|F|I)\d{5,9}\b")

    def __init__(self) -> None:
        super().__init__()
        self.accounts: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        masked = self.PATTERN.sub(lambda m: mask_account(m.group(0)), text)
        for acct in self.accounts:
            if acct and acct in masked:
                masked = masked.replace(acct, mask_account(acct))
        if masked != text:
            record.msg = masked
            record.args = ()
        return True


class CancelAcknowledgement(logging.Filter):
    """ib_async logs IB's 202 ("Order Canceled") at ERROR. V6 cancels on purpose (reprice,
    fill timeout, unwind) and follows the cancel through the order status, so the
    confirmation is INFO; a cancel V6 did not ask for still surfaces as the order's status."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and record.getMessage().startswith("Error 202,"):
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


REDACTOR = AccountRedactor()  # the connection adds each login's managed accounts to it


def v6_logger(module: str) -> logging.Logger:
    """`v6.<module>`'s logger, redacted like ib_async's (filters do not reach child loggers,
    so each IB module's logger gets its own)."""
    logger = logging.getLogger(f"v6.{module}")
    logger.addFilter(REDACTOR)  # a no-op when already there
    return logger


for _name in IB_LOGGERS:
    logging.getLogger(_name).addFilter(REDACTOR)
logging.getLogger("ib_async.wrapper").addFilter(CancelAcknowledgement())
