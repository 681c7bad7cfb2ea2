"""The registry's services: register versions and switch what serves, with history.

``Registry`` owns the transactions. Every change of a deployment is one
transaction that compare-and-sets the deployment's ``revision`` and appends a
``registry_events`` row (who, when, why, before, after); a concurrent change that
got there first makes the loser's UPDATE match no row, which is reported as a
``DeploymentConflict``, never as a lost update.

The state machine (``deployments`` row of a model)::

    set-stable V        stable := V (no rollout may be running)
    rollout start       candidate := V, mode := strategy, weight :=
                          blue_green 0 (load and warm everywhere, no traffic)
                          canary     --weight or the first step (default 10)
                          shadow     --weight (share of traffic mirrored, default 100)
    rollout step        canary/shadow: weight := --weight or the next step
    rollout promote     stable := candidate, previous := old stable, no candidate
                          (unless --force: every live replica must hold the
                          candidate ready, so the switch is instant everywhere)
    rollout abort       no candidate; the rollout is aborted
    rollout rollback    stable := previous (kept loaded by replicas for the
                          rollback window), previous := the version rolled back

A version whose input/output signature differs from the stable one's is refused
by set-stable and rollout start unless ``allow_signature_change``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import getpass
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.errors import ConfigError, InvalidInput, OspreyError
from server.model_config import ModelSettings, parse_model_settings

from . import repository as repo
from .artifacts import LocalArtifactStore, SqlArtifactStore, sha256_of, store_for, store_for_uri
from .db import Database
from .errors import (
    DeploymentConflict,
    InvalidArtifact,
    InvalidTransition,
    NoRolloutInProgress,
    PreconditionFailed,
    RolloutInProgress,
    SignatureChanged,
    VersionRejected,
)
from .models import (
    MODES,
    Deployment,
    Model,
    ModelVersion,
    Replica,
    Rollout,
    ShadowResult,
    VersionTag,
    utcnow,
)
from .records import (
    DeploymentRecord,
    EventRecord,
    ModelRecord,
    ModelStatus,
    ReplicaRecord,
    RolloutRecord,
    VersionRecord,
)
from .validation import signature_difference, validate_version

DEFAULT_CANARY_STEPS = (10, 25, 50)
NOTIFY_CHANNEL = "osprey_deployments"  # PostgreSQL: replicas LISTEN for changes
DEFAULT_SHADOW_WEIGHT = 100
REPLICA_LIVE_SECONDS = 30.0


def default_actor() -> str:
    """Who is acting: ``$OSPREY_ACTOR``, else ``user@host``."""
    explicit = os.environ.get("OSPREY_ACTOR", "").strip()
    if explicit:
        return explicit
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


@dataclass(frozen=True)
class NewVersion:
    """What ``register`` needs beyond the ONNX file (every field optional)."""

    feature_spec: str | None = None
    reference_profile: str | None = None
    score_output: str | None = None
    decision: dict[str, Any] | None = None
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    parent_version: int | None = None
    data_window: tuple[dt.datetime, dt.datetime] | None = None
    training_job: str | None = None
    code_version: str | None = None
    tags: dict[str, str] = dataclasses.field(default_factory=dict)


def _require_reason(reason: str) -> str:
    reason = reason.strip()
    if not reason:
        raise InvalidInput("a reason is required for every change (--reason)")
    return reason


def _settings(raw: dict[str, Any], where: str) -> ModelSettings:
    try:
        return parse_model_settings(raw, where)
    except ConfigError as exc:
        raise InvalidArtifact(exc.message) from None


class Registry:
    """Register versions and switch deployments on one registry database."""

    def __init__(self, db: Database, home: Path, artifact_store: str = "local") -> None:
        self.db = db
        self.home = home
        self.store = store_for(artifact_store, home)

    # -- models and versions ---------------------------------------------------------

    def register(
        self,
        name: str,
        onnx_path: Path,
        *,
        actor: str,
        reason: str,
        settings: dict[str, Any] | None = None,
        description: str = "",
        new: NewVersion | None = None,
    ) -> VersionRecord:
        """Validate ``onnx_path`` and register it as the model's next version.

        The model is created on its first registration (with ``settings``, the keys
        of a ``config.json``; later registrations may replace them). Validation runs
        before the transaction: a file ONNX Runtime cannot load, a spec that does not
        fit it, or an unknown score or decision output registers nothing.
        """
        reason = _require_reason(reason)
        new = new or NewVersion()
        from server.model_source import _NAME

        if not _NAME.match(name):
            raise InvalidInput(
                f"model name {name!r} is not valid: letters, digits, '_', '.', '-' (up to "
                "128, starting with a letter or digit)"
            )
        if not onnx_path.is_file():
            raise InvalidArtifact(f"{onnx_path}: no such file")
        stored_settings = self._stored_settings(name)
        raw_settings = settings if settings is not None else (stored_settings or {})
        model_settings = _settings(raw_settings, f"settings of model '{name}'")
        score_output = new.score_output or model_settings.score_output
        decision = new.decision
        if decision is None and model_settings.decision is not None:
            decision = {
                k: v for k, v in dataclasses.asdict(model_settings.decision).items()
                if v is not None
            }
        try:
            checked = validate_version(
                name, onnx_path, model_settings, new.feature_spec, new.reference_profile,
                score_output, (decision or {}).get("output"),
            )
        except InvalidArtifact as exc:
            self._record_refusal(name, onnx_path, actor, reason, exc.message)
            raise
        digest = sha256_of(onnx_path)
        size = onnx_path.stat().st_size
        with self.db.write() as session:
            model, created = repo.ensure_model(session, name, actor, raw_settings, description)
            if created:
                repo.add_event(session, actor=actor, model=name, kind="model_created",
                               reason=reason, after={"settings": raw_settings})
            elif settings is not None and settings != model.settings:
                before = dict(model.settings)
                model.settings = settings
                repo.add_event(session, actor=actor, model=name, kind="model_settings_changed",
                               reason=reason, before={"settings": before},
                               after={"settings": settings})
            uri = self.store.put(onnx_path, digest, session)
            number = repo.take_version_number(session, model)
            window = new.data_window
            row = ModelVersion(
                model_id=model.id, version=number, artifact_uri=uri, sha256=digest,
                size_bytes=size, signature=checked.signature, score_output=score_output,
                decision=decision, feature_spec=checked.feature_spec,
                reference_profile=checked.reference_profile, metrics=new.metrics,
                parent_version=new.parent_version,
                data_window_start=window[0] if window else None,
                data_window_end=window[1] if window else None,
                training_job=new.training_job, code_version=new.code_version,
                status="ready", status_reason="", created_at=utcnow(), created_by=actor,
            )
            session.add(row)
            session.flush()
            for key, value in new.tags.items():
                session.add(VersionTag(version_id=row.id, key=key, value=value))
            repo.add_event(
                session, actor=actor, model=name, version=number, kind="version_registered",
                reason=reason,
                after={"sha256": digest, "artifact_uri": uri, "size_bytes": size,
                       "feature_spec": checked.feature_spec is not None},
            )
            return VersionRecord.of(name, row, dict(new.tags))

    def _record_refusal(
        self, name: str, onnx_path: Path, actor: str, reason: str, error: str
    ) -> None:
        """A refused registration is history too (best effort: the error is what counts)."""
        try:
            with self.db.write() as session:
                repo.add_event(session, actor=actor, model=name, kind="registration_refused",
                               reason=reason, after={"file": str(onnx_path), "error": error})
        except OspreyError:
            pass

    def _stored_settings(self, name: str) -> dict[str, Any] | None:
        with self.db.read() as session:
            return session.scalar(select(Model.settings).where(Model.name == name))

    def set_settings(
        self, name: str, settings: dict[str, Any], *, actor: str, reason: str
    ) -> ModelRecord:
        """Replace the model's serving settings (validated as a ``config.json``)."""
        reason = _require_reason(reason)
        _settings(settings, f"settings of model '{name}'")
        with self.db.write() as session:
            model = repo.model_by_name(session, name)
            before = dict(model.settings)
            model.settings = settings
            repo.add_event(session, actor=actor, model=name, kind="model_settings_changed",
                           reason=reason, before={"settings": before},
                           after={"settings": settings})
            session.flush()
            return ModelRecord.of(model)

    def models(self) -> list[tuple[ModelRecord, DeploymentRecord, int]]:
        """Every model with its deployment and number of versions."""
        with self.db.read() as session:
            counts = repo.version_counts(session)
            rows = session.execute(
                select(Model, Deployment)
                .join(Deployment, Deployment.model_id == Model.id)
                .order_by(Model.name)
            ).all()
            return [
                (ModelRecord.of(m), DeploymentRecord.of(m.name, d), counts.get(m.id, 0))
                for m, d in rows
            ]

    def model(self, name: str) -> ModelRecord:
        with self.db.read() as session:
            return ModelRecord.of(repo.model_by_name(session, name))

    def versions(self, name: str) -> list[VersionRecord]:
        with self.db.read() as session:
            model = repo.model_by_name(session, name)
            rows = repo.versions_of(session, model)
            tags = repo.tags_of(session, [r.id for r in rows])
            return [VersionRecord.of(name, r, tags[r.id]) for r in rows]

    def version(self, name: str, version: int) -> VersionRecord:
        with self.db.read() as session:
            model = repo.model_by_name(session, name)
            row = repo.version_row(session, model, version)
            return VersionRecord.of(name, row, repo.tags_of(session, [row.id])[row.id])

    def feature_documents(self, name: str, version: int) -> tuple[str | None, str | None]:
        """The version's feature spec and reference profile JSON (None: plain ONNX)."""
        with self.db.read() as session:
            row = repo.version_row(session, repo.model_by_name(session, name), version)
            return row.feature_spec, row.reference_profile

    def fetch_artifact(self, record: VersionRecord) -> Path:
        """A local copy of the version's ONNX file, sha256 checked (ChecksumMismatch)."""
        store: LocalArtifactStore | SqlArtifactStore = store_for_uri(record.artifact_uri, self.home)
        return store.fetch(record.artifact_uri, record.sha256, self.db)

    def reject_version(self, name: str, version: int, *, actor: str, reason: str) -> None:
        """Mark a version as failed validation (it may not be deployed any more)."""
        with self.db.write() as session:
            model = repo.model_by_name(session, name)
            row = repo.version_row(session, model, version)
            if row.status == "rejected" and row.status_reason == reason:
                return
            before = {"status": row.status, "status_reason": row.status_reason}
            row.status, row.status_reason = "rejected", reason
            repo.add_event(session, actor=actor, model=name, version=version,
                           kind="version_rejected", reason=reason, before=before,
                           after={"status": "rejected", "status_reason": reason})

    # -- deployments -------------------------------------------------------------------

    def deployment(self, name: str) -> DeploymentRecord:
        with self.db.read() as session:
            model = repo.model_by_name(session, name)
            return DeploymentRecord.of(name, repo.deployment_of(session, model))

    def deployments(self) -> list[DeploymentRecord]:
        """Every model's deployment (what replicas poll)."""
        with self.db.read() as session:
            rows = session.execute(
                select(Model.name, Deployment).join(Deployment, Deployment.model_id == Model.id)
            ).all()
            return [DeploymentRecord.of(name, dep) for name, dep in rows]

    def set_stable(
        self,
        name: str,
        version: int,
        *,
        actor: str,
        reason: str,
        allow_signature_change: bool = False,
        expected_revision: int | None = None,
    ) -> DeploymentRecord:
        """Serve ``version`` to everyone (no rollout may be running)."""
        reason = _require_reason(reason)
        with self._changing(name) as (session, model, dep):
            _no_rollout_running(session, model)
            self._check_deployable(session, model, version, dep.stable_version,
                                   allow_signature_change)
            if dep.stable_version == version:
                raise InvalidTransition(f"model '{name}' version {version} is already stable")
            previous = dep.stable_version if dep.stable_version is not None else None
            return self._change(
                session, model, dep, actor=actor, reason=reason, kind="stable_set",
                version=version, expected_revision=expected_revision,
                stable_version=version, previous_version=previous,
            )

    def start_rollout(
        self,
        name: str,
        version: int,
        strategy: str,
        *,
        actor: str,
        reason: str,
        weight: int | None = None,
        steps: list[int] | None = None,
        allow_signature_change: bool = False,
        expected_revision: int | None = None,
    ) -> RolloutRecord:
        """Start a blue-green, canary or shadow rollout of ``version``."""
        reason = _require_reason(reason)
        if strategy not in MODES:
            raise InvalidInput(
                f"strategy must be one of {', '.join(m.replace('_', '-') for m in MODES)}, "
                f"got {strategy!r}"
            )
        plan = _plan(strategy, weight, steps)
        try:
            with self._changing(name) as (session, model, dep):
                _no_rollout_running(session, model)
                if dep.stable_version is None:
                    raise InvalidTransition(
                        f"model '{name}' has no stable version to roll out from; make one "
                        f"stable first (`osprey deploy set-stable {name} VERSION`)"
                    )
                if version == dep.stable_version:
                    raise InvalidTransition(
                        f"model '{name}' version {version} is the stable version already"
                    )
                self._check_deployable(session, model, version, dep.stable_version,
                                       allow_signature_change)
                first_weight, plan_steps = plan
                now = utcnow()
                rollout = Rollout(
                    model_id=model.id, candidate_version=version,
                    baseline_version=dep.stable_version, strategy=strategy, state="running",
                    steps=plan_steps,
                    current_step=plan_steps.index(first_weight)
                    if first_weight in plan_steps else 0,
                    weight=first_weight, started_at=now,
                    updated_at=now, started_by=actor, reason=reason,
                )
                session.add(rollout)
                session.flush()
                self._change(
                    session, model, dep, actor=actor, reason=reason, kind="rollout_started",
                    version=version, expected_revision=expected_revision,
                    extra={"strategy": strategy, "steps": plan_steps, "rollout": rollout.id},
                    candidate_version=version, mode=strategy, candidate_weight=first_weight,
                )
                return RolloutRecord.of(name, rollout)
        except IntegrityError as exc:
            if "uq_rollouts_one_running" in str(exc.orig) or "rollouts.model_id" in str(exc.orig):
                raise RolloutInProgress(
                    f"model '{name}': another rollout started at the same moment; see "
                    f"`osprey rollout status {name}`"
                ) from None
            raise

    def step_rollout(
        self,
        name: str,
        *,
        actor: str,
        reason: str,
        weight: int | None = None,
        expected_revision: int | None = None,
    ) -> RolloutRecord:
        """Move a canary (or shadow) rollout to ``weight`` or its next step."""
        reason = _require_reason(reason)
        with self._changing(name) as (session, model, dep):
            rollout = self._running(session, model)
            if rollout.strategy == "blue_green":
                raise InvalidTransition(
                    f"model '{name}': a blue-green rollout has no steps; `osprey rollout "
                    f"promote {name}` switches all traffic once every replica holds version "
                    f"{rollout.candidate_version} ready"
                )
            if weight is None:
                following = [s for s in rollout.steps[rollout.current_step + 1 :]]
                if not following:
                    raise InvalidTransition(
                        f"model '{name}': the rollout is at its last step "
                        f"({rollout.weight} %); promote or abort it, or give --weight"
                    )
                weight = following[0]
                step = rollout.current_step + 1
            else:
                _check_weight(weight)
                steps = list(rollout.steps)
                step = steps.index(weight) if weight in steps else rollout.current_step
            rollout.weight, rollout.current_step, rollout.updated_at = weight, step, utcnow()
            self._change(
                session, model, dep, actor=actor, reason=reason, kind="rollout_stepped",
                version=rollout.candidate_version, expected_revision=expected_revision,
                extra={"rollout": rollout.id, "step": step}, candidate_weight=weight,
            )
            session.flush()
            return RolloutRecord.of(name, rollout)

    def promote(
        self,
        name: str,
        *,
        actor: str,
        reason: str,
        force: bool = False,
        expected_revision: int | None = None,
        live_seconds: float = REPLICA_LIVE_SECONDS,
    ) -> DeploymentRecord:
        """Make the candidate stable everywhere at once."""
        reason = _require_reason(reason)
        with self._changing(name) as (session, model, dep):
            rollout = self._running(session, model)
            candidate = rollout.candidate_version
            if not force:
                missing = self._replicas_without(session, name, candidate, live_seconds)
                if missing:
                    raise PreconditionFailed(
                        f"model '{name}': version {candidate} is not loaded and ready on "
                        f"{len(missing)} live replica(s) ({', '.join(missing)}); wait for "
                        f"them (`osprey rollout status {name}`) or promote with --force"
                    )
            now = utcnow()
            rollout.state, rollout.finished_at, rollout.updated_at = "promoted", now, now
            rollout.weight = 100
            return self._change(
                session, model, dep, actor=actor, reason=reason, kind="rollout_promoted",
                version=candidate, expected_revision=expected_revision,
                extra={"rollout": rollout.id, "strategy": rollout.strategy},
                stable_version=candidate, previous_version=dep.stable_version,
                candidate_version=None, mode=None, candidate_weight=0,
            )

    def abort(
        self, name: str, *, actor: str, reason: str, expected_revision: int | None = None
    ) -> DeploymentRecord:
        """Stop the running rollout: all traffic back on the stable version."""
        reason = _require_reason(reason)
        with self._changing(name) as (session, model, dep):
            rollout = self._running(session, model)
            now = utcnow()
            rollout.state, rollout.finished_at, rollout.updated_at = "aborted", now, now
            return self._change(
                session, model, dep, actor=actor, reason=reason, kind="rollout_aborted",
                version=rollout.candidate_version, expected_revision=expected_revision,
                extra={"rollout": rollout.id, "strategy": rollout.strategy},
                candidate_version=None, mode=None, candidate_weight=0,
            )

    def rollback(
        self, name: str, *, actor: str, reason: str, expected_revision: int | None = None
    ) -> DeploymentRecord:
        """Make the previous stable version stable again (instant on replicas that
        still hold it within their rollback window)."""
        reason = _require_reason(reason)
        with self._changing(name) as (session, model, dep):
            _no_rollout_running(session, model)
            if dep.previous_version is None:
                raise InvalidTransition(
                    f"model '{name}' has no previous stable version to roll back to"
                )
            target = dep.previous_version
            row = repo.version_row(session, model, target)
            if row.status != "ready":
                raise VersionRejected(
                    f"model '{name}' version {target} cannot serve: {row.status} "
                    f"({row.status_reason})"
                )
            last = repo.last_rollout(session, model)
            if last is not None and last.state == "promoted" and (
                last.candidate_version == dep.stable_version
            ):
                last.state, last.updated_at = "rolled_back", utcnow()
            return self._change(
                session, model, dep, actor=actor, reason=reason, kind="rolled_back",
                version=target, expected_revision=expected_revision,
                stable_version=target, previous_version=dep.stable_version,
            )

    def status(self, name: str, live_seconds: float = REPLICA_LIVE_SECONDS) -> ModelStatus:
        with self.db.read() as session:
            model = repo.model_by_name(session, name)
            dep = repo.deployment_of(session, model)
            rollout = repo.running_rollout(session, model) or repo.last_rollout(session, model)
            rows = repo.versions_of(session, model)
            tags = repo.tags_of(session, [r.id for r in rows])
            return ModelStatus(
                ModelRecord.of(model),
                DeploymentRecord.of(name, dep),
                RolloutRecord.of(name, rollout) if rollout is not None else None,
                [VersionRecord.of(name, r, tags[r.id]) for r in rows],
                [r for r in self._live(session, live_seconds) if name in r.holds],
            )

    def history(
        self, name: str | None = None, limit: int = 50, since: dt.datetime | None = None
    ) -> list[EventRecord]:
        """The latest ``limit`` events (of one model, or all), oldest first."""
        with self.db.read() as session:
            if name is not None:
                repo.model_by_name(session, name)
            return [EventRecord.of(e) for e in repo.events_of(session, name, limit, since)]

    def rollouts(self, name: str, limit: int = 20) -> list[RolloutRecord]:
        with self.db.read() as session:
            model = repo.model_by_name(session, name)
            rows = session.scalars(
                select(Rollout).where(Rollout.model_id == model.id)
                .order_by(Rollout.id.desc()).limit(limit)
            ).all()
            return [RolloutRecord.of(name, r) for r in rows]

    def record_event(
        self, name: str, kind: str, *, actor: str, reason: str, version: int | None = None
    ) -> None:
        """Append an event that changes nothing else (e.g. a replica's load failure)."""
        with self.db.write() as session:
            repo.add_event(session, actor=actor, model=name, kind=kind, reason=reason,
                           version=version)

    def record_shadow_results(self, results: list[dict[str, Any]]) -> None:
        """Store shadow answers: dicts with decision_id, model, version, outputs,
        latency_ms (one transaction)."""
        if not results:
            return
        now = utcnow()
        with self.db.write() as session:
            session.execute(insert(ShadowResult), [{**r, "at": now} for r in results])

    def shadow_results(self, name: str, limit: int = 1000) -> list[dict[str, Any]]:
        with self.db.read() as session:
            rows = session.scalars(
                select(ShadowResult).where(ShadowResult.model == name)
                .order_by(ShadowResult.id.desc()).limit(limit)
            ).all()
            return [{"decision_id": r.decision_id, "version": r.version, "outputs": r.outputs,
                     "latency_ms": r.latency_ms, "at": r.at} for r in rows]

    # -- replicas ----------------------------------------------------------------------

    def heartbeat(
        self, replica_id: str, host: str, pid: int, holds: dict[str, Any], state: str = "serving"
    ) -> None:
        """Record what a server process holds (upsert, no event)."""
        now = utcnow()
        with self.db.write() as session:
            updated = session.execute(
                update(Replica).where(Replica.id == replica_id).values(
                    last_heartbeat=now, holds=holds, state=state, host=host, pid=pid
                ).returning(Replica.id)
            ).scalar_one_or_none()
            if updated is None:
                session.execute(insert(Replica).values(
                    id=replica_id, host=host, pid=pid, started_at=now, last_heartbeat=now,
                    holds=holds, state=state,
                ))

    def remove_replica(self, replica_id: str) -> None:
        with self.db.write() as session:
            session.execute(delete(Replica).where(Replica.id == replica_id))

    def replicas(self, live_seconds: float | None = None) -> list[ReplicaRecord]:
        with self.db.read() as session:
            if live_seconds is not None:
                return self._live(session, live_seconds)
            return [ReplicaRecord.of(r) for r in session.scalars(select(Replica).order_by(
                Replica.id))]

    # -- internals -------------------------------------------------------------------

    @contextmanager
    def _changing(self, name: str) -> Iterator[tuple[Session, Model, Deployment]]:
        """A write transaction with the model's row and its deployment, as read now."""
        with self.db.write() as session:
            model = repo.model_by_name(session, name)
            yield session, model, repo.deployment_of(session, model)

    @staticmethod
    def _live(session: Session, live_seconds: float) -> list[ReplicaRecord]:
        since = utcnow() - dt.timedelta(seconds=live_seconds)
        rows = session.scalars(
            select(Replica).where(Replica.last_heartbeat >= since).order_by(Replica.id)
        )
        return [ReplicaRecord.of(r) for r in rows]

    def _replicas_without(
        self, session: Session, name: str, version: int, live_seconds: float
    ) -> list[str]:
        """Live replicas serving ``name`` that do not hold ``version`` ready."""
        missing = []
        for replica in self._live(session, live_seconds):
            held = replica.holds.get(name)
            if held is not None and version not in held.get("ready", []):
                missing.append(replica.id)
        return missing

    @staticmethod
    def _running(session: Session, model: Model) -> Rollout:
        rollout = repo.running_rollout(session, model)
        if rollout is None:
            last = repo.last_rollout(session, model)
            detail = ""
            if last is not None:
                detail = (
                    f"; the last one (version {last.candidate_version}) was "
                    f"{last.state.replace('_', ' ')} at {last.updated_at:%Y-%m-%d %H:%M:%S} UTC"
                )
            raise NoRolloutInProgress(f"model '{model.name}' has no rollout running{detail}")
        return rollout

    @staticmethod
    def _check_deployable(
        session: Session, model: Model, version: int, stable: int | None, allow_change: bool
    ) -> None:
        row = repo.version_row(session, model, version)
        if row.status != "ready":
            raise VersionRejected(
                f"model '{model.name}' version {version} cannot be deployed: it is "
                f"{row.status}{f' ({row.status_reason})' if row.status_reason else ''}"
            )
        if stable is None or stable == version or allow_change:
            return
        current = repo.version_row(session, model, stable)
        difference = signature_difference(current.signature, row.signature)
        if difference:
            raise SignatureChanged(
                f"model '{model.name}' version {version} has a different signature from "
                f"stable version {stable}: {difference}; clients would break. Pass "
                "--allow-signature-change if they are ready for it"
            )

    @staticmethod
    def _change(
        session: Session,
        model: Model,
        dep: Deployment,
        *,
        actor: str,
        reason: str,
        kind: str,
        version: int | None,
        expected_revision: int | None,
        extra: dict[str, Any] | None = None,
        **values: Any,
    ) -> DeploymentRecord:
        """Compare-and-set the deployment on its revision, and record the event."""
        before = DeploymentRecord.of(model.name, dep)
        if expected_revision is not None and dep.revision != expected_revision:
            raise DeploymentConflict(
                f"model '{model.name}': the deployment is at revision {dep.revision}, not "
                f"{expected_revision}; someone changed it (`osprey rollout history "
                f"{model.name}`)"
            )
        now = utcnow()
        changed = session.execute(
            update(Deployment)
            .where(Deployment.model_id == model.id, Deployment.revision == dep.revision)
            .values(**values, revision=dep.revision + 1, updated_at=now, updated_by=actor)
            .returning(Deployment.revision)
        ).scalar_one_or_none()
        if changed is None:
            raise DeploymentConflict(
                f"model '{model.name}': the deployment changed while this change was being "
                f"made (revision {dep.revision} is stale); nothing was changed. Re-read "
                f"`osprey rollout status {model.name}` and retry"
            )
        after = DeploymentRecord.of(model.name, repo.deployment_of(session, model))
        if session.get_bind().dialect.name == "postgresql":
            # A wake-up for the replicas, delivered when this transaction commits.
            session.execute(select(func.pg_notify(NOTIFY_CHANNEL, model.name)))
        repo.add_event(
            session, actor=actor, model=model.name, version=version, kind=kind, reason=reason,
            before=before.state(), after={**after.state(), **(extra or {})},
        )
        return after


