"""``freshrec forget``: a customer's data goes in one transaction; the models that saw it follow.

The data transaction, all or nothing (a crash anywhere in it leaves the customer as they were):

- records the request (``erasures``) and its log (``erasure_log``: each transaction that wrote the
  customer's rows, how many, and which live versions learned from it; no personal data);
- writes tombstones (keyed hashes of the user id and of every erased event key): a reload of the
  same source file skips those rows;
- drops the customer's profile states from the encoder-state cache, and their quarantined rows;
- subtracts their baskets from every version's co-purchase counts (``ranking.pair_counts``);
- deletes their interactions, profile rows and user row;
- rebuilds the daily aggregates (popularity, buyers) of the items they touched, without them;
- with ``now``, moves the pointer to the newest version that never saw them.

After the commit their profile leaves Feast's online store, and the aggregates they touched are
written online again. The versions that learned from them keep serving (unless ``now``) until the
replay (``erasure.replay``) has trained their successors without the rows.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from freshrec.config import Settings
from freshrec.erasure.keys import erasure_key, keyed_hashes
from freshrec.faults import crash_point
from freshrec.ingest.aggregates import refresh_item_stats
from freshrec.models.state_cache import text_hash
from freshrec.ranking.pair_counts import subtract_users
from freshrec.registry.versions import current_version, move_pointer

log = logging.getLogger("freshrec.erasure")


class ErasureError(ValueError):
    """A request that cannot be made: names the field."""


class AlreadyErased(ErasureError):
    """Every customer asked for is erased already (their online rows are deleted again: a repair)."""

    def __init__(self, message: str, users: list[str]):
        super().__init__(message)
        self.users = users


class ErasureConflict(ErasureError):
    """New rows of the customer committed while the erasure ran: nothing was erased; ask again."""


@dataclass
class Request:
    erasure_id: int
    users: int
    rows: int
    versions: list[int]  # live versions that learned from the rows (directly or through an ancestor)
    deadline: datetime
    serving: int | None  # the version serving after the request (``now`` may have moved it)
    message: str


# Every live version whose lineage holds a range containing the transaction (not replayed without it).
_LOG = """
INSERT INTO erasure_log (erasure_id, xid, rows, versions)
SELECT :e, x.xid, x.n, coalesce(array(
    SELECT DISTINCT a.version FROM watermarks w
    JOIN version_ancestry a ON a.ancestor = w.version
    JOIN model_versions v ON v.version = a.version AND v.status <> 'erased'
    WHERE x.xid >= w.xid_from AND x.xid < w.xid_to ORDER BY a.version), '{}')
FROM (SELECT ingest_xid AS xid, count(*) AS n FROM interactions WHERE user_id = ANY(:u) GROUP BY ingest_xid) x"""
_REQUEST = """
INSERT INTO erasures (state, users, rows, now, deadline, requested_by)
VALUES ('pending', :users, :rows, :now, now() + make_interval(secs => :batch), :by) RETURNING id, deadline"""
_TAINTED = "SELECT DISTINCT unnest(versions) FROM erasure_log WHERE erasure_id = :e"


def _check(conn: Connection, user_ids: list[str], key: bytes) -> list[str]:
    users = sorted({u.strip() for u in user_ids if u and u.strip()})
    if not users:
        raise ErasureError("user_id: give at least one customer id")
    known = {r[0] for r in conn.execute(sa.text("SELECT user_id FROM users WHERE user_id = ANY(:u)"), {"u": users})}
    unknown = [u for u in users if u not in known]
    if unknown:
        hashes = keyed_hashes(key, "user", unknown)
        earlier = dict(conn.execute(sa.text(
            "SELECT key_hash, erasure_id FROM tombstones WHERE kind = 'user' AND key_hash = ANY(:h)"), {"h": hashes}).all())
        first = earlier.get(hashes[0])
        why = f"already erased (erasure {first})" if first else "unknown customer"
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        message = f"user_id: {unknown[0]!r}: {why}{more}; nothing was erased"
        if len(unknown) == len(users) and len(earlier) == len(hashes):
            raise AlreadyErased(message, users)
        raise ErasureError(message)
    return users


def newest_clean(conn: Connection, version: int | None, tainted: set[int]) -> int | None:
    """The newest version in ``version``'s chain (itself included) that is not tainted."""
    if version is None:
        return None
    rows = conn.execute(sa.text("SELECT ancestor FROM version_ancestry WHERE version = :v ORDER BY depth"), {"v": version})
    return next((r[0] for r in rows if r[0] not in tainted), None)


def forget(engine: Engine, settings: Settings, user_ids: list[str], now: bool = False, requested_by: str = "cli",
           store=None) -> Request:
    """Erase these customers' data in one transaction and queue the replay of the versions that saw them."""
    key = erasure_key(settings)
    try:
        return _forget(engine, settings, user_ids, key, now, requested_by, store)
    except AlreadyErased as err:
        # Asked again: their online rows go again (idempotent), a repair for an online delete that a
        # crash or a failed call skipped after the data transaction committed.
        if store is not None:
            forget_online(engine, store, err.users, [])
            raise AlreadyErased(f"{err}; their online profiles were deleted again", err.users) from None
        raise
    except sa.exc.IntegrityError:
        raise ErasureConflict("user_id: new rows of theirs were committed while the erasure ran; nothing was "
                              "erased; ask again") from None


