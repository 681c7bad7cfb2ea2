"""The versions this server has loaded, and loading/unloading them at run time.

A (re)load builds every selected version completely (sessions, warmup) off the event
loop before it swaps them in atomically; if anything fails, whatever served before
keeps serving and the error names the model and the cause. Replaced or unloaded
versions drain their queues before their sessions are dropped.

Registry models (content-addressed definitions with a ``Route``) reload
incrementally: versions whose files and settings did not change are kept as they
are, new ones are built one by one (one that fails is left out, with why), and
the route and the version map are swapped together; ``choose`` applies the route
to each request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .batcher import DynamicBatcher
from .errors import ModelLoadError, ModelNotFound, ModelNotReady, OspreyError
from .features import TRANSFORM_EXTENSION, DriftCounts, FeatureTransform
from .metrics import ServerMetrics
from .model_config import ModelSettings
from .model_source import FeatureFiles, ModelDefinition, ModelSource
from .router import Route, choose
from .runtime import OnnxModel, TensorSpec
from .stats import VersionStats

log = logging.getLogger("osprey.models")

READY = "READY"
UNAVAILABLE = "UNAVAILABLE"
LOADING = "LOADING"
UNLOADING = "UNLOADING"


@dataclass
class ServedVersion:
    """One loaded, warmed model version with its batcher and statistics.

    ``features`` is the compiled feature spec of a version that has one (its public
    inputs are then the spec's raw columns), None for a plain ONNX version.
    """

    name: str
    version: int
    model: OnnxModel
    batcher: DynamicBatcher
    stats: VersionStats
    features: FeatureTransform | None = None
    # What it was built from, to tell whether a new definition can keep it.
    source_key: tuple[object, ...] = ()
    retired: bool = False

    @property
    def settings(self) -> ModelSettings:
        return self.model.settings

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """The inputs clients send: the spec's raw columns, or the ONNX model's inputs."""
        return self.features.inputs if self.features is not None else self.model.inputs

    def drift_counts(self) -> DriftCounts | None:
        """The drift counts of every row served so far (None without a feature spec, or
        with ``"drift_sketch": false``)."""
        if self.features is None:
            return None
        return self.features.drift_counts(self.name, self.version)


@dataclass
class ModelEntry:
    """A model's state: its served versions, or why it has none."""

    name: str
    state: str
    reason: str = ""
    definition: ModelDefinition | None = None
    versions: dict[int, ServedVersion] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    route: Route | None = None
    failures: dict[int, str] = field(default_factory=dict)  # version -> why it is not loaded


@dataclass(frozen=True)
class IndexRow:
    """One row of the repository index."""

    name: str
    version: str
    state: str
    reason: str


ReadinessListener = Callable[[str, bool], None]


class LoadedModels:
    """Models known to this server, keyed by name."""

    def __init__(
        self,
        source: ModelSource,
        metrics: ServerMetrics,
        on_readiness: ReadinessListener | None = None,
    ) -> None:
        self.source = source
        self.metrics = metrics
        self._models: dict[str, ModelEntry] = {}
        self._on_readiness = on_readiness or (lambda name, ready: None)

    # -- lookups (hot path) --------------------------------------------------------

    def get(self, name: str, version: str = "") -> ServedVersion:
        """The version to run for ``name`` (empty ``version`` = the newest served)."""
        entry = self._models.get(name)
        if entry is None:
            raise ModelNotFound(f"model '{name}' is not known to this server")
        if not entry.versions:
            if entry.state == LOADING:
                raise ModelNotReady(f"model '{name}' is loading")
            raise ModelNotFound(
                f"model '{name}' has no loaded version (state {entry.state}"
                + (f": {entry.reason}" if entry.reason else "")
                + ")"
            )
        if not version:
            route = entry.route
            if route is not None and route.stable in entry.versions:
                return entry.versions[route.stable]
            return entry.versions[max(entry.versions)]
        if not version.isdigit():
            raise ModelNotFound(
                f"model '{name}' has no version '{version}'; versions are positive integers"
            )
        served = entry.versions.get(int(version))
        if served is None:
            raise ModelNotFound(
                f"model '{name}' version {version} is not loaded; loaded versions: "
                f"{', '.join(map(str, sorted(entry.versions)))}"
            )
        return served

    def choose(self, name: str, key: str) -> tuple[ServedVersion, ServedVersion | None, str]:
        """Route a request without a version: (answering version, shadow version or
        None, route name). A routed version this replica has not loaded (still
        warming, or failed) falls back to the stable, then to the newest version."""
        default = self.get(name)
        entry = self._models[name]
        if entry.route is None:
            return default, None, "stable"
        choice = choose(entry.route, key)
        served = entry.versions.get(choice.version) if choice.version is not None else None
        if served is None:
            served, route_name = default, "stable"
        else:
            route_name = choice.route
        shadow = entry.versions.get(choice.shadow) if choice.shadow is not None else None
        return served, shadow, route_name

    def is_ready(self, name: str, version: str = "") -> bool:
        try:
            self.get(name, version)
        except OspreyError:
            return False
        return True

    def served(self) -> list[ServedVersion]:
        return [v for e in self._models.values() for v in e.versions.values()]

    def entries(self) -> list[ModelEntry]:
        return [self._models[name] for name in sorted(self._models)]

    def index(self, ready_only: bool = False) -> list[IndexRow]:
        """Every model in the source and every loaded version, with its state."""
        rows: list[IndexRow] = []
        for name in sorted(set(self.source.model_names()) | set(self._models)):
            entry = self._models.get(name)
            if entry is None:
                if not ready_only:
                    rows.append(IndexRow(name, "", UNAVAILABLE, "not loaded"))
                continue
            if entry.versions:
                rows.extend(IndexRow(name, str(v), READY, "") for v in sorted(entry.versions))
            elif not ready_only:
                rows.append(IndexRow(name, "", entry.state, entry.reason))
        return rows

    # -- control -------------------------------------------------------------------

    async def load(self, name: str) -> None:
        """(Re)load ``name`` from the source; on failure the old versions keep serving."""
        entry = self._models.get(name)
        if entry is None:
            definition = self.source.definition(name)  # ModelNotFound before any state
            entry = self._models.setdefault(name, ModelEntry(name, LOADING))
        else:
            definition = None
        async with entry.lock:
            try:
                if definition is None:
                    definition = self.source.definition(name)
                if definition.content_addressed:
                    built, failures = await self._build_each(definition, entry.versions)
                else:
                    built, failures = await self._build(definition), {}
            except OspreyError as exc:
                if not entry.versions:
                    entry.state, entry.reason = UNAVAILABLE, exc.message
                log.error("loading model '%s' failed: %s", name, exc.message)
                raise
            except Exception as exc:
                if not entry.versions:
                    entry.state, entry.reason = UNAVAILABLE, "load failed"
                log.exception("loading model '%s' failed", name)
                raise ModelLoadError(f"model '{name}' failed to load: {exc}") from None
            old = entry.versions
            entry.versions = built
            entry.definition = definition
            entry.route = definition.route
            entry.failures = failures
            entry.state, entry.reason = READY, ""
            self._on_readiness(name, True)
            log.info(
                "model '%s' serving version(s) %s (%s)",
                name,
                ", ".join(map(str, sorted(built))),
                _describe_route(definition),
            )
            await self._retire(v for k, v in old.items() if built.get(k) is not v)

    async def unload(self, name: str) -> None:
        """Stop serving ``name``: new requests are refused, queued ones finish."""
        entry = self._models.get(name)
        if entry is None:
            raise ModelNotFound(f"model '{name}' is not loaded")
        async with entry.lock:
            old, entry.versions = entry.versions, {}
            entry.state, entry.reason = UNAVAILABLE, "unloaded"
            self._on_readiness(name, False)
            await self._retire(old.values())
            log.info("model '%s' unloaded", name)

    async def close(self) -> None:
        """Drain and drop every version (shutdown)."""
        for entry in list(self._models.values()):
            old, entry.versions = entry.versions, {}
            entry.state = UNAVAILABLE
            self._on_readiness(entry.name, False)
            await self._retire(old.values())

    async def _build_each(
        self, definition: ModelDefinition, current: dict[int, ServedVersion]
    ) -> tuple[dict[int, ServedVersion], dict[int, str]]:
        """Keep loaded versions built from the same files and settings; build the others
        one by one. A version that fails is left out (with why), the others serve; if
        none can serve, the model fails to load (and what served before keeps serving)."""
        built: dict[int, ServedVersion] = {}
        failures = dict(definition.unavailable)
        for version, path in sorted(definition.artifacts.items()):
            key = _source_key(definition, version, path)
            existing = current.get(version)
            if existing is not None and existing.source_key == key:
                built[version] = existing
                continue
            single = dataclasses.replace(
                definition, artifacts={version: path},
                features={version: definition.features[version]}
                if version in definition.features else {},
            )
            try:
                built.update(await self._build(single))
            except OspreyError as exc:
                failures[version] = exc.message
                log.error("model '%s' version %d not loaded: %s", definition.name, version,
                          exc.message)
        for version, why in definition.unavailable.items():
            log.error("model '%s' version %d not loaded: %s", definition.name, version, why)
        if not built:
            reasons = "; ".join(f"version {v}: {why}" for v, why in sorted(failures.items()))
            raise ModelLoadError(f"model '{definition.name}': no version could be loaded "
                                 f"({reasons or 'none selected'})")
        return built, failures

    async def _build(self, definition: ModelDefinition) -> dict[int, ServedVersion]:
        if not definition.artifacts:
            raise ModelLoadError(
                f"model '{definition.name}': version policy "
                f"{definition.settings.version_policy.describe()} selects none of the "
                f"available versions {list(definition.available)}"
            )
        loop = asyncio.get_running_loop()
        built: dict[int, ServedVersion] = {}
        try:
            for version, path in sorted(definition.artifacts.items()):
                model, features = await loop.run_in_executor(
                    None,
                    self._load_model,
                    definition.name,
                    version,
                    path,
                    definition.settings,
                    definition.features.get(version),
                )
                metrics = self.metrics.for_version(
                    definition.name, version, sketched=features is not None and features.sketching
                )
                stats = VersionStats(metrics, definition.name, version)
                built[version] = ServedVersion(
                    definition.name,
                    version,
                    model,
                    DynamicBatcher(model, stats, features),
                    stats,
                    features,
                    _source_key(definition, version, path),
                )
        except BaseException:
            await self._retire(built.values())
            raise
        return built

    @staticmethod
    def _load_model(
        name: str, version: int, path: Path, settings: ModelSettings, files: FeatureFiles | None
    ) -> tuple[OnnxModel, FeatureTransform | None]:
        """Create the sessions, compile the feature spec if any, and warm them up
        (runs off the event loop)."""
        model = OnnxModel(name, version, path, settings)
        if files is None:
            model.warmup()
            return model, None
        features = FeatureTransform.load(name, version, files, model, settings.drift_sketch)
        model.warmup(features.example_feeds)
        log.info(
            "model '%s' version %d: feature spec of %d raw column(s) -> %d features into "
            "ONNX input '%s' (transform: %s), drift over %d bins%s",
            name,
            version,
            len(features.inputs),
            features.plan.n_features,
            features.model_input,
            "Cython kernel" if TRANSFORM_EXTENSION else "NumPy twin",
            features.plan.n_bins,
            "" if features.sketching else " (not counted: drift_sketch is false)",
        )
        return model, features

    async def _retire(self, versions: Iterable[ServedVersion]) -> None:
        for served in list(versions):
            served.retired = True
            await served.batcher.close(drain=True)


def _source_key(definition: ModelDefinition, version: int, path: Path) -> tuple[object, ...]:
    """What a served version was built from: file, feature files, settings."""
    return (str(path), definition.features.get(version), definition.settings)


def _describe_route(definition: ModelDefinition) -> str:
    route = definition.route
    if route is None:
        return f"policy {definition.settings.version_policy.describe()}"
    if route.candidate is None:
        return f"stable {route.stable}, deployment revision {route.revision}"
    return (
        f"stable {route.stable}, candidate {route.candidate} ({route.mode}, weight "
        f"{route.weight} %), deployment revision {route.revision}"
    )
