"""V6 deployments layer (see ../shared/DESIGN.md)."""
