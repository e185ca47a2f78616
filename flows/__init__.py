"""V6 flows layer: one Prefect flow per file (see ARCHITECTURE.md).

Importing any flow routes core's order lines into the Prefect run logs
(`flows.run_logs`)."""

from flows.run_logs import route_core_logs

route_core_logs()
