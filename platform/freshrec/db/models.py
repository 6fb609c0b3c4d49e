"""The SQL state, as a typed SQLAlchemy 2.0 ORM. Migrations in ``migrations/`` build it."""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TSVECTOR
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import UserDefinedType

# Fixed by the schema (``vector(128)``, and any vector index built on it). Changing it is a migration.
EMBEDDING_DIM = 128
EVENT_TYPES = ("view", "click", "cart", "purchase")
# erased: trained on rows a customer's erasure removed; its artifacts and vectors are deleted, its lineage
# stays, and ``replaced_by`` names the version replayed without those rows.
VERSION_STATUSES = ("training", "candidate", "promoted", "rejected", "erased")
DEPLOYMENT_ACTIONS = ("promote", "rollback", "erase")
ERASURE_STATES = ("pending", "replaying", "done", "failed")
STRATEGIES = ("head", "lora", "full")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class XID8(UserDefinedType):
    """PostgreSQL's 64-bit transaction id, which never wraps around."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "xid8"


def _written() -> Mapped[Any]:
    """The transaction that wrote the row: materialization cursors cut by it, like the watermark."""
    return mapped_column(XID8, server_default=sa.text("pg_current_xact_id()"), index=True)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


def _created() -> Mapped[datetime]:
    return mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False)


class User(Base):
    __tablename__ = "users"
    user_id: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    country: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = _created()


# The full-text document of an item: generated in its row, so it is searchable once it commits.
SEARCH_DOC = ("to_tsvector('english', coalesce(title, '') || ' ' || coalesce(category, '') || ' ' || "
              "coalesce(description, ''))")


class Item(Base):
    __tablename__ = "items"
    __table_args__ = (sa.Index("ix_items_search_doc", "search_doc", postgresql_using="gin"),)
    item_id: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    title: Mapped[str] = mapped_column(sa.Text)
    category: Mapped[str | None] = mapped_column(sa.Text)
    description: Mapped[str | None] = mapped_column(sa.Text)
    price: Mapped[Decimal | None] = mapped_column(sa.Numeric(12, 2))
    # Event-time clock: since when this text describes the item (Feast's point-in-time key).
    valid_from: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    updated_at: Mapped[datetime] = _created()
    written_xid: Mapped[Any] = _written()
    search_doc: Mapped[Any] = mapped_column(TSVECTOR, sa.Computed(SEARCH_DOC, persisted=True))


class ItemText(Base):
    """One version of an item's text: what the item was called from ``valid_from`` on.

    Feast's ``item_text`` view reads this history, so a training row at time t gets the text as
    of t, not today's; ``items`` keeps the newest version for display and search.
    """

    __tablename__ = "item_texts"
    item_id: Mapped[str] = mapped_column(sa.ForeignKey("items.item_id"), primary_key=True)
    valid_from: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), primary_key=True)
    title: Mapped[str] = mapped_column(sa.Text)
    category: Mapped[str | None] = mapped_column(sa.Text)
    description: Mapped[str | None] = mapped_column(sa.Text)
    written_xid: Mapped[Any] = _written()


class Interaction(Base):
    __tablename__ = "interactions"
    __table_args__ = (
        sa.CheckConstraint(f"event_type IN {EVENT_TYPES}", name="event_type"),
        sa.CheckConstraint("quantity > 0", name="quantity_positive"),
        sa.Index("ix_interactions_ingest_xid", "ingest_xid"),
        sa.Index("ix_interactions_user_time", "user_id", "event_time"),
        sa.Index("ix_interactions_event_time", "event_time"),
    )
    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    event_key: Mapped[str] = mapped_column(sa.Text, unique=True)
    user_id: Mapped[str] = mapped_column(sa.ForeignKey("users.user_id"))
    item_id: Mapped[str] = mapped_column(sa.ForeignKey("items.item_id"))
    event_type: Mapped[str] = mapped_column(sa.Text)
    quantity: Mapped[int] = mapped_column(sa.Integer, server_default="1")
    query: Mapped[str | None] = mapped_column(sa.Text)
    event_time: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    ingest_time: Mapped[datetime] = _created()
    # The inserting transaction: the watermark cuts by it (see training/watermark.py).
    ingest_xid: Mapped[Any] = mapped_column(XID8, server_default=sa.text("pg_current_xact_id()"))


class UserProfile(Base):
    """One row per (user, moment): the profile text valid from that moment on (Feast source)."""

    __tablename__ = "user_profiles"
    user_id: Mapped[str] = mapped_column(sa.ForeignKey("users.user_id"), primary_key=True)
    valid_from: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), primary_key=True)
    profile_text: Mapped[str] = mapped_column(sa.Text)
    n_events: Mapped[int] = mapped_column(sa.Integer)
    # Distinct moments (baskets) so far: how active the user is, a ranker feature served by Feast.
    n_baskets: Mapped[int] = mapped_column(sa.Integer, server_default="0")
    ingested_at: Mapped[datetime] = _created()
    written_xid: Mapped[Any] = _written()


class ItemDailyStats(Base):
    """Per item and day: trailing interaction counts and buyers, valid from the end of that day.

    The Feast source of ``item_stats``. A row for day D is stamped D+1 00:00 UTC, so a
    point-in-time read at t sees only events of days before t's day: strictly before t.
    ``freshrec.ingest.aggregates`` rebuilds it from a day onward after each load.
    """

    __tablename__ = "item_daily_stats"
    __table_args__ = (sa.Index("ix_item_daily_stats_valid_from", "valid_from"),)
    item_id: Mapped[str] = mapped_column(sa.ForeignKey("items.item_id"), primary_key=True)
    valid_from: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), primary_key=True)
    events_7d: Mapped[int] = mapped_column(sa.Integer)
    events_28d: Mapped[int] = mapped_column(sa.Integer)
    buyers: Mapped[int] = mapped_column(sa.Integer)  # distinct users who ever bought it
    repeat_buyers: Mapped[int] = mapped_column(sa.Integer)  # ... in two or more baskets
    refreshed_at: Mapped[datetime] = _created()
    written_xid: Mapped[Any] = _written()


# deferred: the gate had too little evidence; no version was made and the rows wait for more.
UPDATE_RUN_STATUSES = ("running", "created", "no-new-rows", "locked", "failed", "abandoned", "deferred")


class UpdateRun(Base):
    """One run of the updater, whatever came of it: what `freshrec status` and /metrics report."""

    __tablename__ = "update_runs"
    __table_args__ = (sa.CheckConstraint(f"status IN {UPDATE_RUN_STATUSES}", name="status"),)
    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    started_at: Mapped[datetime] = _created()
    finished_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    status: Mapped[str] = mapped_column(sa.Text)
    version: Mapped[int | None] = mapped_column(sa.ForeignKey("model_versions.version"))
    rows: Mapped[int | None] = mapped_column(sa.BigInteger)  # rows in its cut
    message: Mapped[str] = mapped_column(sa.Text, server_default="")
    trigger: Mapped[str] = mapped_column(sa.Text, server_default="cli")  # cli, watch, bench, api
    host: Mapped[str] = mapped_column(sa.Text, server_default="")
    pid: Mapped[int | None] = mapped_column(sa.Integer)


class FeatureCursor(Base):
    """How far a derived table has caught up with ``interactions``, as a transaction horizon."""

    __tablename__ = "feature_cursors"
    name: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    xid_horizon: Mapped[Any] = mapped_column(XID8)
    updated_at: Mapped[datetime] = _created()


class EncoderState(Base):
    """The frozen encoder's pooled state of one text: computed once, shared by updater, bench and API.

    Keyed by the encoder's weights digest (plus precision) and the text's sha256, so a ``head``
    version, which keeps its parent's encoder, never encodes a text twice.
    """

    __tablename__ = "encoder_states"
    __table_args__ = (sa.Index("ix_encoder_states_last_used_at", "last_used_at"),)
    encoder: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    max_tokens: Mapped[int] = mapped_column(sa.SmallInteger, primary_key=True)
    text_sha256: Mapped[bytes] = mapped_column(sa.LargeBinary, primary_key=True)
    state: Mapped[bytes] = mapped_column(sa.LargeBinary)  # float32, little-endian
    created_at: Mapped[datetime] = _created()
    last_used_at: Mapped[datetime] = _created()


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (
        sa.CheckConstraint(f"status IN {VERSION_STATUSES}", name="status"),
        sa.CheckConstraint(f"strategy IN {STRATEGIES}", name="strategy"),
    )
    version: Mapped[int] = mapped_column(sa.Integer, sa.Identity(), primary_key=True)
    parent_version: Mapped[int | None] = mapped_column(sa.ForeignKey("model_versions.version"))
    status: Mapped[str] = mapped_column(sa.Text)
    strategy: Mapped[str] = mapped_column(sa.Text)
    base_model: Mapped[str] = mapped_column(sa.Text)
    artifact_uri: Mapped[str] = mapped_column(sa.Text)
    artifact_sha256: Mapped[str] = mapped_column(sa.String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSONB)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONB)
    feast_project: Mapped[str] = mapped_column(sa.Text)
    feature_refs: Mapped[list[str]] = mapped_column(JSONB)
    code_version: Mapped[str] = mapped_column(sa.Text)
    device: Mapped[str] = mapped_column(sa.Text)
    timings: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _created()
    replaced_by: Mapped[int | None] = mapped_column(sa.ForeignKey("model_versions.version"))


class Watermark(Base):
    """The consumed cut of a version: rows with xid_from <= ingest_xid < xid_to."""

    __tablename__ = "watermarks"
    __table_args__ = (sa.CheckConstraint("xid_from <= xid_to", name="ordered"),)
    version: Mapped[int] = mapped_column(sa.ForeignKey("model_versions.version"), primary_key=True)
    xid_from: Mapped[Any] = mapped_column(XID8)
    xid_to: Mapped[Any] = mapped_column(XID8)
    # What the updater actually read, recorded at consumption time. Audits compare these with
    # what the range holds now: a row that committed late into a consumed range changes them.
    row_count: Mapped[int] = mapped_column(sa.BigInteger)
    id_sum: Mapped[Decimal] = mapped_column(sa.Numeric(38, 0))
    event_time_min: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    event_time_max: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    created_at: Mapped[datetime] = _created()
    # A replayed version's cut: the same range, without the rows these erasures removed.
    excludes_erasures: Mapped[list[int]] = mapped_column(ARRAY(sa.BigInteger), server_default=sa.text("'{}'::bigint[]"))


class QuarantinedRow(Base):
    """A row a version consumed (it is inside its watermark) but could not train on, and why.

    One bad row must never stop the updater: it is set aside here, counted in the version's metrics,
    and shown by the lineage views (``version_consumed_rows.skipped_reason``).
    """

    __tablename__ = "quarantined_rows"
    version: Mapped[int] = mapped_column(sa.ForeignKey("model_versions.version"), primary_key=True)
    interaction_id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    reason: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = _created()


class ItemNeighbours(Base):
    """A version's strongest co-purchase partners of one item, P(partner | item), from the rows its
    lineage consumed. Written in the publish transaction; served from Feast's online store (the
    ``item_neighbours`` view, keyed by version and item), so a rollback serves its own version's.

    A child ranks again only the items of its cut's baskets (no other item's counts changed) and
    carries its parent's other lists over: ``computed_by`` names the version that ranked the list,
    and the online key of a list is that version's."""

    __tablename__ = "item_neighbours"
    version: Mapped[int] = mapped_column(sa.ForeignKey("model_versions.version"), primary_key=True)
    item_id: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    partners: Mapped[list[str]] = mapped_column(ARRAY(sa.Text))
    strengths: Mapped[list[float]] = mapped_column(ARRAY(sa.REAL))
    computed_by: Mapped[int] = mapped_column(sa.Integer)
    valid_from: Mapped[datetime] = _created()
    written_xid: Mapped[Any] = _written()


