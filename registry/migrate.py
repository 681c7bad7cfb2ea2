"""Schema migrations: ``osprey db upgrade`` and the check every server and CLI runs.

Alembic ships inside the package (``registry/migrations``). A process whose code
expects another schema than the database holds refuses to run and names the
command that fixes it (``SchemaOutOfDate``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from .db import Database, describe
from .errors import SchemaOutOfDate

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
UPGRADE_COMMAND = "osprey db upgrade"
# Alembic narrates every connection at INFO; our commands say what they did.
logging.getLogger("alembic").setLevel(logging.WARNING)


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head() -> str:
    """The newest revision this code knows."""
    heads = ScriptDirectory.from_config(_config()).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"the registry migrations have {len(heads)} heads: {heads}")
    return heads[0]


def current(db: Database) -> str | None:
    """The revision the database is at (None: never migrated)."""
    with db.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def _run(db: Database, action: str, revision: str) -> None:
    config = _config()
    with db.write_engine.begin() as connection:
        config.attributes["connection"] = connection
        getattr(command, action)(config, revision)


def upgrade(db: Database, revision: str = "head") -> None:
    with db.guard():
        _run(db, "upgrade", revision)


def downgrade(db: Database, revision: str) -> None:
    with db.guard():
        _run(db, "downgrade", revision)


def check_schema(db: Database) -> None:
    """SchemaOutOfDate unless the database is at this code's head revision."""
    with db.guard():
        at = current(db)
    want = head()
    if at == want:
        return
    where = describe(db.url)
    if at is None:
        raise SchemaOutOfDate(
            f"the registry database {where} has no Osprey schema yet; run "
            f"`{UPGRADE_COMMAND}` (with the same database URL) first"
        )
    known = {s.revision for s in ScriptDirectory.from_config(_config()).walk_revisions()}
    if at not in known:
        raise SchemaOutOfDate(
            f"the registry database {where} is at schema revision {at}, newer than this "
            f"Osprey knows (head {want}); upgrade Osprey, or downgrade the database with "
            "the newer release"
        )
    raise SchemaOutOfDate(
        f"the registry database {where} is at schema revision {at}, older than this "
        f"Osprey's {want}; run `{UPGRADE_COMMAND}`"
    )
