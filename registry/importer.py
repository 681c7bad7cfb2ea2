"""``osprey models import``: a Triton-style model-repository folder into the registry.

Every version folder (``<repo>/<model>/<n>/model.onnx``, with its feature spec and
reference profile when present) is registered in folder order; the model's
``config.json`` becomes its settings. A version whose artifact (sha256) and
feature spec are already registered for the model is not registered twice, so
importing the same folder again changes nothing. For a model without a stable
version, the newest version its version policy selects becomes stable. A version's
``evaluation.json`` (written by the trainer) becomes its metrics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.errors import ConfigError, ModelNotFound
from server.model_source import CONFIG_FILE, RepositoryFolder

from .artifacts import sha256_of
from .errors import InvalidArtifact, UnknownModel
from .service import NewVersion, Registry

EVALUATION_FILE = "evaluation.json"


@dataclass(frozen=True)
class Imported:
    model: str
    source_version: int
    version: int  # the registry's number (new, or the one already registered)
    stable: bool
    new: bool


def import_repository(
    registry: Registry, root: Path, *, actor: str, reason: str, set_stable: bool = True
) -> list[Imported]:
    if not root.is_dir():
        raise InvalidArtifact(f"model repository {root} is not a folder")
    folder = RepositoryFolder(root)
    out: list[Imported] = []
    for name in folder.model_names():
        try:
            definition = folder.definition(name)
        except (ConfigError, ModelNotFound) as exc:
            raise InvalidArtifact(f"model repository {root}: {exc.message}") from None
        settings = _settings(root / name / CONFIG_FILE)
        known = _registered(registry, name)
        numbers: dict[int, tuple[int, bool]] = {}
        for source in definition.available:
            version_dir = root / name / str(source)
            onnx_path = version_dir / "model.onnx"
            spec = _text(version_dir / "feature_spec.json")
            profile = _text(version_dir / "reference_profile.json")
            key = (sha256_of(onnx_path), spec is not None)
            if key in known:
                numbers[source] = (known[key], False)
                continue
            record = registry.register(
                name, onnx_path, actor=actor, reason=f"{reason} (imported from {version_dir})",
                settings=settings,
                new=NewVersion(feature_spec=spec, reference_profile=profile,
                               metrics=_metrics(version_dir / EVALUATION_FILE),
                               tags={"imported_from": str(version_dir.resolve())}),
            )
            known[key] = record.version
            numbers[source] = (record.version, True)
        stable_source = max(definition.artifacts) if definition.artifacts else None
        made_stable = None
        if set_stable and stable_source is not None:
            deployment = registry.deployment(name)
            if deployment.stable_version is None:
                made_stable = numbers[stable_source][0]
                registry.set_stable(name, made_stable, actor=actor,
                                    reason=f"{reason} (imported from {root})")
        out += [
            Imported(name, source, number, number == made_stable, new)
            for source, (number, new) in sorted(numbers.items())
        ]
    return out


def _settings(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InvalidArtifact(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InvalidArtifact(f"{path}: expected a JSON object")
    return data


def _metrics(path: Path) -> dict[str, Any]:
    """A version folder's ``evaluation.json`` (what the trainer writes), as metrics."""
    data = _settings(path)
    return {k: v for k, v in data.items() if isinstance(v, int | float | str | bool)}


def _text(path: Path) -> str | None:
    return path.read_text() if path.is_file() else None


def _registered(registry: Registry, name: str) -> dict[tuple[str, bool], int]:
    try:
        versions = registry.versions(name)
    except UnknownModel:
        return {}
    return {(v.sha256, v.has_feature_spec): v.version for v in versions}
