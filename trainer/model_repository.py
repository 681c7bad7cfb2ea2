"""Write a trained scorer into a Triton-style model repository folder, atomically.

Layout (what ``server.model_source.RepositoryFolder`` serves)::

    <repo>/<name>/config.json                 serving settings, score and decision
    <repo>/<name>/<version>/model.onnx               the artifact
    <repo>/<name>/<version>/feature_spec.json        raw columns → the model's matrix
    <repo>/<name>/<version>/reference_profile.json   the drift reference
    <repo>/<name>/<version>/evaluation.json          metrics, windows, lineage, sha256s

The two feature documents come together or not at all: a version with them is
served with its raw columns as inputs (the server runs the spec's transform), one
without them as plain ONNX. ``evaluation.json`` records the sha256 of every file
beside it (``sha256`` for ``model.onnx``, ``feature_spec_sha256``,
``reference_profile_sha256``), and ``verified_evaluation`` checks them all.

A version folder is assembled in a hidden staging folder beside it (the server skips
names that are not positive integers) and renamed into place, so a crashed run never
leaves a half-written version; ``config.json`` is replaced by rename too. One writer
per model folder at a time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("osprey.trainer")

MODEL_FILE = "model.onnx"
EVALUATION_FILE = "evaluation.json"
CONFIG_FILE = "config.json"
FEATURE_SPEC_FILE = "feature_spec.json"
REFERENCE_PROFILE_FILE = "reference_profile.json"
# the feature documents and the evaluation.json key holding each one's sha256
FEATURE_FILES: dict[str, str] = {
    FEATURE_SPEC_FILE: "feature_spec_sha256",
    REFERENCE_PROFILE_FILE: "reference_profile_sha256",
}
_STAGING_PREFIX = ".staging-"
_RETIRED_PREFIX = ".retired-"
_DIR_MODE = 0o755
_FILE_MODE = 0o644


class ServableModel(Protocol):
    """What a trained model hands the repository writer."""

    @property
    def onnx_bytes(self) -> bytes:
        """The serialized ONNX artifact."""
        ...

    def evaluation(self) -> dict[str, Any]:
        """JSON-able metrics and lineage (without the artifact's sha256)."""
        ...

    def serving_config(self) -> dict[str, Any]:
        """The model folder's ``config.json`` content."""
        ...

    def feature_files(self) -> Mapping[str, bytes]:
        """``feature_spec.json`` and ``reference_profile.json`` contents; {} for plain ONNX."""
        ...


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a folder be fsynced
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_bytes(path: Path, data: bytes) -> None:
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _json_bytes(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=False) + "\n").encode()


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` with ``data`` as JSON by writing a temp file and renaming it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, _FILE_MODE)  # mkstemp makes 0600; the server may run as another user
        _write_bytes(Path(tmp), _json_bytes(data))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _remove_leftovers(model_dir: Path) -> None:
    """Staging/retired folders that a crashed writer left behind."""
    for entry in model_dir.iterdir():
        if entry.is_dir() and entry.name.startswith((_STAGING_PREFIX, _RETIRED_PREFIX)):
            log.info("removing leftover %s", entry)
            shutil.rmtree(entry, ignore_errors=True)


def write_model_repository(
    model: ServableModel, repo: Path, name: str = "fraud", version: int = 1
) -> Path:
    """Write ``model`` as ``<repo>/<name>/<version>/`` plus ``<repo>/<name>/config.json``.

    An existing folder for that version is replaced. Returns the version folder.
    Raises ``ValueError`` unless ``model.feature_files()`` holds both feature
    documents or neither.
    """
    if version < 1:
        raise ValueError(f"version must be a positive integer, got {version}")
    files = dict(model.feature_files())
    if files and sorted(files) != sorted(FEATURE_FILES):
        raise ValueError(
            f"feature files must be exactly {sorted(FEATURE_FILES)} or none, got {sorted(files)}"
        )
    model_dir = Path(repo) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(model_dir)
    target = model_dir / str(version)
    staging = Path(tempfile.mkdtemp(prefix=f"{_STAGING_PREFIX}{version}-", dir=model_dir))
    retired: Path | None = None
    try:
        os.chmod(staging, _DIR_MODE)  # mkdtemp makes 0700; the server may run as another user
        artifact = staging / MODEL_FILE
        _write_bytes(artifact, model.onnx_bytes)
        hashes = {"sha256": sha256_file(artifact)}
        for filename, key in FEATURE_FILES.items():
            if filename in files:
                _write_bytes(staging / filename, files[filename])
                hashes[key] = sha256_file(staging / filename)
        evaluation = {"model": name, "version": version, **model.evaluation(), **hashes}
        _write_bytes(staging / EVALUATION_FILE, _json_bytes(evaluation))
        _fsync_dir(staging)
        if target.exists():
            retired = model_dir / f"{_RETIRED_PREFIX}{version}-{uuid.uuid4().hex[:8]}"
            os.replace(target, retired)
        os.replace(staging, target)
        _fsync_dir(model_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)
    write_json_atomic(model_dir / CONFIG_FILE, model.serving_config())
    log.info("wrote %s (sha256 %s)", target / MODEL_FILE, evaluation["sha256"])
    return target


def verified_evaluation(
    version_dir: Path, *, require_features: bool = False
) -> tuple[dict[str, Any] | None, str]:
    """The version's ``evaluation.json`` if every recorded sha256 matches its file.

    ``model.onnx`` must match ``sha256``; each feature document must match the sha256
    recorded for it, and a feature document that is present but not recorded (or
    recorded but absent) fails too. With ``require_features`` a version without its
    feature documents fails as well. Returns ``(evaluation, "")`` when everything
    checks out, else ``(None, reason)``.
    """
    artifact, report = version_dir / MODEL_FILE, version_dir / EVALUATION_FILE
    if not artifact.is_file():
        return None, f"{artifact} does not exist"
    if not report.is_file():
        return None, f"{report} does not exist"
    try:
        evaluation = json.loads(report.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{report} is unreadable: {exc}"
    if not isinstance(evaluation, dict) or not isinstance(evaluation.get("sha256"), str):
        return None, f"{report} has no sha256"
    actual = sha256_file(artifact)
    if actual != evaluation["sha256"]:
        return None, (f"sha256 of {artifact} is {actual}, {report} records {evaluation['sha256']}")
    for filename, key in FEATURE_FILES.items():
        path, recorded = version_dir / filename, evaluation.get(key)
        if recorded is None:
            if require_features:
                return None, f"{report} records no {key} (a version without a feature spec)"
            if path.exists():
                return None, f"{path} exists but {report} records no {key}"
            continue
        if not isinstance(recorded, str):
            return None, f"{report}: {key} is not a string"
        if not path.is_file():
            return None, f"{path} does not exist"
        actual = sha256_file(path)
        if actual != recorded:
            return None, f"sha256 of {path} is {actual}, {report} records {recorded}"
    return evaluation, ""
