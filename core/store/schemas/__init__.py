"""pandera models of V6's Delta tables, one module per area."""
