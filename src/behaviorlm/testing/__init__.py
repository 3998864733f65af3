"""Shipped test helpers: planted-pattern data and the conformance checks every model must pass."""

from behaviorlm.testing.conformance import (
    check_beats_reference,
    check_deterministic,
    check_params,
    check_recommend_contract,
    check_recommender,
    check_save_load_round_trip,
    check_score_contract,
    check_unfitted_raises,
    hit_rate_at_k,
)
from behaviorlm.testing.synthetic import HeldOutLastEvent, hold_out_last_event, planted_pattern_interactions

__all__ = [
    "HeldOutLastEvent",
    "check_beats_reference",
    "check_deterministic",
    "check_params",
    "check_recommend_contract",
    "check_recommender",
    "check_save_load_round_trip",
    "check_score_contract",
    "check_unfitted_raises",
    "hit_rate_at_k",
    "hold_out_last_event",
    "planted_pattern_interactions",
]
