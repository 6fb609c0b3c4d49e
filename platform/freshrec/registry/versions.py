"""Model versions in SQL: the one-transaction publish, the current pointer, and lineage reads."""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from freshrec.db.frames import copy_rows
from freshrec.db.partitions import new_partition
from freshrec.db.vectors import copy_vectors
from freshrec.faults import crash_point
from freshrec.ranking.pair_counts import RankedNeighbours, carry_neighbours, count_lineage
from freshrec.training.watermark import Cut


class VersionError(ValueError):
    """A version that does not exist, or a pointer move that cannot be made."""


class UnknownVersion(VersionError):
    """No such version."""


@dataclass
class NewVersion:
    parent_version: int | None
    status: str  # promoted, candidate or rejected
    strategy: str
    base_model: str
    artifact_uri: str
    artifact_sha256: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    feast_project: str
    feature_refs: list[str]
    code_version: str
    device: str
    timings: dict[str, Any]


_INSERT_VERSION = """
INSERT INTO model_versions (version, parent_version, status, strategy, base_model, artifact_uri, artifact_sha256, params,
    metrics, feast_project, feature_refs, code_version, device, timings)
VALUES ((SELECT coalesce(max(version), 0) + 1 FROM model_versions), :parent_version, :status, :strategy, :base_model, :artifact_uri, :artifact_sha256, CAST(:params AS jsonb),
    CAST(:metrics AS jsonb), :feast_project, CAST(:feature_refs AS jsonb), :code_version, :device, CAST(:timings AS jsonb))
RETURNING version"""
_INSERT_WATERMARK = """
INSERT INTO watermarks (version, xid_from, xid_to, row_count, id_sum, event_time_min, event_time_max, excludes_erasures)
VALUES (:version, CAST(:xid_from AS xid8), CAST(:xid_to AS xid8), :row_count, :id_sum, :tmin, :tmax,
        CAST(:excludes AS bigint[]))"""


def _json_safe(value):
    """NaN (a loss over an empty slice) is not JSON: PostgreSQL's jsonb refuses it. It becomes null."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


# ``forget --now`` promises that no version holding the customer's rows serves until the replay. A
# version *held* by such an erasure (asked with ``now``, not replayed yet) learned from its rows:
# - one that was live when it came (``erasure_log.versions``), or
# - one published since from a cut that read them (``erased_since_cut`` in its metrics, below).
# Held versions are published as candidates and never promoted or rolled back to; the replay retires
# them. (``erasure_proof`` is broader: it names every version whose watermark spans the erased
# transactions, even one cut after the rows had gone; the replay trains those again too.)
_HELD_BY_NOW = """
SELECT e.id FROM erasures e
WHERE e.now AND e.state <> 'done'
  AND (EXISTS (SELECT FROM erasure_log l WHERE l.erasure_id = e.id AND CAST(:version AS int) = ANY (l.versions))
       OR EXISTS (SELECT FROM model_versions v WHERE v.version = :version
                  AND v.metrics->'erased_since_cut' @> to_jsonb(e.id)))
ORDER BY 1"""
# Such erasures whose transactions lie in a cut that has lost rows since it was taken: every transaction
# below a cut's horizon had ended, so a cut's range can only lose rows, and only to an erasure. A cut
# taken after the erasure committed never held the rows, and loses none.
_ERASED_FROM_CUT = """
SELECT e.id FROM erasures e
WHERE e.now AND e.state <> 'done'
  AND EXISTS (SELECT FROM erasure_log l WHERE l.erasure_id = e.id
              AND l.xid >= CAST(:xid_from AS xid8) AND l.xid < CAST(:xid_to AS xid8))
  AND (SELECT count(*) FROM interactions
       WHERE ingest_xid >= CAST(:xid_from AS xid8) AND ingest_xid < CAST(:xid_to AS xid8)) < :rows
ORDER BY 1"""


def held_by_now(conn: Connection, version: int | None) -> list[int]:
    """The erasures asked with ``now``, not replayed yet, whose rows ``version`` learned from."""
    if version is None:
        return []
    return list(conn.execute(sa.text(_HELD_BY_NOW), {"version": version}).scalars())


def _erased_since_cut(conn: Connection, cut: Cut, parent: int | None) -> list[int]:
    """What a version from ``parent`` on ``cut`` learned that ``now`` erased while it trained: the
    cut's lost rows, or its parent's. ``forget`` takes the deployments lock, as publish does, so the
    two never pass each other: an erasure that commits first is seen here; a publish that commits
    first is named by the erasure's log (and ``now`` moves the pointer off it)."""
    found = set(conn.execute(sa.text(_ERASED_FROM_CUT), {"xid_from": cut.xid_from, "xid_to": cut.xid_to,
                                                          "rows": cut.row_count}).scalars())
    return sorted(found | set(held_by_now(conn, parent)))


