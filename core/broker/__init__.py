"""Brokers: the `Broker` protocol and its implementations (SimBroker, IBBroker)."""

from core.broker.base import Broker, BrokerError, ErrorClass

__all__ = ["Broker", "BrokerError", "ErrorClass"]
