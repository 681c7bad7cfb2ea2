"""Registry fixtures: every test runs on SQLite and on the real PostgreSQL.

PostgreSQL: one database per test run (``osprey_test_<pid>_<random>``), created at
the start and dropped at the end, never touching anything else on the shared
server; tables are emptied between tests. SQLite: a fresh file per test. A missing
PostgreSQL fails the run (it is never skipped).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

from registry import migrate
from registry.db import Database
from registry.models import Base
from registry.service import Registry
from tests.server.onnx_models import add_sub_graph, offset_graph, write_model

PG_ADMIN_URL = os.environ.get(
    "OSPREY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
BACKENDS = ["sqlite", "postgresql"]


def _pg_url(database: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + database


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    server = PgServer()
    try:
        yield server
    finally:
        server.drop_all()


class PgServer:
    """Creates and drops this run's databases on the shared PostgreSQL."""

    def __init__(self) -> None:
        self.prefix = f"osprey_test_{os.getpid()}_{secrets.token_hex(3)}"
        self.created: list[str] = []
        try:
            with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5):
                pass
        except psycopg.OperationalError as exc:
            pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is not reachable: {exc}", pytrace=False)

    def create(self, suffix: str) -> str:
        name = f"{self.prefix}_{suffix}"
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return _pg_url(name)

    def drop(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self.created:
            self.created.remove(name)

    def drop_all(self) -> None:
        for name in list(self.created):
            self.drop(_pg_url(name))


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
