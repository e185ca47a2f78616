"""IB gateway simulator: the TWS socket protocol (server version 178) over a SimExchange.

`GatewayServer` serves IBBroker / any ib_async client on loopback with connection-level
faults; `run_gateway` is the standalone entry point (`v6 gateway-sim`).
"""

from core.sim.gateway.faults import GatewayFaults, HistoricalPacing
from core.sim.gateway.server import GatewayServer, run_gateway

__all__ = ["GatewayFaults", "GatewayServer", "HistoricalPacing", "run_gateway"]
