"""Models and migrations agree, there is one head, and upgrade/downgrade round-trip
on both databases; code refuses a database at another schema, naming the command."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from registry import migrate
from registry.db import Database
from registry.errors import SchemaOutOfDate
from registry.models import Base

from .conftest import BACKENDS, PgServer


@pytest.fixture(params=BACKENDS)
def fresh(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    """An empty database (never migrated) of each backend."""
    if request.param == "sqlite":
        db = Database(f"sqlite:///{tmp_path / 'fresh.db'}")
    else:
        server: PgServer = request.getfixturevalue("pg_server")
        url = server.create(f"fresh_{len(server.created)}")
        db = Database(url)
        request.addfinalizer(lambda: (db.dispose(), server.drop(url)))
    return db


def _diff(db: Database) -> list[object]:
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))


def test_single_head() -> None:
    script = ScriptDirectory.from_config(migrate._config())
    assert len(script.get_heads()) == 1
    assert migrate.head() == script.get_heads()[0]


def test_models_and_migrations_agree(fresh: Database) -> None:
    migrate.upgrade(fresh)
    assert _diff(fresh) == []
    assert migrate.current(fresh) == migrate.head()


def test_upgrade_downgrade_upgrade(fresh: Database) -> None:
    migrate.upgrade(fresh)
    migrate.downgrade(fresh, "base")
    assert migrate.current(fresh) is None
    tables = set(inspect(fresh.engine).get_table_names()) - {"alembic_version"}
    assert tables == set()
    migrate.upgrade(fresh)
    assert _diff(fresh) == []
    migrate.check_schema(fresh)


def test_empty_database_is_refused_naming_the_command(fresh: Database) -> None:
    with pytest.raises(SchemaOutOfDate, match=r"no Osprey schema yet; run `osprey db upgrade`"):
        migrate.check_schema(fresh)


def test_older_and_unknown_revisions_are_refused(fresh: Database) -> None:
    migrate.upgrade(fresh)
    with fresh.write() as session:
        session.execute(text("UPDATE alembic_version SET version_num = 'ffffffffffff'"))
    with pytest.raises(SchemaOutOfDate, match="newer than this Osprey knows"):
        migrate.check_schema(fresh)


def test_events_are_append_only(fresh: Database) -> None:
    migrate.upgrade(fresh)
    with fresh.write() as session:
        session.execute(text(
            "INSERT INTO registry_events (at, actor, model, kind, reason) "
            "VALUES (CURRENT_TIMESTAMP, 'a', 'm', 'k', 'r')"
        ))
    edits = ("UPDATE registry_events SET reason = 'edited'", "DELETE FROM registry_events")
    for statement in edits:
        with pytest.raises(Exception, match="registry_events is append-only"), \
                fresh.write() as session:
            session.execute(text(statement))
    with fresh.read() as session:
        assert session.execute(text("SELECT reason FROM registry_events")).scalar_one() == "r"
