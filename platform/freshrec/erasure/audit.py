"""Which versions saw a customer, what each erasure did, and the proof that no live version holds an
erased row: each one SQL query, the ones the README's audit recipes print."""
from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

# The live versions that learned from a customer's rows, directly (depth 0) or through an ancestor.
_SAW = """
SELECT c.version, v.status, (c.version = (SELECT version FROM current_version)) AS current,
       count(*) AS rows, count(*) FILTER (WHERE c.depth = 0) AS rows_direct
FROM version_consumed_rows c JOIN model_versions v USING (version)
WHERE c.user_id = :u AND v.status <> 'erased'
GROUP BY c.version, v.status ORDER BY c.version"""
_ERASURES = """
SELECT id, state, users, rows, now, requested_by, requested_at, deadline, finished_at, clean_version,
       serving_version, replay, message FROM erasures WHERE (CAST(:e AS bigint) IS NULL OR id = :e) ORDER BY id"""
_PROOF = "SELECT version, erasure_id, consumed_by, xid::text AS xid FROM erasure_proof " \
         "WHERE (CAST(:e AS bigint[]) IS NULL OR erasure_id = ANY(:e)) ORDER BY version, erasure_id, xid"


def versions_that_saw(conn: Connection, user_id: str) -> list[dict]:
    return [dict(r) for r in conn.execute(sa.text(_SAW), {"u": user_id}).mappings()]


def erasure_rows(conn: Connection, erasure_id: int | None = None) -> list[dict]:
    return [dict(r) for r in conn.execute(sa.text(_ERASURES), {"e": erasure_id}).mappings()]


def proof_rows(conn: Connection, erasure_ids: list[int] | None = None) -> list[dict]:
    """Live versions still holding an erased row (empty once every erasure is done)."""
    return [dict(r) for r in conn.execute(sa.text(_PROOF), {"e": erasure_ids}).mappings()]
