"""Where the server learns which models and versions exist.

``ModelSource`` is the seam: the server asks it for model names and definitions and
never walks folders itself. ``RepositoryFolder`` is the Triton-style source used now::

    <repo>/<model>/config.json          # optional, see server.model_config
    <repo>/<model>/<version>/model.onnx # version: a positive integer
    <repo>/<model>/<version>/feature_spec.json       # optional, with the profile:
    <repo>/<model>/<version>/reference_profile.json  # see server.features

A version with a feature spec takes raw columns and runs the spec's compiled
transform before ONNX Runtime; the source only reports which files are there (the
loader refuses a version that has one of the two without the other).

The SQL registry becomes another ``ModelSource``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .errors import ModelNotFound
from .model_config import ModelSettings, load_model_settings
from .router import Route

MODEL_FILE = "model.onnx"
CONFIG_FILE = "config.json"
SPEC_FILE = "feature_spec.json"
PROFILE_FILE = "reference_profile.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


@dataclass(frozen=True)
class FeatureFiles:
    """A version's feature spec and reference profile, as found (None = absent)."""

    spec: Path | None
    profile: Path | None


@dataclass(frozen=True)
class ModelDefinition:
    """What the source says about one model: settings and the versions to serve."""

    name: str
    settings: ModelSettings
    artifacts: dict[int, Path]  # version -> ONNX file, already filtered by the policy
    available: tuple[int, ...]  # every version present, served or not
    # version -> its feature files, for the served versions that have either file
    features: dict[int, FeatureFiles] = field(default_factory=dict)
    # The deployment requests without a version are routed by (None: the newest).
    route: Route | None = None
    # Artifacts are content-addressed (the registry): a version already loaded from
    # the same file with the same settings is kept, not rebuilt, and versions load
    # one by one (one that fails is reported; the others serve).
    content_addressed: bool = False
    # version -> why the source could not provide it (e.g. a checksum mismatch)
    unavailable: dict[int, str] = field(default_factory=dict)


class ModelSource(Protocol):
    """Anything that can list models and describe one."""

    def model_names(self) -> list[str]:
        """Names of every model the source holds."""
        ...

    def definition(self, name: str) -> ModelDefinition:
        """Settings and artifacts of ``name``; ModelNotFound / ConfigError otherwise."""
        ...


class RepositoryFolder:
    """A Triton-style model repository folder."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def model_names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and _NAME.match(p.name) and self._versions(p)
        )

    def definition(self, name: str) -> ModelDefinition:
        if not _NAME.match(name):
            raise ModelNotFound(f"model '{name}' is not a valid model name")
        folder = self.root / name
        versions = self._versions(folder) if folder.is_dir() else []
        if not versions:
            raise ModelNotFound(
                f"model '{name}' not found in repository {self.root} "
                f"(expected {folder}/<version>/{MODEL_FILE})"
            )
        settings = load_model_settings(folder / CONFIG_FILE)
        selected = settings.version_policy.select(versions)
        features = {}
        for v in selected:
            spec, profile = folder / str(v) / SPEC_FILE, folder / str(v) / PROFILE_FILE
            if spec.exists() or profile.exists():
                features[v] = FeatureFiles(
                    spec if spec.exists() else None, profile if profile.exists() else None
                )
        return ModelDefinition(
            name=name,
            settings=settings,
            artifacts={v: folder / str(v) / MODEL_FILE for v in selected},
            available=tuple(versions),
            features=features,
        )

    @staticmethod
    def _versions(folder: Path) -> list[int]:
        return sorted(
            int(p.name)
            for p in folder.iterdir()
            if p.is_dir() and p.name.isdigit() and int(p.name) > 0 and (p / MODEL_FILE).is_file()
        )
