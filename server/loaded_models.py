"""The versions this server has loaded, and loading/unloading them at run time.

A (re)load builds every selected version completely (sessions, warmup) off the event
loop before it swaps them in atomically; if anything fails, whatever served before
keeps serving and the error names the model and the cause. Replaced or unloaded
versions drain their queues before their sessions are dropped.
"""

from __future__ import annotations

import asyncio
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
                built = await self._build(definition)
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
            entry.state, entry.reason = READY, ""
            self._on_readiness(name, True)
            log.info(
                "model '%s' serving version(s) %s (policy %s)",
                name,
                ", ".join(map(str, sorted(built))),
                definition.settings.version_policy.describe(),
            )
            await self._retire(old.values())

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
            await served.batcher.close(drain=True)