def _refuse_held(conn: Connection, version: int) -> None:
    held = held_by_now(conn, version)
    if held:
        raise VersionError(f"version {version} learned from rows that erasure {', '.join(map(str, held))} removed "
                           "with `now`: it cannot serve; the replay retires it (`freshrec erasures --run`)")


def current_version(conn: Connection) -> int | None:
    """The serving version: the newest deployments row."""
    return conn.execute(sa.text("SELECT version FROM current_version")).scalar()


def publish(engine: Engine, new: NewVersion, cut: Cut, item_ids: list[str], item_vecs: np.ndarray,
            quarantined: pd.DataFrame | None = None, neighbours: RankedNeighbours | None = None,
            excludes_erasures: tuple[int, ...] = ()) -> tuple[int, str]:
    """Version row, watermark, item embeddings, the cut's co-purchase counts (``ranking.pair_counts``)
    and the version's neighbours (those it ranked, and its parent's others carried over), quarantined rows and (if promoted) the pointer move: all or nothing.

    The pointer moves by compare-and-set: only if it still points at the version the update
    started from. If an operator moved it meanwhile (a rollback during training, say), or a customer
    whose rows it learned from was erased with ``now`` while it trained, the new version is published
    as a ``candidate`` and the pointer stays; the metrics record why.
    Returns the version number and the status it was published with.
    """
    with engine.begin() as conn:
        # Numbers without gaps: an identity sequence would burn a number in every killed publish.
        conn.execute(sa.text("LOCK TABLE model_versions IN SHARE ROW EXCLUSIVE MODE"))
        conn.execute(sa.text("LOCK TABLE deployments IN SHARE ROW EXCLUSIVE MODE"))
        found = current_version(conn)
        if new.status == "promoted":  # both checks recorded, whichever keeps it from the pointer
            erased = _erased_since_cut(conn, cut, new.parent_version)
            if erased:
                new = replace(new, status="candidate", metrics={**new.metrics, "erased_since_cut": erased})
            if found != new.parent_version:
                new = replace(new, status="candidate", metrics={**new.metrics, "pointer": {
                    "moved_since_cut": True, "started_from": new.parent_version, "found": found}})
        row = {k: json.dumps(_json_safe(v), default=str) if isinstance(v, (dict, list)) else v
               for k, v in new.__dict__.items()}
        version = conn.execute(sa.text(_INSERT_VERSION), row).scalar_one()
        conn.execute(
            sa.text(_INSERT_WATERMARK),
            {"version": version, "xid_from": cut.xid_from, "xid_to": cut.xid_to, "row_count": cut.row_count,
             "id_sum": cut.id_sum, "tmin": cut.event_time_min, "tmax": cut.event_time_max,
             "excludes": list(excludes_erasures)},
        )
        raw = conn.connection.driver_connection
        _embeddings_partition(conn, raw, version, item_ids, item_vecs)
        count_lineage(conn, version)  # its cut's pairs (and any ancestor's not counted yet)
        if neighbours is not None:
            copy_rows(raw, "COPY item_neighbours (version, item_id, partners, strengths, computed_by) FROM STDIN",
                      ((version, r.item_id, _text_array(r.partners), _float_array(r.strengths), version)
                       for r in neighbours.frame.itertuples(index=False)))
            if neighbours.carried_from is not None:
                carry_neighbours(conn, version, neighbours.carried_from, neighbours.ranked)
        if quarantined is not None and len(quarantined):
            copy_rows(raw, "COPY quarantined_rows (version, interaction_id, reason) FROM STDIN",
                      ((version, int(r.interaction_id), r.reason) for r in quarantined.itertuples(index=False)))
        if new.status == "promoted":
            move_pointer(conn, version, "promote", "updater", "passed the gate")
        crash_point("before-commit")
    return version, new.status


# A version's neighbours are about 100 partners for each of its items: psycopg adapts a list element by
# element in Python, 5.6 s of a publish at 10x the bundled shop. Array literals built here: about 2 s.
def _text_array(values) -> str:
    """A PostgreSQL text[] literal, every element quoted (ids may hold commas, braces, quotes)."""
    return "{" + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "}"


def _float_array(values) -> str:
    """A float4[] literal; nine significant digits give a float32 back exactly."""
    return "{" + ",".join(map("{:.9g}".format, values)) + "}"


def _embeddings_partition(conn: Connection, raw, version: int, item_ids: list[str], item_vecs: np.ndarray) -> None:
    """The version's own partition of ``item_embeddings`` (``db.partitions``; the number is ours:
    model_versions is locked)."""
    with new_partition(conn, "item_embeddings", version, key="version, item_id") as table:
        copy_vectors(raw, f"COPY {table} (version, item_id, embedding) FROM STDIN (FORMAT BINARY)",
                     ["integer", "text", "vector"], zip([version] * len(item_ids), item_ids, item_vecs))


