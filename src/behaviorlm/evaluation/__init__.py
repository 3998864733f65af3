"""Evaluation: metrics (pure functions) and protocol-explicit ranking / classification evaluation."""

from behaviorlm.evaluation.ranking import RankingResult, evaluate_classification, evaluate_ranking

__all__ = ["RankingResult", "evaluate_classification", "evaluate_ranking"]
