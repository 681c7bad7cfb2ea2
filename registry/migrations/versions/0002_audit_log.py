"""The audit log: streams, requests, decisions, checkpoints (append-only) and feedback.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

APPEND_ONLY_MESSAGE = "audit_checkpoints is append-only"
PG_APPEND_ONLY = f"""
CREATE FUNCTION audit_checkpoints_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '{APPEND_ONLY_MESSAGE}';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_checkpoints_append_only();
"""
SQLITE_APPEND_ONLY = [
    f"""CREATE TRIGGER audit_checkpoints_no_{action.lower()} BEFORE {action} ON audit_checkpoints
    BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}'); END"""
    for action in ("UPDATE", "DELETE")
]


def _id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_checkpoints",
        sa.Column("id", _id(), nullable=False),
        sa.Column("stream_id", sa.String(length=96), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("chain", sa.String(length=64), nullable=False),
        sa.Column("at", _time(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=256), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_checkpoints")),
    )
    with op.batch_alter_table("audit_checkpoints", schema=None) as batch_op:
        batch_op.create_index("ix_audit_checkpoints_stream_id", ["stream_id", "seq"], unique=False)

    op.create_table(
        "audit_decisions",
        sa.Column("decision_id", sa.String(length=36), nullable=False),
        sa.Column("row_index", sa.Integer(), nullable=False),
        sa.Column("at", _time(), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("route", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("score", sa.Double(), nullable=True),
        sa.Column("decision", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint(
            "decision_id", "row_index", "route", name=op.f("pk_audit_decisions")
        ),
    )
    with op.batch_alter_table("audit_decisions", schema=None) as batch_op:
        batch_op.create_index("ix_audit_decisions_decision", ["decision"], unique=False)
        batch_op.create_index(
            "ix_audit_decisions_model_version_at", ["model", "version", "at"], unique=False
        )

    op.create_table(
        "audit_requests",
        sa.Column("decision_id", sa.String(length=36), nullable=False),
        sa.Column("stream_id", sa.String(length=96), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("at", _time(), nullable=False),
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.Column("routing_key", sa.Text(), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("route", sa.String(length=16), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("latency_us", sa.BigInteger(), nullable=False),
        sa.Column("queue_us", sa.BigInteger(), nullable=True),
        sa.Column("caller", sa.String(length=256), nullable=False),
        sa.Column("principal", sa.String(length=256), nullable=False),
        sa.Column("trace_id", sa.String(length=64), nullable=False),
        # json (not jsonb): the audit chain signs the numbers exactly as written
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("outputs", sa.JSON(), nullable=False),
        sa.Column("chain", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("decision_id", "route", name=op.f("pk_audit_requests")),
        sa.UniqueConstraint("stream_id", "seq", name="uq_audit_requests_stream_id_seq"),
    )
    with op.batch_alter_table("audit_requests", schema=None) as batch_op:
        batch_op.create_index("ix_audit_requests_at", ["at"], unique=False)
        batch_op.create_index("ix_audit_requests_model_at", ["model", "at"], unique=False)
        batch_op.create_index("ix_audit_requests_request_id", ["request_id"], unique=False)

    op.create_table(
        "audit_streams",
        sa.Column("id", sa.String(length=96), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", _time(), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("genesis_chain", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_streams")),
    )
    op.create_table(
        "feedback",
        sa.Column("decision_id", sa.String(length=36), nullable=False),
        sa.Column("row_index", sa.Integer(), nullable=False),
        sa.Column("label", _json(), nullable=False),
        sa.Column("label_at", _time(), nullable=False),
        sa.Column("source", sa.String(length=128), nullable=False),
        sa.Column("received_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("decision_id", "row_index", name=op.f("pk_feedback")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_APPEND_ONLY)
    else:
        for statement in SQLITE_APPEND_ONLY:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_checkpoints_no_update ON audit_checkpoints")
        op.execute("DROP FUNCTION audit_checkpoints_append_only()")
    else:
        op.execute("DROP TRIGGER audit_checkpoints_no_update")
        op.execute("DROP TRIGGER audit_checkpoints_no_delete")
    op.drop_table("feedback")
    op.drop_table("audit_streams")
    with op.batch_alter_table("audit_requests", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_requests_request_id")
        batch_op.drop_index("ix_audit_requests_model_at")
        batch_op.drop_index("ix_audit_requests_at")

    op.drop_table("audit_requests")
    with op.batch_alter_table("audit_decisions", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_decisions_model_version_at")
        batch_op.drop_index("ix_audit_decisions_decision")

    op.drop_table("audit_decisions")
    with op.batch_alter_table("audit_checkpoints", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_checkpoints_stream_id")

    op.drop_table("audit_checkpoints")
