"""Registry fixtures: every test runs on SQLite and on the real PostgreSQL.

PostgreSQL: one database per test run (``osprey_test_<pid>_<random>``), created at
the start and dropped at the end, never touching anything else on the shared
server; tables are emptied between tests. SQLite: a fresh file per test. A missing
PostgreSQL fails the run (it is never skipped).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from registry import migrate
from registry.db import Database
from registry.models import Base
from registry.service import Registry
from tests.postgres import PgServer
from tests.server.onnx_models import add_sub_graph, offset_graph, write_model

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def pg_registry_url(pg_server: PgServer) -> str:
    """The run's shared, migrated PostgreSQL registry database."""
    url = pg_server.create("registry")
    db = Database(url)
    migrate.upgrade(db)
    db.dispose()
    return url


def _empty(db: Database) -> None:
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with db.write() as session:
        session.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture()
def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A migrated, empty registry database of ``backend``."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'osprey.db'}"
        db = Database(url)
        migrate.upgrade(db)
        db.dispose()
        return url
    url = str(request.getfixturevalue("pg_registry_url"))
    db = Database(url)
    _empty(db)
    db.dispose()
    return url


@pytest.fixture()
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


@pytest.fixture()
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture()
def registry(db: Database, home: Path) -> Registry:
    return Registry(db, home)


class Models:
    """ONNX files to register: ``offset(k)`` answers INPUT + k; ``other()`` has another
    signature."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.count = 0

    def offset(self, k: float) -> Path:
        self.count += 1
        return write_model(self.root, f"m{self.count}", offset_graph(k), None)

    def other(self) -> Path:
        self.count += 1
        return write_model(self.root, f"m{self.count}", add_sub_graph(), None)


@pytest.fixture()
def models(tmp_path: Path) -> Models:
    return Models(tmp_path / "onnx")
