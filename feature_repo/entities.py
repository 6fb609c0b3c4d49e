"""The two entities freshrec ranks between."""
from feast import Entity, ValueType

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING, description="a shopper")
item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.STRING, description="a catalog item")
