"""Analyses over stored data: futures/underlying lead-lag, historical-vs-live variance."""
