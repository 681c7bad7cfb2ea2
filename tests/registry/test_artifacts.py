"""Artifact stores: content-addressed, shared through the database with ``sql``, and
a version whose bytes no longer match its digest is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.artifacts import ChecksumMismatch, LocalArtifactStore, SqlArtifactStore, store_for
from registry.db import Database
from registry.service import Registry
from server.errors import ConfigError

from .conftest import Models

WHO = {"actor": "sre@ops", "reason": "test"}


def test_sql_store_shares_artifacts_through_the_database(
    db: Database, tmp_path: Path, models: Models
) -> None:
    path = models.offset(1.0)
    host_a = Registry(db, tmp_path / "host-a", "sql")
    record = host_a.register("fraud", path, **WHO)
    assert record.artifact_uri == f"sql:sha256:{record.sha256}"
    # another host: nothing on its disk, the bytes come from the database
    host_b = Registry(db, tmp_path / "host-b", "local")
    local = host_b.fetch_artifact(record)
    assert local.is_relative_to(tmp_path / "host-b" / "artifact-cache")
    assert local.read_bytes() == path.read_bytes()
    # the same bytes registered again are stored once
    again = host_a.register("fraud", path, **WHO)
    assert again.version == 2 and again.artifact_uri == record.artifact_uri


def test_sql_store_splits_large_artifacts_into_chunks(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import registry.artifacts as artifacts

    monkeypatch.setattr(artifacts, "CHUNK_BYTES", 1000)
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(256)) * 20)  # 5120 bytes: 6 chunks
    store = SqlArtifactStore(tmp_path / "cache")
    digest = artifacts.sha256_of(blob)
    with db.write() as session:
        uri = store.put(blob, digest, session)
    fetched = store.fetch(uri, digest, db)
    assert fetched.read_bytes() == blob.read_bytes()


def test_local_checksum_mismatch_is_refused(
    registry: Registry, models: Models, home: Path
) -> None:
    record = registry.register("fraud", models.offset(1.0), **WHO)
    copy = LocalArtifactStore(home / "artifacts").path_for(record.sha256)
    copy.write_bytes(copy.read_bytes() + b"tampered")
    with pytest.raises(ChecksumMismatch, match=f"the registry recorded {record.sha256}"):
        registry.fetch_artifact(record)
    copy.unlink()
    with pytest.raises(ChecksumMismatch, match="missing from the local store"):
        registry.fetch_artifact(record)


def test_sql_checksum_mismatch_is_refused(
    db: Database, tmp_path: Path, models: Models
) -> None:
    from sqlalchemy import update

    from registry.models import ArtifactChunk

    registry = Registry(db, tmp_path / "a", "sql")
    record = registry.register("fraud", models.offset(1.0), **WHO)
    with db.write() as session:
        session.execute(update(ArtifactChunk).values(data=b"not the model"))
    with pytest.raises(ChecksumMismatch):
        Registry(db, tmp_path / "b").fetch_artifact(record)
    assert not (tmp_path / "b" / "artifact-cache" / f"{record.sha256}.onnx").exists()


def test_unknown_store_kind(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="artifact_store must be one of local, sql"):
        store_for("s3", tmp_path)
