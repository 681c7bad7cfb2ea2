"""Write a trained scorer into a Triton-style model repository folder, atomically.

Layout (what ``server.model_source.RepositoryFolder`` serves)::

    <repo>/<name>/config.json                 serving settings, score and decision
    <repo>/<name>/<version>/model.onnx        the artifact
    <repo>/<name>/<version>/evaluation.json   metrics, windows, lineage, sha256 of model.onnx

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
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("osprey.trainer")

MODEL_FILE = "model.onnx"
EVALUATION_FILE = "evaluation.json"
CONFIG_FILE = "config.json"
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
    """
    if version < 1:
        raise ValueError(f"version must be a positive integer, got {version}")
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
        evaluation = {
            "model": name,
            "version": version,
            **model.evaluation(),
            "sha256": sha256_file(artifact),
        }
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


def verified_evaluation(version_dir: Path) -> tuple[dict[str, Any] | None, str]:
    """The version's ``evaluation.json`` if its sha256 matches ``model.onnx``.

    Returns ``(evaluation, "")`` when the artifact checks out, else ``(None, reason)``.
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
    return evaluation, ""
