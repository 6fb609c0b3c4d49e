"""The ranking pipeline: candidates (repeat, tower, co-purchase, popular) -> point-in-time features -> ranker.

Computation in ``events``, ``copurchase``, ``candidates`` and ``pipeline`` (no I/O); its inputs from
PostgreSQL and Feast in ``inputs``; a version's parts together in ``model``.
"""
from freshrec.ranking.candidates import FEATURES, SOURCES, CandidateConfig, Candidates, DayState
from freshrec.ranking.scorer import RankingModel

__all__ = ["FEATURES", "SOURCES", "CandidateConfig", "Candidates", "DayState", "RankingModel"]
