"""V6 tasks layer (see ../shared/DESIGN.md)."""
