"""Risk: the circuit breaker that stops trading when something goes wrong, portfolio
exposures, and the limits every entry candidate must pass."""
