"""Content-addressed artifact stores: where a version's ONNX file lives.

Every artifact is named by its sha256. Two stores:

``local``  a folder (default ``$OSPREY_HOME/artifacts``): ``sha256/ab/<hex>.onnx``,
           URI ``file:///…``. For one host, or a folder every host mounts.
``sql``    chunks of 8 MiB in the registry's ``artifact_chunks`` table, URI
           ``sql:sha256:<hex>``: many hosts share artifacts through the database
           alone. Fetched into a local cache folder before loading.

``fetch`` always checks the digest of what it hands out; a mismatch raises
``ChecksumMismatch`` and the version must not serve.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Protocol

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from .db import Database
from .errors import InvalidArtifact, VersionRejected
from .models import ArtifactChunk

CHUNK_BYTES = 8 * 1024 * 1024
STORES = ("local", "sql")


class ChecksumMismatch(VersionRejected):
    """An artifact's bytes do not hash to the digest the registry recorded."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _check(path: Path, sha256: str, uri: str) -> Path:
    got = sha256_of(path)
    if got != sha256:
        raise ChecksumMismatch(
            f"artifact {uri} has sha256 {got}, the registry recorded {sha256}: it was "
            "changed or corrupted after registration"
        )
    return path


def _atomic_copy(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` through a temporary file and a rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
    try:
        with os.fdopen(fd, "wb") as out, source.open("rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ArtifactStore(Protocol):
    """Where artifacts are kept; ``session`` is the registration's transaction."""

    kind: str

    def put(self, source: Path, sha256: str, session: Session) -> str:
        """Store ``source`` (whose digest is ``sha256``) and return its URI."""
        ...

    def fetch(self, uri: str, sha256: str, db: Database) -> Path:
        """A local file with the artifact's bytes, digest checked."""
        ...


class LocalArtifactStore:
    """A content-addressed folder."""

    kind = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, sha256: str) -> Path:
        return self.root / "sha256" / sha256[:2] / f"{sha256}.onnx"

    def put(self, source: Path, sha256: str, session: Session) -> str:
        target = self.path_for(sha256)
        if not target.is_file() or sha256_of(target) != sha256:
            _atomic_copy(source, target)
        return target.resolve().as_uri()

    def fetch(self, uri: str, sha256: str, db: Database) -> Path:
        if not uri.startswith("file://"):
            raise InvalidArtifact(f"artifact {uri} is not a file:// URI of the local store")
        path = Path(uri.removeprefix("file://"))
        if not path.is_file():
            raise ChecksumMismatch(f"artifact {uri} is missing from the local store")
        return _check(path, sha256, uri)


class SqlArtifactStore:
    """Artifacts as chunks in the registry database, cached locally after a fetch."""

    kind = "sql"

    def __init__(self, cache: Path) -> None:
        self.cache = cache

    @staticmethod
    def uri_for(sha256: str) -> str:
        return f"sql:sha256:{sha256}"

    def put(self, source: Path, sha256: str, session: Session) -> str:
        present = session.scalar(
            select(ArtifactChunk.chunk).where(ArtifactChunk.sha256 == sha256).limit(1)
        )
        if present is None:
            with source.open("rb") as f:
                index = 0
                while block := f.read(CHUNK_BYTES):
                    session.add(ArtifactChunk(sha256=sha256, chunk=index, data=block))
                    session.flush()
                    index += 1
        return self.uri_for(sha256)

    def fetch(self, uri: str, sha256: str, db: Database) -> Path:
        if uri != self.uri_for(sha256):
            raise InvalidArtifact(f"artifact {uri} is not in the sql store as sha256 {sha256}")
        target = self.cache / f"{sha256}.onnx"
        if target.is_file() and sha256_of(target) == sha256:
            return target
        self.cache.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.cache, prefix=".fetch-")
        try:
            with os.fdopen(fd, "wb") as out, db.read() as session:
                found = 0
                for block in session.scalars(
                    select(ArtifactChunk.data)
                    .where(ArtifactChunk.sha256 == sha256)
                    .order_by(ArtifactChunk.chunk)
                ):
                    out.write(block)
                    found += 1
            if found == 0:
                raise ChecksumMismatch(f"artifact {uri} has no chunks in the database")
            _check(Path(tmp), sha256, uri)
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return target

    @staticmethod
    def delete(session: Session, sha256: str) -> None:
        session.execute(delete(ArtifactChunk).where(ArtifactChunk.sha256 == sha256))


def store_for(kind: str, home: Path) -> LocalArtifactStore | SqlArtifactStore:
    """The configured store (``artifact_store`` = local | sql)."""
    if kind == "local":
        return LocalArtifactStore(home / "artifacts")
    if kind == "sql":
        return SqlArtifactStore(home / "artifact-cache")
    from server.errors import ConfigError

    raise ConfigError(f"artifact_store must be one of {', '.join(STORES)}, got {kind!r}")


def store_for_uri(uri: str, home: Path) -> LocalArtifactStore | SqlArtifactStore:
    """The store an existing URI belongs to (a version keeps its store forever)."""
    return store_for("sql" if uri.startswith("sql:") else "local", home)