def _forget(engine: Engine, settings: Settings, user_ids: list[str], key: bytes, now: bool, requested_by: str,
            store) -> Request:
    from freshrec.features import lock_profiles

    with engine.begin() as conn:
        users = _check(conn, user_ids, key)
        if now:  # a publish takes this lock too: it commits before the log below names the live versions
            # (and ``now`` moves off it), or it sees this erasure (``registry.versions.publish``)
            conn.execute(sa.text("LOCK TABLE deployments IN SHARE ROW EXCLUSIVE MODE"))
        lock_profiles(conn, users)  # no profile push for them runs across this transaction
        rows = conn.execute(sa.text("SELECT id, event_key, item_id, event_time, query FROM interactions "
                                    "WHERE user_id = ANY(:u)"), {"u": users}).all()
        erasure_id, deadline = conn.execute(sa.text(_REQUEST), {
            "users": len(users), "rows": len(rows), "now": now, "batch": settings.erasure.batch_seconds,
            "by": requested_by}).one()
        conn.execute(sa.text(_LOG), {"e": erasure_id, "u": users})
        tainted = {r[0] for r in conn.execute(sa.text(_TAINTED), {"e": erasure_id})}
        tombstones = [("user", h) for h in keyed_hashes(key, "user", users)]
        tombstones += [("event", h) for h in keyed_hashes(key, "event", [r.event_key for r in rows])]
        conn.execute(sa.text("INSERT INTO tombstones (kind, key_hash, erasure_id) VALUES (:k, :h, :e) ON CONFLICT DO NOTHING"),
                     [{"k": k, "h": h, "e": erasure_id} for k, h in tombstones])
        # Their states in the encoder-state cache: profile texts, and the queries they typed.
        texts = {r[0] for r in conn.execute(
            sa.text("SELECT DISTINCT profile_text FROM user_profiles WHERE user_id = ANY(:u)"), {"u": users})}
        texts |= {r.query for r in rows if r.query}
        conn.execute(sa.text("DELETE FROM encoder_states WHERE text_sha256 = ANY(:h)"), {"h": [text_hash(t) for t in texts]})
        ids = [r.id for r in rows]
        subtract_users(conn, users)  # their baskets out of every version's co-purchase counts, before the rows go
        conn.execute(sa.text("DELETE FROM quarantined_rows WHERE interaction_id = ANY(:ids)"), {"ids": ids})
        # The rows read above, by id: a row committed since then is not deleted untombstoned; it makes
        # the user row's delete fail (a foreign key), and the whole erasure with it (ErasureConflict).
        conn.execute(sa.text("DELETE FROM interactions WHERE id = ANY(:ids)"), {"ids": ids})
        conn.execute(sa.text("DELETE FROM user_profiles WHERE user_id = ANY(:u)"), {"u": users})
        conn.execute(sa.text("DELETE FROM users WHERE user_id = ANY(:u)"), {"u": users})
        items = sorted({r.item_id for r in rows})
        if rows:  # their contribution to popularity and buyers, from their first day on
            refresh_item_stats(conn, min(r.event_time for r in rows).date(), items)
        serving = current_version(conn)
        tainted_head = serving if serving in tainted else None
        message = f"erasure {erasure_id}: {len(rows):,} rows of {len(users)} customers erased; "
        if serving in tainted and now:
            clean = newest_clean(conn, serving, tainted)
            if clean is not None:
                move_pointer(conn, clean, "erase", "erasure",
                             f"erasure {erasure_id} (now): version {serving} learned from erased rows")
                message += f"version {clean}, which never saw them, serves at once; "
                serving = clean
            else:
                message += "no version serving now is free of them (the first saw them); "
        if serving in tainted:
            message += f"version {serving} serves until the replay (deadline {deadline:%Y-%m-%d %H:%M:%S %Z})"
        else:
            message += f"the serving version ({serving}) never learned from them"
        conn.execute(sa.text("UPDATE erasures SET serving_version = :s, tainted_head = :h, message = :m WHERE id = :e"),
                     {"s": serving, "h": tainted_head, "m": message, "e": erasure_id})
        crash_point("erasure-rows-deleted")  # the last step before the commit: everything above rolls back
    if store is not None:
        forget_online(engine, store, users, items)
    return Request(erasure_id, len(users), len(rows), sorted(tainted), deadline, serving, message)


def forget_online(engine: Engine, store, users: list[str], items: list[str]) -> None:
    """Their profiles out of Feast's online store; the aggregates of their items online again, without them."""
    from freshrec.features import delete_online_users, push_item_stats

    delete_online_users(engine, store, users)
    push_item_stats(engine, store, items)
