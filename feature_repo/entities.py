"""The two entities freshrec ranks between."""
from feast import Entity, ValueType

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING, description="a shopper")
item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.STRING, description="a catalog item")
# A model version: features that belong to one version (its co-purchase neighbours) are keyed by it and
# the item, so a rollback serves the neighbours of the version it rolls back to.
model_version = Entity(name="model_version", join_keys=["model_version"], value_type=ValueType.INT64,
                       description="a freshrec model version")