class CoPurchaseCount(Base):
    """What one version's cut added to how often two items share a basket (each unordered pair once,
    ``item_a <= item_b``, and each item with itself: the baskets holding it; the view
    ``copurchase_pairs`` reads both ways). A lineage's counts are the sum over its versions
    (``freshrec.ranking.pair_counts``); an erasure subtracts a customer's baskets. One LIST partition
    per version (``copurchase_counts_v<N>``, made by the publish): a version's counts are written
    once and dropped whole."""

    __tablename__ = "copurchase_counts"
    __table_args__ = (sa.CheckConstraint("item_a <= item_b", name="unordered"),
                      {"postgresql_partition_by": "LIST (version)"})
    version: Mapped[int] = mapped_column(sa.ForeignKey("model_versions.version"), primary_key=True)
    item_a: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    item_b: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    baskets: Mapped[int] = mapped_column(sa.Integer)


class CoPurchaseCut(Base):
    """A version whose cut is counted in ``copurchase_counts`` (one published before that table is
    counted when a descendant first needs it)."""

    __tablename__ = "copurchase_cuts"
    version: Mapped[int] = mapped_column(sa.ForeignKey("model_versions.version"), primary_key=True)
    pair_rows: Mapped[int] = mapped_column(sa.BigInteger)
    counted_at: Mapped[datetime] = _created()


