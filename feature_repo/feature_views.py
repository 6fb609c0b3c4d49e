"""Feature views and the feature service that the ranking model reads."""
from datetime import timedelta

from entities import item, model_version, user
from feast import FeatureService, FeatureView, Field
from feast.types import Array, Float32, Int64, String
from sources import item_neighbours_source, item_source, item_stats_source, user_profile_source

# A long ttl. Plain `feast materialize-incremental` starts a view's first window at now minus its
# ttl: with 10 years, in 2026, it skipped the bundled 2010-2011 data and filled nothing (ttl=0 is
# no way out: it falls back to a window of weeks). The ttl also bounds the point-in-time lookback;
# 50 years bounds nothing real. Feast's PostgreSQL online reads do not expire rows by it.
FIFTY_YEARS = timedelta(days=365 * 50)

item_text = FeatureView(
    name="item_text",
    entities=[item],
    ttl=FIFTY_YEARS,
    schema=[Field(name="item_text", dtype=String)],
    source=item_source,
    online=True,
)

# The profile text (the user tower's input) and how active the user is (the ranker's input),
# both as of just before each moment.
user_text = FeatureView(
    name="user_text",
    entities=[user],
    ttl=FIFTY_YEARS,
    schema=[Field(name="user_text", dtype=String), Field(name="n_events", dtype=Int64),
            Field(name="n_baskets", dtype=Int64)],
    source=user_profile_source,
    online=True,
)

# Daily item aggregates for the ranker: recent popularity, its trend, and how often buyers come back.
item_stats = FeatureView(
    name="item_stats",
    entities=[item],
    ttl=FIFTY_YEARS,
    schema=[Field(name="events_7d", dtype=Int64), Field(name="events_28d", dtype=Int64),
            Field(name="buyers", dtype=Int64), Field(name="repeat_buyers", dtype=Int64)],
    source=item_stats_source,
    online=True,
)

# Each version's co-purchase partners of an item (a version's own state, not the catalog's): serving reads
# those of the customer's recent items, so its work follows their basket size, not the catalog.
item_neighbours = FeatureView(
    name="item_neighbours",
    entities=[model_version, item],
    ttl=FIFTY_YEARS,
    schema=[Field(name="partners", dtype=Array(String)), Field(name="strengths", dtype=Array(Float32))],
    source=item_neighbours_source,
    online=True,
)

ranking_model = FeatureService(name="ranking_model",
                               features=[user_text[["user_text", "n_events", "n_baskets"]], item_text])
ranker_items = FeatureService(name="ranker_items", features=[item_stats])
