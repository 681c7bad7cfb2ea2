"""Serving from the SQL registry: a ``ModelSource`` that follows the deployments.

``RegistrySource.refresh`` (blocking: database and artifact IO, run in a thread)
reads every model's deployment and, for each model whose deployment revision,
settings or rollback window changed, prepares a ``ModelDefinition``: the stable
version, the candidate and the previous stable version (while the rollback window
lasts), each fetched from the artifact store with its sha256 checked, plus the
``Route`` requests follow. A version whose checksum fails is marked rejected in
the registry (with an event) and left out; the others serve.

``RegistryWatcher`` runs in each server process: it refreshes every
``registry_poll_seconds`` (and at once when PostgreSQL notifies a deployment
change), applies changed definitions through ``LoadedModels.load`` (unchanged
versions are kept, new ones load and warm in the background, then the route and
the versions swap together), and heartbeats what it holds into the ``replicas``
table. If the database cannot be reached it keeps serving what it has, reports
the ``osprey.registry`` health service NOT_SERVING and ``osprey_registry_unreachable`` 1,
and catches up when the database returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry.artifacts import ChecksumMismatch
from registry.db import pg_connect_args
from registry.errors import RegistryUnavailable
from registry.records import DeploymentRecord, ModelRecord, VersionRecord
from registry.service import NOTIFY_CHANNEL, Registry

from .errors import ConfigError, ModelNotFound, OspreyError
from .loaded_models import LoadedModels
from .model_config import parse_model_settings
from .model_source import PROFILE_FILE, SPEC_FILE, FeatureFiles, ModelDefinition
from .router import Route

log = logging.getLogger("osprey.registry")


def replica_identity() -> tuple[str, str, int]:
    """(replica id, host, pid) of this process."""
    host = socket.gethostname()
    pid = os.getpid()
    return f"{host}:{pid}", host, pid


@dataclass(frozen=True)
class _Applied:
    """What a definition was prepared from (a change of any part re-prepares it)."""

    revision: int
    settings: str
    versions: tuple[int, ...]


class RegistrySource:
    """The registry's deployments as model definitions (see the module docstring)."""

    def __init__(self, registry: Registry, cache: Path, rollback_window_seconds: float) -> None:
        self.registry = registry
        self.cache = cache
        self.rollback_window = dt.timedelta(seconds=rollback_window_seconds)
        self._definitions: dict[str, ModelDefinition] = {}
        self._applied: dict[str, _Applied] = {}
        self._lock = threading.Lock()

    # -- ModelSource ---------------------------------------------------------------------

    def model_names(self) -> list[str]:
        with self._lock:
            return sorted(self._definitions)

    def definition(self, name: str) -> ModelDefinition:
        with self._lock:
            found = self._definitions.get(name)
        if found is None:
            raise ModelNotFound(
                f"model '{name}' has no deployment in the registry (register it and make a "
                f"version stable: `osprey deploy set-stable {name} VERSION`)"
            )
        return found

    # -- refresh (blocking) -----------------------------------------------------------------

    def refresh(self, now: dt.datetime | None = None) -> list[str]:
        """Re-read the deployments; the names of models whose definition changed."""
        now = now or dt.datetime.now(dt.UTC)
        changed = []
        for model, deployment, _count in self.registry.models():
            if deployment.stable_version is None:
                continue
            wanted = self._wanted(deployment, now)
            applied = _Applied(deployment.revision, repr(sorted(model.settings.items())), wanted)
            if self._applied.get(model.name) == applied:
                continue
            definition = self._prepare(model, deployment, wanted)
            with self._lock:
                self._definitions[model.name] = definition
            self._applied[model.name] = applied
            changed.append(model.name)
        return changed

    def _wanted(self, d: DeploymentRecord, now: dt.datetime) -> tuple[int, ...]:
        versions = {d.stable_version}
        if d.candidate_version is not None:
            versions.add(d.candidate_version)
        if d.previous_version is not None and now - d.updated_at < self.rollback_window:
            versions.add(d.previous_version)
        return tuple(sorted(v for v in versions if v is not None))

    def _prepare(
        self, model: ModelRecord, d: DeploymentRecord, wanted: tuple[int, ...]
    ) -> ModelDefinition:
        try:
            settings = parse_model_settings(model.settings, f"registry settings of '{model.name}'")
        except ConfigError as exc:
            raise ConfigError(exc.message) from None
        records = {v.version: v for v in self.registry.versions(model.name)}
        artifacts: dict[int, Path] = {}
        features: dict[int, FeatureFiles] = {}
        unavailable: dict[int, str] = {}
        for version in wanted:
            record = records.get(version)
            if record is None:
                unavailable[version] = "not in the registry"
                continue
            if record.status != "ready":
                unavailable[version] = f"{record.status}: {record.status_reason}"
                continue
            try:
                artifacts[version] = self.registry.fetch_artifact(record)
            except ChecksumMismatch as exc:
                unavailable[version] = exc.message
                self._reject(record, exc.message)
                continue
            if record.has_feature_spec:
                features[version] = self._feature_files(record)
        route = Route(d.stable_version, d.candidate_version, d.candidate_weight, d.mode,
                      d.revision)
        return ModelDefinition(
            name=model.name, settings=settings, artifacts=artifacts,
            available=tuple(sorted(records)), features=features, route=route,
            content_addressed=True, unavailable=unavailable,
        )

    def _feature_files(self, record: VersionRecord) -> FeatureFiles:
        """The version's spec and profile as files (what the loader reads)."""
        folder = self.cache / "features" / record.model / f"{record.version}-{record.sha256[:16]}"
        spec_path, profile_path = folder / SPEC_FILE, folder / PROFILE_FILE
        if not (spec_path.is_file() and profile_path.is_file()):
            spec, profile = self.registry.feature_documents(record.model, record.version)
            folder.mkdir(parents=True, exist_ok=True)
            for path, text in ((spec_path, spec), (profile_path, profile)):
                tmp = path.with_suffix(".tmp")
                tmp.write_text(text or "")
                tmp.replace(path)
        return FeatureFiles(spec_path, profile_path)

    def _reject(self, record: VersionRecord, why: str) -> None:
        replica, _, _ = replica_identity()
        log.error("model '%s' version %d refused: %s", record.model, record.version, why)
        try:
            self.registry.reject_version(record.model, record.version, actor=f"replica {replica}",
                                         reason=why)
        except OspreyError as exc:
            log.warning("could not record the refusal: %s", exc.message)

    def forget(self, name: str) -> None:
        """Prepare ``name`` again on the next refresh (after a failed load)."""
        self._applied.pop(name, None)