class ItemEmbedding(Base):
    """A version's item vectors, one LIST partition per version (``item_embeddings_v<N>``, made by the
    publish): dropping a version's vectors drops its partition. No vector index: the API reads a
    version's vectors whole and ranks them in process, and an index nobody queried cost every publish
    a build over the whole catalog (migration e2b4d6f8a0c3)."""

    __tablename__ = "item_embeddings"
    __table_args__ = ({"postgresql_partition_by": "LIST (version)"},)
    version: Mapped[int] = mapped_column(sa.ForeignKey("model_versions.version"), primary_key=True)
    item_id: Mapped[str] = mapped_column(sa.ForeignKey("items.item_id"), primary_key=True)
    embedding: Mapped[Any] = mapped_column(Vector(EMBEDDING_DIM))


class ItemSearchVector(Base):
    """The search side's item vector: the pre-trained encoder's embedding of the item's current text.

    Search keeps the base encoder's semantic space on the item side (only the query side fine-tunes),
    so these vectors belong to no version: written once per item text, when the item is committed,
    and at the encoder's own width (hence no fixed dimension here).
    """

    __tablename__ = "item_search_vectors"
    encoder: Mapped[str] = mapped_column(sa.Text, primary_key=True)  # the base encoder's digest
    item_id: Mapped[str] = mapped_column(sa.ForeignKey("items.item_id"), primary_key=True)
    text_sha256: Mapped[bytes] = mapped_column(sa.LargeBinary)
    embedding: Mapped[Any] = mapped_column(Vector())
    written_xid: Mapped[Any] = _written()


