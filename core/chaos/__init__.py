"""Chaos soak: the full system over many simulated days under seeded faults."""