def move_pointer(conn: Connection, version: int, action: str, actor: str, reason: str) -> None:
    # Serialise pointer moves: two promotions at once must not both read the same "previous".
    conn.execute(sa.text("LOCK TABLE deployments IN SHARE ROW EXCLUSIVE MODE"))
    conn.execute(
        sa.text(
            "INSERT INTO deployments (version, previous_version, action, actor, reason) "
            "VALUES (:v, (SELECT version FROM current_version), :action, :actor, :reason)"
        ),
        {"v": version, "action": action, "actor": actor, "reason": reason},
    )
    conn.execute(sa.text("NOTIFY freshrec_deployments"))


def promote(engine: Engine, version: int, actor: str = "cli", reason: str = "manual promotion") -> None:
    with engine.begin() as conn:
        # The lock first: "already current" must be read as of this move, not before a concurrent one.
        conn.execute(sa.text("LOCK TABLE deployments IN SHARE ROW EXCLUSIVE MODE"))
        status = conn.execute(sa.text("SELECT status FROM model_versions WHERE version = :v"), {"v": version}).scalar()
        if status is None:
            raise UnknownVersion(f"version {version} does not exist")
        if status == "erased":
            raise VersionError(f"version {version} was erased: it learned from rows a customer's erasure removed "
                               "(`freshrec erasures` names the version that replaced it)")
        if current_version(conn) == version:
            raise VersionError(f"version {version} is already current")
        _refuse_held(conn, version)
        conn.execute(sa.text("UPDATE model_versions SET status = 'promoted' WHERE version = :v"), {"v": version})
        move_pointer(conn, version, "promote", actor, reason)


def promotion_stack(conn: Connection) -> list[int]:
    """The versions the pointer was promoted to, oldest first, less those rolled back: its history.

    An erasure's move (``erase``) counts as a promotion of the version it moved to; erased versions
    leave the history (nothing may roll back to them)."""
    stack: list[int] = []
    rows = conn.execute(sa.text("SELECT d.action, d.version, v.status FROM deployments d "
                                "JOIN model_versions v USING (version) ORDER BY d.id"))
    for action, version, status in rows:
        if action in ("promote", "erase"):
            stack.append(version)
        elif stack:
            stack.pop()
    erased = {r[0] for r in conn.execute(sa.text("SELECT version FROM model_versions WHERE status = 'erased'"))}
    kept = [v for v in stack if v not in erased]
    # An erasure that moved back to an older version leaves it twice in a row: once is its history.
    return [v for i, v in enumerate(kept) if i == 0 or kept[i - 1] != v]


def rollback(engine: Engine, actor: str = "cli", reason: str = "manual rollback") -> int:
    """Undo the newest promotion still in effect: one step back through the history per call.

    Three rollbacks after promotions to 1, 2, 3 and 4 serve 3, then 2, then 1; they never toggle.
    """
    with engine.begin() as conn:
        conn.execute(sa.text("LOCK TABLE deployments IN SHARE ROW EXCLUSIVE MODE"))
        stack = promotion_stack(conn)
        if len(stack) < 2:
            raise VersionError("there is no earlier version to roll back to")
        _refuse_held(conn, stack[-2])
        move_pointer(conn, stack[-2], "rollback", actor, reason)
    return stack[-2]


def history(conn: Connection) -> list[dict]:
    """Every move of the pointer, oldest first."""
    sql = """SELECT id, action, version, previous_version AS previous, actor, reason, created_at AS at
             FROM deployments ORDER BY id"""
    return [dict(r) for r in conn.execute(sa.text(sql)).mappings()]


def list_versions(conn: Connection) -> list[dict]:
    sql = """SELECT v.version, v.parent_version AS parent, v.status, v.strategy, w.row_count AS rows,
                    w.xid_from::text AS xid_from, w.xid_to::text AS xid_to,
                    (v.version = (SELECT version FROM current_version)) AS current, v.created_at
             FROM model_versions v LEFT JOIN watermarks w USING (version) ORDER BY v.version"""
    return [dict(r) for r in conn.execute(sa.text(sql)).mappings()]


def chain(conn: Connection, version: int) -> list[dict]:
    """The version and its ancestors, oldest first, each with its watermark and artifact."""
    sql = """SELECT v.version, v.parent_version AS parent, v.status, v.strategy, v.base_model, v.artifact_uri,
                    v.artifact_sha256, v.params, v.metrics, v.feature_refs, v.feast_project, v.code_version,
                    v.device, v.timings, w.xid_from::text AS xid_from, w.xid_to::text AS xid_to,
                    w.row_count, w.event_time_min, w.event_time_max, a.depth
             FROM version_ancestry a JOIN model_versions v ON v.version = a.ancestor
             LEFT JOIN watermarks w ON w.version = v.version
             WHERE a.version = :v ORDER BY a.depth DESC"""
    rows = [dict(r) for r in conn.execute(sa.text(sql), {"v": version}).mappings()]
    if not rows:
        raise UnknownVersion(f"version {version} does not exist")
    return rows
