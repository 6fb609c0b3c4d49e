"""Taking erased customers (and erased versions) out of Feast's online store.

Feast has no call that deletes one entity's rows from an online store. Its PostgreSQL online store
keeps a table per feature view (``<project>_<view>``, in the online schema) keyed by the entity key
as Feast serialises it; freshrec deletes those keys there, serialised by Feast's own function, in
one statement. The offline side needs nothing: Feast's offline reads are SQL over freshrec's tables,
from which the erasure deleted the rows.
"""
from __future__ import annotations

import pandas as pd
import sqlalchemy as sa

from freshrec.features.store import ITEM_STATS, _online, materialize_lock


def _table(store, view: str) -> str:
    from feast.infra.online_stores.helpers import compute_table_id

    config = store.config
    name = compute_table_id(config.project, store.get_feature_view(view),
                            config.registry.enable_online_feature_view_versioning)
    return f'"{config.online_store.db_schema}"."{name}"'


def _keys(store, rows: list[dict]) -> list[bytes]:
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    def value(v) -> Value:
        return Value(int64_val=v) if isinstance(v, int) else Value(string_val=str(v))

    version = store.config.entity_key_serialization_version
    return [serialize_entity_key(EntityKey(join_keys=list(r), entity_values=[value(v) for v in r.values()]), version)
            for r in rows]


def _delete(engine, store, view: str, rows: list[dict]) -> int:
    if not rows:
        return 0
    table = _table(store, view)
    with engine.begin() as conn:
        if not conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": table}).scalar():
            return 0  # never materialized: nothing online
        return conn.execute(sa.text(f"DELETE FROM {table} WHERE entity_key = ANY(:k)"),
                            {"k": _keys(store, rows)}).rowcount


def delete_online_users(engine, store, user_ids: list[str]) -> int:
    """Their profile rows (text, activity counts) out of the online store; returns feature rows deleted.

    Waits for a running materialization: it may have read their profile before the erasure."""
    with materialize_lock(engine):
        return _delete(engine, store, "user_text", [{"user_id": u} for u in user_ids])


def neighbour_keys(engine, versions: list[int]) -> list[dict]:
    """The online keys of the co-purchase lists these versions ranked, read off ``item_neighbours``
    (before its rows go). The lists a version carried over stay online under the ancestor that ranked
    them (a version is erased with its descendants, never alone above them)."""
    with engine.connect() as conn:
        return [{"model_version": int(v), "item_id": i} for v, i in conn.execute(sa.text(
            "SELECT version, item_id FROM item_neighbours WHERE version = ANY(:v) AND computed_by = version"),
            {"v": list(versions)})]


def delete_online_neighbours(engine, store, keys: list[dict]) -> int:
    """Erased versions' co-purchase neighbours (``neighbour_keys``) out of the online store."""
    return _delete(engine, store, "item_neighbours", keys)


_NEWEST_STATS = """
SELECT i.item_id, coalesce(s.events_7d, 0) AS events_7d, coalesce(s.events_28d, 0) AS events_28d,
       coalesce(s.buyers, 0) AS buyers, coalesce(s.repeat_buyers, 0) AS repeat_buyers,
       coalesce(s.valid_from, now()) AS valid_from
FROM unnest(CAST(:items AS text[])) AS i(item_id)
LEFT JOIN LATERAL (SELECT * FROM item_daily_stats d WHERE d.item_id = i.item_id
                   ORDER BY d.valid_from DESC LIMIT 1) s ON true"""


def push_item_stats(engine, store, item_ids: list[str]) -> int:
    """These items' newest aggregates online now (zeros where no row is left): the online write
    replaces whatever was there, so a count that included an erased customer does not linger."""
    if not item_ids:
        return 0
    with engine.connect() as conn:
        frame = pd.read_sql(sa.text(_NEWEST_STATS), conn, params={"items": sorted(set(item_ids))})
    columns = ["item_id", *(f.split(":")[1] for f in ITEM_STATS), "valid_from"]
    _online(store, lambda: store.write_to_online_store("item_stats", frame[columns]))
    return len(frame)
