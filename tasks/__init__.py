"""V6 tasks layer: thin Prefect wrappers over core (see ARCHITECTURE.md)."""