class Deployment(Base):
    """History of the ``current`` pointer; its newest row is the serving version."""

    __tablename__ = "deployments"
    __table_args__ = (sa.CheckConstraint(f"action IN {DEPLOYMENT_ACTIONS}", name="action"),)
    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    version: Mapped[int] = mapped_column(sa.ForeignKey("model_versions.version"))
    previous_version: Mapped[int | None] = mapped_column(sa.ForeignKey("model_versions.version"))
    action: Mapped[str] = mapped_column(sa.Text)
    actor: Mapped[str] = mapped_column(sa.Text)
    reason: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = _created()


class Erasure(Base):
    """A request to forget customers: their rows went in one transaction; the versions that saw them
    are replayed without them (``state``: pending until the replay, then done or failed)."""

    __tablename__ = "erasures"
    __table_args__ = (sa.CheckConstraint(f"state IN {ERASURE_STATES}", name="state"),)
    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    state: Mapped[str] = mapped_column(sa.Text)
    users: Mapped[int] = mapped_column(sa.Integer)
    rows: Mapped[int] = mapped_column(sa.BigInteger)
    now: Mapped[bool] = mapped_column(sa.Boolean, server_default=sa.text("false"))
    requested_at: Mapped[datetime] = _created()
    deadline: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    clean_version: Mapped[int | None] = mapped_column(sa.Integer)
    serving_version: Mapped[int | None] = mapped_column(sa.Integer)
    # The version that served, and learned from the rows, when the request came: the chain the replay
    # trains again, even after ``now`` moved the pointer back to a clean ancestor.
    tainted_head: Mapped[int | None] = mapped_column(sa.Integer)
    replay: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=sa.text("'{}'::jsonb"))
    message: Mapped[str] = mapped_column(sa.Text, server_default="")
    requested_by: Mapped[str] = mapped_column(sa.Text, server_default="cli")  # cli, api


class ErasureLog(Base):
    """One transaction that wrote rows an erasure removed: how many, and which versions' watermarks
    held it when the request came. No personal data: transaction ids, counts, version numbers."""

    __tablename__ = "erasure_log"
    erasure_id: Mapped[int] = mapped_column(sa.ForeignKey("erasures.id"), primary_key=True)
    xid: Mapped[Any] = mapped_column(XID8, primary_key=True)
    rows: Mapped[int] = mapped_column(sa.Integer)
    versions: Mapped[list[int]] = mapped_column(ARRAY(sa.Integer), server_default=sa.text("'{}'::integer[]"))


class Tombstone(Base):
    """A keyed hash of an erased customer's id, or of one of their events' keys: a reload skips those."""

    __tablename__ = "tombstones"
    __table_args__ = (sa.CheckConstraint("kind IN ('user', 'event')", name="kind"),)
    kind: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    key_hash: Mapped[bytes] = mapped_column(sa.LargeBinary, primary_key=True)
    erasure_id: Mapped[int] = mapped_column(sa.ForeignKey("erasures.id"))
    created_at: Mapped[datetime] = _created()


class KnownItemQuery(Base):
    """A query of the fixed known-item set search is judged on (the gate's forgetting check, the
    benchmark): written once per item and kind, never changed, never trained on."""

    __tablename__ = "known_item_queries"
    item_id: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    variant: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    query: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = _created()
