"""The registry schema: models, versions, tags, deployments, rollouts, events,
replicas, shadow results and artifact chunks (see registry/models.py).

``registry_events`` is append-only: triggers refuse UPDATE and DELETE on both
databases.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


APPEND_ONLY_MESSAGE = "registry_events is append-only"

PG_APPEND_ONLY = f"""
CREATE FUNCTION registry_events_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '{APPEND_ONLY_MESSAGE}';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER registry_events_no_update BEFORE UPDATE OR DELETE ON registry_events
    FOR EACH ROW EXECUTE FUNCTION registry_events_append_only();
"""

SQLITE_APPEND_ONLY = [
    f"""CREATE TRIGGER registry_events_no_{action.lower()} BEFORE {action} ON registry_events
    BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}'); END"""
    for action in ("UPDATE", "DELETE")
]


def upgrade() -> None:
    op.create_table(
        "artifact_chunks",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("chunk", sa.Integer(), nullable=False),
        sa.Column(
            "data", sa.LargeBinary().with_variant(postgresql.BYTEA(), "postgresql"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("sha256", "chunk", name=op.f("pk_artifact_chunks")),
    )
    op.create_table(
        "models",
        sa.Column("id", _id(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("settings", _json(), nullable=False),
        sa.Column("next_version", sa.Integer(), nullable=False),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("created_by", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_models")),
        sa.UniqueConstraint("name", name=op.f("uq_models_name")),
    )
    op.create_table(
        "registry_events",
        sa.Column("id", _id(), nullable=False),
        sa.Column("at", _time(), nullable=False),
        sa.Column("actor", sa.String(length=256), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=48), nullable=False),
        sa.Column("before", _json(), nullable=True),
        sa.Column("after", _json(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registry_events")),
    )
    op.create_index("ix_registry_events_model_id", "registry_events", ["model", "id"])
    op.create_table(
        "replicas",
        sa.Column("id", sa.String(length=192), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", _time(), nullable=False),
        sa.Column("last_heartbeat", _time(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("holds", _json(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_replicas")),
    )
    op.create_table(
        "shadow_results",
        sa.Column("id", _id(), nullable=False),
        sa.Column("decision_id", sa.String(length=36), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("at", _time(), nullable=False),
        sa.Column("outputs", _json(), nullable=False),
        sa.Column("latency_ms", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shadow_results")),
    )
    op.create_index("ix_shadow_results_decision_id", "shadow_results", ["decision_id"])
    op.create_table(
        "deployments",
        sa.Column("model_id", _id(), nullable=False),
        sa.Column("stable_version", sa.Integer(), nullable=True),
        sa.Column("candidate_version", sa.Integer(), nullable=True),
        sa.Column("candidate_weight", sa.Integer(), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=True),
        sa.Column("previous_version", sa.Integer(), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("updated_at", _time(), nullable=False),
        sa.Column("updated_by", sa.String(length=256), nullable=False),
        sa.CheckConstraint(
            "mode IN ('blue_green', 'canary', 'shadow')", name=op.f("ck_deployments_mode")
        ),
        sa.CheckConstraint(
            "(candidate_version IS NULL AND mode IS NULL) OR "
            "(candidate_version IS NOT NULL AND mode IS NOT NULL)",
            name=op.f("ck_deployments_candidate_has_mode"),
        ),
        sa.CheckConstraint(
            "candidate_weight BETWEEN 0 AND 100", name=op.f("ck_deployments_weight_range")
        ),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name=op.f("fk_deployments_model_id_models"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("model_id", name=op.f("pk_deployments")),
    )
    op.create_table(
        "model_versions",
        sa.Column("id", _id(), nullable=False),
        sa.Column("model_id", _id(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("artifact_uri", sa.String(length=2048), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("signature", _json(), nullable=False),
        sa.Column("score_output", sa.String(length=256), nullable=True),
        sa.Column("decision", _json(), nullable=True),
        sa.Column("feature_spec", sa.Text(), nullable=True),
        sa.Column("reference_profile", sa.Text(), nullable=True),
        sa.Column("metrics", _json(), nullable=False),
        sa.Column("parent_version", sa.Integer(), nullable=True),
        sa.Column("data_window_start", _time(), nullable=True),
        sa.Column("data_window_end", _time(), nullable=True),
        sa.Column("training_job", sa.String(length=128), nullable=True),
        sa.Column("code_version", sa.String(length=128), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=False),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("created_by", sa.String(length=256), nullable=False),
        sa.CheckConstraint(
            "status IN ('ready', 'rejected', 'archived')", name=op.f("ck_model_versions_status")
        ),
        sa.CheckConstraint("version >= 1", name=op.f("ck_model_versions_version_positive")),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name=op.f("fk_model_versions_model_id_models"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_versions")),
        sa.UniqueConstraint("model_id", "version", name="uq_model_versions_model_id_version"),
    )
    op.create_table(
        "rollouts",
        sa.Column("id", _id(), nullable=False),
        sa.Column("model_id", _id(), nullable=False),
        sa.Column("candidate_version", sa.Integer(), nullable=False),
        sa.Column("baseline_version", sa.Integer(), nullable=True),
        sa.Column("strategy", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("steps", _json(), nullable=False),
        sa.Column("current_step", sa.Integer(), nullable=False),
        sa.Column("weight", sa.Integer(), nullable=False),
        sa.Column("started_at", _time(), nullable=False),
        sa.Column("updated_at", _time(), nullable=False),
        sa.Column("finished_at", _time(), nullable=True),
        sa.Column("started_by", sa.String(length=256), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("lease_owner", sa.String(length=256), nullable=True),
        sa.Column("lease_expires_at", _time(), nullable=True),
        sa.CheckConstraint(
            "state IN ('running', 'promoted', 'aborted', 'rolled_back')",
            name=op.f("ck_rollouts_state"),
        ),
        sa.CheckConstraint(
            "strategy IN ('blue_green', 'canary', 'shadow')", name=op.f("ck_rollouts_strategy")
        ),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name=op.f("fk_rollouts_model_id_models"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollouts")),
    )
    op.create_index(
        "ix_rollouts_model_id_started_at", "rollouts", ["model_id", "started_at"]
    )
    op.create_index(
        "uq_rollouts_one_running", "rollouts", ["model_id"], unique=True,
        sqlite_where=sa.text("state = 'running'"), postgresql_where=sa.text("state = 'running'"),
    )
    op.create_table(
        "model_version_tags",
        sa.Column("version_id", _id(), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["version_id"], ["model_versions.id"],
            name=op.f("fk_model_version_tags_version_id_model_versions"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("version_id", "key", name=op.f("pk_model_version_tags")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_APPEND_ONLY)
    else:
        for statement in SQLITE_APPEND_ONLY:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER registry_events_no_update ON registry_events")
        op.execute("DROP FUNCTION registry_events_append_only()")
    else:
        op.execute("DROP TRIGGER registry_events_no_update")
        op.execute("DROP TRIGGER registry_events_no_delete")
    op.drop_table("model_version_tags")
    op.drop_index("uq_rollouts_one_running", table_name="rollouts")
    op.drop_index("ix_rollouts_model_id_started_at", table_name="rollouts")
    op.drop_table("rollouts")
    op.drop_table("model_versions")
    op.drop_table("deployments")
    op.drop_index("ix_shadow_results_decision_id", table_name="shadow_results")
    op.drop_table("shadow_results")
    op.drop_table("replicas")
    op.drop_index("ix_registry_events_model_id", table_name="registry_events")
    op.drop_table("registry_events")
    op.drop_table("models")
    op.drop_table("artifact_chunks")
