"""Feast: the feature repository in feature_repo/, driven in-process."""
from freshrec.features.environment import apply_environment, export_lines, feast_environment
from freshrec.features.erase import delete_online_neighbours, delete_online_users, push_item_stats
from freshrec.features.store import (
    FEATURE_REFS,
    FEATURE_SERVICE,
    ITEM_STATS,
    USER_ACTIVITY,
    apply,
    historical_features,
    lock_profiles,
    materialize,
    online_item_stats,
    online_neighbours,
    online_user_texts,
    online_users,
    open_store,
    push_item_neighbours,
    push_user_profiles,
)

__all__ = [
    "FEATURE_REFS",
    "FEATURE_SERVICE",
    "ITEM_STATS",
    "USER_ACTIVITY",
    "apply",
    "apply_environment",
    "delete_online_neighbours",
    "delete_online_users",
    "export_lines",
    "feast_environment",
    "historical_features",
    "lock_profiles",
    "materialize",
    "online_item_stats",
    "online_neighbours",
    "online_user_texts",
    "online_users",
    "open_store",
    "push_item_neighbours",
    "push_item_stats",
    "push_user_profiles",
]
