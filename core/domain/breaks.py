"""Reconciliation breaks: what disagreed between the book and the broker, how it was
resolved, and how loudly to say so. Stored in the book's `breaks` table."""

from __future__ import annotations

from enum import StrEnum


class BreakKind(StrEnum):
    MISSING_FILL = "missing_fill"  # a V6 execution the book lacked
    EXTERNAL_FILL = "external_fill"  # an execution V6 did not place
    UNKNOWN_V6_REF = "unknown_v6_ref"  # a V6-looking ref with no intent or strategy: unexplained
    EXTERNAL_POSITION = "external_position"  # a broker position the book does not know
    MISSING_POSITION = "missing_position"  # a book leg the broker no longer has
    ASSIGNMENT = "assignment"  # a short option was assigned: it left, its stock came
    EXERCISE = "exercise"  # a long option was exercised (at expiry, by exception): likewise
    QUANTITY_MISMATCH = "quantity_mismatch"
    PRICE_MISMATCH = "price_mismatch"
    MISSING_ORDER = "missing_order"  # a V6 order working at the broker the book never recorded
    STALE_ORDER = "stale_order"  # the book thinks an order works, the broker no longer has it
    EXTERNAL_ORDER = "external_order"  # an order V6 did not place
    ABSURD_REPORT = "absurd_report"  # a broker number outside sanity bounds: nothing booked
    EXECUTION_CONFLICT = "execution_conflict"  # a booked exec_id reported with other content
    EXECUTION_CORRECTION = "execution_correction"  # a booked fill replaced by its correction
    UNKNOWN_CONTRACT = "unknown_contract"  # an execution naming no contract V6 can book


class Resolution(StrEnum):
    RECORDED_FILL = "recorded_fill"
    ADOPTED_EXTERNAL = "adopted_external"
    CLOSED_EXPIRED = "closed_expired"
    CLOSED_ASSIGNED = "closed_assigned"
    CLOSED_EXERCISED = "closed_exercised"
    CLOSED_EXTERNALLY = "closed_externally"
    STOCK_BOOKED = "stock_booked"
    ADJUSTED = "adjusted"
    RECORDED_ORDER = "recorded_order"
    ORDER_UPDATED = "order_updated"
    NOTED = "noted"
    UNRESOLVED = "unresolved"
    AWAITING_ACK = "awaiting_ack"  # not booked until a person runs `v6 breaks ack`


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    URGENT = "urgent"
