"""What the registry hands out: frozen snapshots, never ORM rows."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

from .models import Deployment, Model, ModelVersion, RegistryEvent, Replica, Rollout


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return value


class _Record:
    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (timestamps as ISO 8601 strings)."""
        out: dict[str, Any] = _jsonable(asdict(self))  # type: ignore[call-overload]
        return out


@dataclass(frozen=True)
class ModelRecord(_Record):
    name: str
    description: str
    settings: dict[str, Any]
    created_at: dt.datetime
    created_by: str

    @classmethod
    def of(cls, row: Model) -> ModelRecord:
        return cls(row.name, row.description, dict(row.settings), row.created_at, row.created_by)


@dataclass(frozen=True)
class VersionRecord(_Record):
    model: str
    version: int
    artifact_uri: str
    sha256: str
    size_bytes: int
    signature: dict[str, Any]
    score_output: str | None
    decision: dict[str, Any] | None
    has_feature_spec: bool
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    status: str
    status_reason: str
    created_at: dt.datetime
    created_by: str
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, model: str, row: ModelVersion, tags: dict[str, str]) -> VersionRecord:
        lineage = {
            "parent_version": row.parent_version,
            "data_window_start": _iso(row.data_window_start),
            "data_window_end": _iso(row.data_window_end),
            "training_job": row.training_job,
            "code_version": row.code_version,
        }
        return cls(
            model, row.version, row.artifact_uri, row.sha256, row.size_bytes,
            dict(row.signature), row.score_output, row.decision,
            row.feature_spec is not None, dict(row.metrics), lineage, row.status,
            row.status_reason, row.created_at, row.created_by, tags,
        )


@dataclass(frozen=True)
class DeploymentRecord(_Record):
    model: str
    stable_version: int | None
    candidate_version: int | None
    candidate_weight: int
    mode: str | None
    previous_version: int | None
    revision: int
    updated_at: dt.datetime
    updated_by: str

    @classmethod
    def of(cls, model: str, row: Deployment) -> DeploymentRecord:
        return cls(
            model, row.stable_version, row.candidate_version, row.candidate_weight, row.mode,
            row.previous_version, row.revision, row.updated_at, row.updated_by,
        )

    def state(self) -> dict[str, Any]:
        """The fields a change moves (what events record as before/after)."""
        return {
            "stable_version": self.stable_version,
            "candidate_version": self.candidate_version,
            "candidate_weight": self.candidate_weight,
            "mode": self.mode,
            "previous_version": self.previous_version,
            "revision": self.revision,
        }


@dataclass(frozen=True)
class RolloutRecord(_Record):
    id: int
    model: str
    candidate_version: int
    baseline_version: int | None
    strategy: str
    state: str
    steps: list[int]
    current_step: int
    weight: int
    started_at: dt.datetime
    updated_at: dt.datetime
    finished_at: dt.datetime | None
    started_by: str
    reason: str

    @classmethod
    def of(cls, model: str, row: Rollout) -> RolloutRecord:
        return cls(
            row.id, model, row.candidate_version, row.baseline_version, row.strategy,
            row.state, list(row.steps), row.current_step, row.weight, row.started_at,
            row.updated_at, row.finished_at, row.started_by, row.reason,
        )


@dataclass(frozen=True)
class EventRecord(_Record):
    id: int
    at: dt.datetime
    actor: str
    model: str
    version: int | None
    kind: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    reason: str

    @classmethod
    def of(cls, row: RegistryEvent) -> EventRecord:
        return cls(
            row.id, row.at, row.actor, row.model, row.version, row.kind, row.before, row.after,
            row.reason,
        )


@dataclass(frozen=True)
class ReplicaRecord(_Record):
    id: str
    host: str
    pid: int
    started_at: dt.datetime
    last_heartbeat: dt.datetime
    state: str
    holds: dict[str, Any]

    @classmethod
    def of(cls, row: Replica) -> ReplicaRecord:
        return cls(
            row.id, row.host, row.pid, row.started_at, row.last_heartbeat, row.state,
            dict(row.holds),
        )


@dataclass(frozen=True)
class ModelStatus(_Record):
    """A model at a glance: its deployment, the running (or last) rollout, replicas."""

    model: ModelRecord
    deployment: DeploymentRecord
    rollout: RolloutRecord | None
    versions: list[VersionRecord]
    replicas: list[ReplicaRecord]