STOP_SECONDS = 5.0  # for leaving the registry's list of replicas on stop


class PostgresWakeUp:
    """LISTEN on the deployments channel in a thread; calls ``wake`` per notification."""

    def __init__(self, url: str, wake: Callable[[], None],
                 connect_args: dict[str, int]) -> None:
        self.url = url
        self.connect_args: dict[str, Any] = dict(connect_args)
        self.wake = wake
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="osprey-registry-listen",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _listen(self) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, **self.connect_args) as conn:
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=1.0):
                            self.wake()
            except Exception as exc:  # the poll still runs; retry the wake-up channel
                log.debug("registry LISTEN connection lost: %s", exc)
                self._stop.wait(2.0)


class RegistryWatcher:
    """Keeps one server process's models in step with the registry."""

    def __init__(
        self,
        source: RegistrySource,
        models: LoadedModels,
        poll_seconds: float,
        on_reachable: Callable[[bool], None],
    ) -> None:
        self.source = source
        self.models = models
        self.poll_seconds = poll_seconds
        self.on_reachable = on_reachable
        self.replica_id, self.host, self.pid = replica_identity()
        self.reachable = True
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: PostgresWakeUp | None = None
        self._reported: set[tuple[str, int, str]] = set()

    async def start(self) -> None:
        """The first sync: every deployed model loaded and warm, or an error."""
        await self.sync(raise_unreachable=True)
        db = self.source.registry.db
        if db.dialect == "postgresql":
            loop = asyncio.get_running_loop()
            url = db.url.set(drivername="postgresql").render_as_string(hide_password=False)

            def wake() -> None:
                loop.call_soon_threadsafe(self._wake.set)

            self._listener = PostgresWakeUp(url, wake, pg_connect_args(db.url))
            self._listener.start()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_seconds)
            self._wake.clear()
            try:
                await self.sync()
            except Exception:
                log.exception("registry sync failed; retrying at the next poll")

    async def sync(self, raise_unreachable: bool = False) -> None:
        """One round: refresh, apply what changed, heartbeat."""
        try:
            changed = await asyncio.to_thread(self.source.refresh)
        except RegistryUnavailable as exc:
            if raise_unreachable:
                raise
            self._set_reachable(False, exc.message)
            return
        for name in changed:
            try:
                await self.models.load(name)
            except OspreyError as exc:
                log.error("model '%s': deployment not applied: %s", name, exc.message)
                self.source.forget(name)
        await self._report_failures()
        try:
            await asyncio.to_thread(self._heartbeat)
        except RegistryUnavailable as exc:
            self._set_reachable(False, exc.message)
            return
        self._set_reachable(True, "")

    def holds(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for entry in self.models.entries():
            route = entry.route
            out[entry.name] = {
                "revision": route.revision if route is not None else None,
                "loaded": sorted(entry.versions),
                "ready": sorted(v for v, s in entry.versions.items() if not s.retired),
                "failed": {str(v): why for v, why in sorted(entry.failures.items())},
            }
        return out

    def _heartbeat(self) -> None:
        self.source.registry.heartbeat(self.replica_id, self.host, self.pid, self.holds())

    async def _report_failures(self) -> None:
        """One event per version this replica could not load (and why)."""
        for entry in self.models.entries():
            for version, why in entry.failures.items():
                key = (entry.name, version, why)
                if key in self._reported:
                    continue
                self._reported.add(key)
                try:
                    await asyncio.to_thread(
                        self._event, entry.name, version, why)
                except OspreyError as exc:
                    log.warning("could not record a load failure: %s", exc.message)

    def _event(self, model: str, version: int, why: str) -> None:
        self.source.registry.record_event(
            model, "version_load_failed", actor=f"replica {self.replica_id}", version=version,
            reason=why,
        )

    def _set_reachable(self, reachable: bool, why: str) -> None:
        if reachable != self.reachable:
            if reachable:
                log.info("registry database reachable again; following deployments")
            else:
                log.warning("registry database unreachable (%s); serving the last deployment",
                            why)
        self.reachable = reachable
        self.on_reachable(reachable)

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        try:
            await asyncio.wait_for(
                asyncio.to_thread(self.source.registry.remove_replica, self.replica_id),
                STOP_SECONDS)
        except (OspreyError, TimeoutError):
            log.warning("could not remove this replica from the registry; it ages out")

