"""Feature views and the feature service that the ranking model reads."""
from datetime import timedelta

from entities import item, user
from feast import FeatureService, FeatureView, Field
from feast.types import Int64, String
from sources import item_source, user_profile_source

# A long ttl: the bundled data is from 2010-2011, and a view whose ttl is shorter than the data's
# age materializes nothing (ttl=0 is no exception: it skips rows older than a year).
TEN_YEARS = timedelta(days=3650)

item_text = FeatureView(
    name="item_text",
    entities=[item],
    ttl=TEN_YEARS,
    schema=[Field(name="item_text", dtype=String)],
    source=item_source,
    online=True,
)

user_text = FeatureView(
    name="user_text",
    entities=[user],
    ttl=TEN_YEARS,
    schema=[Field(name="user_text", dtype=String), Field(name="n_events", dtype=Int64)],
    source=user_profile_source,
    online=True,
)

ranking_model = FeatureService(name="ranking_model", features=[user_text[["user_text"]], item_text])
