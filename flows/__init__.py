"""V6 flows layer: one Prefect flow per file (see ARCHITECTURE.md)."""
