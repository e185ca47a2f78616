"""Market-data collection: futures contract rolls, bar quality checks, collection steps."""
