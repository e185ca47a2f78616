"""V6 deployments layer: the `v6` CLI, schedules, serve and deploy (see ARCHITECTURE.md)."""
