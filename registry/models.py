"""The registry's tables (SQLAlchemy 2 declarative models).

The Alembic migrations in ``registry/migrations`` create exactly these tables
(``tests/registry/test_migrations.py`` checks that ``compare_metadata`` is empty).
ORM rows never leave the ``registry`` package: services return the frozen
dataclasses of ``registry.records``.

Tables:

``models``               one row per model: name, serving settings (the keys of a
                         model's ``config.json``), the version counter.
``model_versions``       one row per registered version: content-addressed artifact
                         (URI, sha256, size), signature, score output and decision,
                         feature spec and reference profile (JSON text), metrics,
                         lineage, status (ready | rejected | archived).
``model_version_tags``   free-form key/value tags of a version.
``deployments``          per model: stable version, candidate version, candidate
                         weight (0-100), mode (blue_green | canary | shadow), the
                         previous stable version (kept loaded for rollbacks) and the
                         revision every change compares-and-sets.
``rollouts``             one row per rollout: strategy, state, steps, timestamps,
                         reason, and a controller lease (for automated analysis
                         later). At most one is ``running`` per model (partial
                         unique index).
``registry_events``      append-only history: actor, time, model, kind, before and
                         after, reason. Triggers refuse UPDATE and DELETE.
``replicas``             every server process: host, pid, heartbeat, and per model
                         the versions it has loaded and ready and the revision it
                         follows.
``shadow_results``       a shadow candidate's answers per decision (until the audit
                         log takes them over).
``artifact_chunks``      the ``sql`` artifact store: artifacts as 8 MiB chunks by
                         sha256, so hosts share them through the database alone.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import BYTEA, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

MODES = ("blue_green", "canary", "shadow")
VERSION_STATUSES = ("ready", "rejected", "archived")
ROLLOUT_STATES = ("running", "promoted", "aborted", "rolled_back")

# JSON documents: JSONB on PostgreSQL (indexable, compact), JSON text on SQLite.
JSONDoc = JSON().with_variant(JSONB(), "postgresql")
# 64-bit keys on PostgreSQL; SQLite only autoincrements INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")
Blob = LargeBinary().with_variant(BYTEA(), "postgresql")


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC timestamps on both databases.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones, so values are stored
    as UTC and given back their ``tzinfo`` on the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: registry timestamps are UTC-aware")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Model(Base):
    __tablename__ = "models"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    settings: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    # The next version number, taken with UPDATE ... RETURNING (never max + 1).
    next_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(256))


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("model_id", "version", name="uq_model_versions_model_id_version"),
        CheckConstraint(_in("status", VERSION_STATUSES), name="status"),
        CheckConstraint("version >= 1", name="version_positive"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="RESTRICT"))
    version: Mapped[int] = mapped_column(Integer)
    artifact_uri: Mapped[str] = mapped_column(String(2048))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    signature: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    score_output: Mapped[str | None] = mapped_column(String(256))
    decision: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    feature_spec: Mapped[str | None] = mapped_column(Text)
    reference_profile: Mapped[str | None] = mapped_column(Text)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    parent_version: Mapped[int | None] = mapped_column(Integer)
    data_window_start: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    data_window_end: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    training_job: Mapped[str | None] = mapped_column(String(128))
    code_version: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default="ready")
    status_reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(256))


class VersionTag(Base):
    __tablename__ = "model_version_tags"

    version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Deployment(Base):
    __tablename__ = "deployments"
    __table_args__ = (
        CheckConstraint("candidate_weight BETWEEN 0 AND 100", name="weight_range"),
        CheckConstraint(_in("mode", MODES), name="mode"),
        CheckConstraint(
            "(candidate_version IS NULL AND mode IS NULL) OR "
            "(candidate_version IS NOT NULL AND mode IS NOT NULL)",
            name="candidate_has_mode",
        ),
    )

    model_id: Mapped[int] = mapped_column(
        ForeignKey("models.id", ondelete="RESTRICT"), primary_key=True
    )
    stable_version: Mapped[int | None] = mapped_column(Integer)
    candidate_version: Mapped[int | None] = mapped_column(Integer)
    candidate_weight: Mapped[int] = mapped_column(Integer, default=0)
    mode: Mapped[str | None] = mapped_column(String(16))
    previous_version: Mapped[int | None] = mapped_column(Integer)
    revision: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(256))


class Rollout(Base):
    __tablename__ = "rollouts"
    __table_args__ = (
        CheckConstraint(_in("strategy", MODES), name="strategy"),
        CheckConstraint(_in("state", ROLLOUT_STATES), name="state"),
        Index(
            "uq_rollouts_one_running",
            "model_id",
            unique=True,
            sqlite_where=text("state = 'running'"),
            postgresql_where=text("state = 'running'"),
        ),
        Index("ix_rollouts_model_id_started_at", "model_id", "started_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="RESTRICT"))
    candidate_version: Mapped[int] = mapped_column(Integer)
    baseline_version: Mapped[int | None] = mapped_column(Integer)
    strategy: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), default="running")
    steps: Mapped[list[int]] = mapped_column(JSONDoc, default=list)
    current_step: Mapped[int] = mapped_column(Integer, default=0)
    weight: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    started_by: Mapped[str] = mapped_column(String(256))
    reason: Mapped[str] = mapped_column(Text, default="")
    # For the rollout controller (a later issue): one holder at a time.
    lease_owner: Mapped[str | None] = mapped_column(String(256))
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class RegistryEvent(Base):
    __tablename__ = "registry_events"
    __table_args__ = (Index("ix_registry_events_model_id", "model", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(256))
    model: Mapped[str] = mapped_column(String(128))
    version: Mapped[int | None] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(48))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    reason: Mapped[str] = mapped_column(Text, default="")


class Replica(Base):
    __tablename__ = "replicas"

    id: Mapped[str] = mapped_column(String(192), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_heartbeat: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    state: Mapped[str] = mapped_column(String(16), default="serving")
    # model -> {"revision": n, "loaded": [versions], "ready": [versions]}
    holds: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)


class ShadowResult(Base):
    __tablename__ = "shadow_results"
    __table_args__ = (Index("ix_shadow_results_decision_id", "decision_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    decision_id: Mapped[str] = mapped_column(String(36))
    model: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    outputs: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    latency_ms: Mapped[float | None] = mapped_column()


class ArtifactChunk(Base):
    __tablename__ = "artifact_chunks"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    chunk: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(Blob)


# -- the audit log (server/audit_*.py writes it, registry/audit_*.py reads it) ---------------
#
# One ``audit_requests`` row per answered (or failed) request: its identity, caller,
# timing, status, inputs and outputs as JSON, and the HMAC-SHA256 chain value of its
# writer stream. One ``audit_decisions`` row per decided row (decision id, row index,
# score, decision), derived from the request's outputs and checked against them by
# ``osprey audit verify``. ``audit_streams`` holds each writer stream's genesis,
# ``audit_checkpoints`` the chain heads (append-only), ``feedback`` ground truth.


class AuditStream(Base):
    __tablename__ = "audit_streams"

    id: Mapped[str] = mapped_column(String(96), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    key_id: Mapped[str] = mapped_column(String(32))
    genesis_chain: Mapped[str] = mapped_column(String(64))


class AuditRequest(Base):
    __tablename__ = "audit_requests"
    __table_args__ = (
        UniqueConstraint("stream_id", "seq", name="uq_audit_requests_stream_id_seq"),
        Index("ix_audit_requests_model_at", "model", "at"),
        Index("ix_audit_requests_request_id", "request_id"),
        Index("ix_audit_requests_at", "at"),
    )

    decision_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    # stable | canary | shadow: a shadow copy shares its request's decision id
    route: Mapped[str] = mapped_column(String(16), primary_key=True)
    stream_id: Mapped[str] = mapped_column(String(96))
    seq: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    request_id: Mapped[str] = mapped_column(Text)
    routing_key: Mapped[str] = mapped_column(Text)
    model: Mapped[str] = mapped_column(String(128))
    version: Mapped[int | None] = mapped_column(Integer)
    rows: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(32))
    error: Mapped[str] = mapped_column(Text)
    latency_us: Mapped[int] = mapped_column(BigInteger)
    queue_us: Mapped[int | None] = mapped_column(BigInteger)
    caller: Mapped[str] = mapped_column(String(256))
    principal: Mapped[str] = mapped_column(String(256))
    trace_id: Mapped[str] = mapped_column(String(64))
    # json, not jsonb, on PostgreSQL: the chain signs the numbers as written, and jsonb
    # would rewrite some (1e+30 comes back as 1000000000000000000000000000000).
    inputs: Mapped[dict[str, Any]] = mapped_column(JSON)
    outputs: Mapped[dict[str, Any]] = mapped_column(JSON)
    chain: Mapped[str] = mapped_column(String(64))


class AuditDecision(Base):
    __tablename__ = "audit_decisions"
    __table_args__ = (
        Index("ix_audit_decisions_model_version_at", "model", "version", "at"),
        Index("ix_audit_decisions_decision", "decision"),
    )

    decision_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    row_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    route: Mapped[str] = mapped_column(String(16), primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    model: Mapped[str] = mapped_column(String(128))
    version: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(32))
    score: Mapped[float | None] = mapped_column()
    decision: Mapped[str | None] = mapped_column(String(64))


class AuditCheckpoint(Base):
    __tablename__ = "audit_checkpoints"
    __table_args__ = (Index("ix_audit_checkpoints_stream_id", "stream_id", "seq"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    stream_id: Mapped[str] = mapped_column(String(96))
    seq: Mapped[int] = mapped_column(BigInteger)
    chain: Mapped[str] = mapped_column(String(64))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(16))  # ship | prune
    actor: Mapped[str] = mapped_column(String(256))
    reason: Mapped[str] = mapped_column(Text, default="")


class Feedback(Base):
    __tablename__ = "feedback"

    decision_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    row_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    label: Mapped[Any] = mapped_column(JSONDoc)
    label_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(String(128))
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
