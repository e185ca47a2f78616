"""Entry candidates: chain snapshots -> skew -> skew-aware strikes -> scored structures ->
portfolio limits (`pipeline.plan_entries`), and the predictions recorded at entry."""

from core.strategy.candidates import Candidate, CandidateLeg, EntrySignals, build_candidates
from core.strategy.pipeline import EntryPlan, held_structures, plan_entries, risk_book
from core.strategy.predictions import record_predictions

__all__ = [
    "Candidate",
    "CandidateLeg",
    "EntryPlan",
    "EntrySignals",
    "build_candidates",
    "held_structures",
    "plan_entries",
    "record_predictions",
    "risk_book",
]
