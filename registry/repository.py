"""Queries on a session: they read and add rows but never commit (the caller owns
the transaction), and they turn "no such row" into the registry's errors."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from .errors import UnknownModel, UnknownVersion
from .models import (
    Deployment,
    Model,
    ModelVersion,
    RegistryEvent,
    Rollout,
    VersionTag,
    utcnow,
)


def model_by_name(session: Session, name: str) -> Model:
    row = session.scalar(select(Model).where(Model.name == name))
    if row is None:
        known = session.scalars(select(Model.name).order_by(Model.name).limit(20)).all()
        hint = f"; registered models: {', '.join(known)}" if known else "; none is registered"
        raise UnknownModel(f"model '{name}' is not registered{hint}")
    return row


def version_row(session: Session, model: Model, version: int) -> ModelVersion:
    row = session.scalar(
        select(ModelVersion).where(
            ModelVersion.model_id == model.id, ModelVersion.version == version
        )
    )
    if row is None:
        versions = session.scalars(
            select(ModelVersion.version)
            .where(ModelVersion.model_id == model.id)
            .order_by(ModelVersion.version)
        ).all()
        have = ", ".join(map(str, versions)) or "none"
        raise UnknownVersion(f"model '{model.name}' has no version {version} (versions: {have})")
    return row


def versions_of(session: Session, model: Model) -> list[ModelVersion]:
    return list(
        session.scalars(
            select(ModelVersion)
            .where(ModelVersion.model_id == model.id)
            .order_by(ModelVersion.version)
        )
    )


def tags_of(session: Session, version_ids: list[int]) -> dict[int, dict[str, str]]:
    out: dict[int, dict[str, str]] = {i: {} for i in version_ids}
    if version_ids:
        query = select(VersionTag).where(VersionTag.version_id.in_(version_ids))
        for tag in session.scalars(query):
            out[tag.version_id][tag.key] = tag.value
    return out


def ensure_model(
    session: Session, name: str, actor: str, settings: dict[str, Any], description: str
) -> tuple[Model, bool]:
    """The model row, created (with its empty deployment) if absent; True if created.

    ``INSERT … ON CONFLICT DO NOTHING`` on the unique name, so concurrent first
    registrations of one model all end up with the same row.
    """
    dialect = session.get_bind().dialect.name
    stmt = (pg_insert if dialect == "postgresql" else sqlite_insert)(Model).values(
        name=name, description=description, settings=settings, next_version=1,
        created_at=utcnow(), created_by=actor,
    )
    inserted = session.execute(
        stmt.on_conflict_do_nothing(index_elements=["name"]).returning(Model.id)
    ).scalar_one_or_none()
    created = inserted is not None
    model = session.scalar(
        select(Model).where(Model.name == name).execution_options(populate_existing=True)
    )
    assert model is not None
    dep = (pg_insert if dialect == "postgresql" else sqlite_insert)(Deployment).values(
        model_id=model.id, candidate_weight=0, revision=0, updated_at=utcnow(), updated_by=actor
    )
    session.execute(dep.on_conflict_do_nothing(index_elements=["model_id"]))
    return model, created


def take_version_number(session: Session, model: Model) -> int:
    """The next version number of ``model``, taken in SQL (``UPDATE … RETURNING``).

    The row lock (PostgreSQL) or the write lock (SQLite) orders concurrent callers;
    no two transactions can get the same number, and none computes max + 1.
    """
    taken = session.execute(
        update(Model)
        .where(Model.id == model.id)
        .values(next_version=Model.next_version + 1)
        .returning(Model.next_version - 1)
    ).scalar_one()
    return int(taken)


def deployment_of(session: Session, model: Model) -> Deployment:
    row = session.scalar(
        select(Deployment)
        .where(Deployment.model_id == model.id)
        .execution_options(populate_existing=True)
    )
    assert row is not None, f"model '{model.name}' has no deployment row"
    return row


def running_rollout(session: Session, model: Model) -> Rollout | None:
    return session.scalar(
        select(Rollout)
        .where(Rollout.model_id == model.id, Rollout.state == "running")
        .execution_options(populate_existing=True)
    )


def last_rollout(session: Session, model: Model) -> Rollout | None:
    return session.scalar(
        select(Rollout)
        .where(Rollout.model_id == model.id)
        .order_by(Rollout.id.desc())
        .limit(1)
        .execution_options(populate_existing=True)
    )


def add_event(
    session: Session,
    *,
    actor: str,
    model: str,
    kind: str,
    reason: str,
    version: int | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    session.execute(
        insert(RegistryEvent).values(
            at=utcnow(), actor=actor, model=model, version=version, kind=kind,
            before=before, after=after, reason=reason,
        )
    )


def events_of(
    session: Session, model: str | None, limit: int, since: dt.datetime | None = None
) -> list[RegistryEvent]:
    query = select(RegistryEvent).order_by(RegistryEvent.id.desc()).limit(limit)
    if model is not None:
        query = query.where(RegistryEvent.model == model)
    if since is not None:
        query = query.where(RegistryEvent.at >= since)
    return list(reversed(session.scalars(query).all()))


def version_counts(session: Session) -> dict[int, int]:
    rows = session.execute(
        select(ModelVersion.model_id, func.count()).group_by(ModelVersion.model_id)
    )
    return {int(model_id): int(count) for model_id, count in rows}
