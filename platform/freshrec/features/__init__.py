"""Feast: the feature repository in feature_repo/, driven in-process."""
from freshrec.features.environment import apply_environment, export_lines, feast_environment
from freshrec.features.store import (
    FEATURE_REFS,
    FEATURE_SERVICE,
    apply,
    historical_features,
    materialize,
    online_user_texts,
    open_store,
    push_user_profiles,
)

__all__ = [
    "FEATURE_REFS",
    "FEATURE_SERVICE",
    "apply",
    "apply_environment",
    "export_lines",
    "feast_environment",
    "historical_features",
    "materialize",
    "online_user_texts",
    "open_store",
    "push_user_profiles",
]
