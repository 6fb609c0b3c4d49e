"""Search, its own pipeline: full text and the pre-trained encoder's space, fused, re-ranked by behaviour.

``lexical`` (PostgreSQL full text), ``index`` (the item side's vectors), ``pipeline`` (fusion and
re-rank), ``knownitem`` (the known-item queries the gate and the benchmark score), ``evaluate``.
"""
from freshrec.search.pipeline import SearchConfig, SearchHit, SearchPipeline

__all__ = ["SearchConfig", "SearchHit", "SearchPipeline"]
