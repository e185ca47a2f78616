"""V6 flows layer (see ../shared/DESIGN.md)."""