def _no_rollout_running(session: Session, model: Model) -> None:
    """RolloutInProgress if ``model`` has a running rollout (one at a time)."""
    running = repo.running_rollout(session, model)
    if running is not None:
        raise RolloutInProgress(
            f"model '{model.name}' already has a {_label(running.strategy)} rollout of "
            f"version {running.candidate_version} running (started by {running.started_by} "
            f"at {running.started_at:%Y-%m-%d %H:%M:%S} UTC); promote or abort it first "
            f"(`osprey rollout promote|abort {model.name}`)"
        )


def _label(strategy: str) -> str:
    """How the CLI spells a strategy (blue-green, canary, shadow)."""
    return strategy.replace("_", "-")


def _check_weight(weight: int) -> None:
    if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
        raise InvalidInput(f"weight must be an integer from 0 to 100, got {weight!r}")


def _plan(strategy: str, weight: int | None, steps: list[int] | None) -> tuple[int, list[int]]:
    """(first weight, steps) of a new rollout."""
    if steps is not None:
        for s in steps:
            _check_weight(s)
        if list(steps) != sorted(steps) or len(set(steps)) != len(steps):
            raise InvalidInput(f"steps must be increasing weights, got {steps}")
    if weight is not None:
        _check_weight(weight)
    if strategy == "blue_green":
        if weight not in (None, 0) or steps:
            raise InvalidInput(
                "a blue-green rollout takes no weight or steps: the candidate loads with no "
                "traffic, then promote switches 100 % at once"
            )
        return 0, []
    if strategy == "shadow":
        first = DEFAULT_SHADOW_WEIGHT if weight is None else weight
        return first, list(steps) if steps else [first]
    plan = list(steps) if steps else list(DEFAULT_CANARY_STEPS)
    first = plan[0] if weight is None else weight
    if weight is not None and weight not in plan:
        plan = sorted({*plan, weight})
    return first, plan
