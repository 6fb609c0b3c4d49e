"""PostgreSQL sources. freshrec's loaders and POST /v1/events keep both tables current."""
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import PostgreSQLSource

# One row per version of an item's text, from the moment it applies (its first sale for UCI data):
# a point-in-time read at an event gets the text the item had then.
item_source = PostgreSQLSource(
    name="items_source",
    query="SELECT item_id, concat_ws(' | ', title, category, description) AS item_text, valid_from FROM item_texts",
    timestamp_field="valid_from",
    description="item_texts: title, category and description as one text, per version",
)

# One row per (user, moment): the titles of the user's last N interactions, valid from just after
# the newest of them, so a point-in-time read at an event never sees that event itself.
user_profile_source = PostgreSQLSource(
    name="user_profiles_source",
    query="SELECT user_id, profile_text AS user_text, n_events, n_baskets, valid_from FROM user_profiles",
    timestamp_field="valid_from",
    description="freshrec.ingest.profiles keeps this history current",
)

# One row per (version, item): the strongest co-purchase partners of the item, as the version ranked them.
item_neighbours_source = PostgreSQLSource(
    name="item_neighbours_source",
    # Each list once, under the version that ranked it: a child carries its parent's other lists over.
    query="SELECT version AS model_version, item_id, partners, strengths, valid_from FROM item_neighbours "
          "WHERE computed_by = version",
    timestamp_field="valid_from",
    description="written by the updater when it publishes a version",
)

# One row per (item, day), stamped at the end of the day (freshrec.ingest.aggregates).
item_stats_source = PostgreSQLSource(
    name="item_daily_stats_source",
    query="SELECT item_id, events_7d, events_28d, buyers, repeat_buyers, valid_from FROM item_daily_stats",
    timestamp_field="valid_from",
    description="daily item aggregates, rebuilt from the first changed day after each load",
)
