"""Connecting to the registry database: SQLite (embedded default) or PostgreSQL.

The URL comes from the config key ``database_url`` (``OSPREY_DATABASE_URL``,
``--database-url``); empty means ``sqlite:///$OSPREY_HOME/osprey.db``.
``postgresql://…`` URLs use psycopg 3.

SQLite runs in WAL mode (readers never block the writer) with a busy timeout and
foreign keys on. Its write transactions start with ``BEGIN IMMEDIATE``: they take
the write lock up front, so two writers queue on the busy timeout instead of one
failing when its read snapshot turns stale. PostgreSQL uses READ COMMITTED, and
every change there is a compare-and-set on a row (see ``registry.services``).

``Database.read()`` and ``Database.write()`` are the only ways in: a session whose
transaction the context owns (write commits at the end, both roll back on error),
with connection failures turned into ``RegistryUnavailable``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from .errors import RegistryUnavailable

log = logging.getLogger("osprey.registry")

DATABASE_FILE = "osprey.db"
SQLITE_BUSY_TIMEOUT_MS = 30_000
PG_CONNECT_TIMEOUT_S = 5
# A connection whose peer vanished without a word (a partition, a failed-over host)
# must fail, not hang a registry poll or an audit shipping pass for ever: TCP
# keepalives find an idle one dead within ~25 s, tcp_user_timeout one with unanswered
# data within 30 s. libpq parameters; the database URL's query string overrides them.
PG_CONNECT_ARGS: dict[str, int] = {
    "connect_timeout": PG_CONNECT_TIMEOUT_S,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}


def pg_connect_args(url: URL) -> dict[str, int]:
    """:data:`PG_CONNECT_ARGS` less what ``url`` sets itself."""
    return {k: v for k, v in PG_CONNECT_ARGS.items() if k not in url.query}


def default_url(home: Path) -> str:
    return f"sqlite:///{(home / DATABASE_FILE).expanduser().resolve()}"


def resolve_url(url: str, home: Path) -> URL:
    """The SQLAlchemy URL for a configured value (empty: the embedded SQLite file)."""
    from server.errors import ConfigError

    try:
        parsed = make_url(url or default_url(home))
    except ArgumentError as exc:
        raise ConfigError(f"database_url {url!r} is not a database URL: {exc}") from None
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise ConfigError(
                f"database_url {url!r}: the registry needs a SQLite file (a path), not an "
                "in-memory database shared by nobody"
            )
        return parsed
    raise ConfigError(
        f"database_url {url!r}: unsupported database '{backend}'; use sqlite:///PATH or "
        "postgresql://USER@HOST/DB"
    )


def describe(url: URL) -> str:
    """The URL without its password, for logs and messages."""
    return url.render_as_string(hide_password=True)


class Database:
    """Engines and sessions for one registry database."""

    def __init__(self, url: str | URL, *, home: Path | None = None) -> None:
        self.url = url if isinstance(url, URL) else resolve_url(url, home or Path("."))
        self.dialect = self.url.get_backend_name()
        if self.dialect == "sqlite":
            assert self.url.database is not None
            Path(self.url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            self.engine = self._sqlite_engine(immediate=False)
            self._write_engine = self._sqlite_engine(immediate=True)
        else:
            self.engine = create_engine(
                self.url,
                pool_pre_ping=True,
                connect_args=pg_connect_args(self.url),
            )
            self._write_engine = self.engine
        self._reads = sessionmaker(self.engine, expire_on_commit=False)
        self._writes = sessionmaker(self._write_engine, expire_on_commit=False)

    def _sqlite_engine(self, immediate: bool) -> Engine:
        engine = create_engine(self.url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy's "begin" event issue BEGIN (pysqlite's own is deferred).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Any) -> None:
            connection.exec_driver_sql(begin)

        return engine

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reading; its transaction is rolled back at the end."""
        with self.guard(), self._reads() as session:
            try:
                yield session
            finally:
                session.rollback()

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session whose transaction commits at the end (rolls back on error)."""
        with self.guard(), self._writes() as session, session.begin():
            yield session

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Turn connection failures inside the block into RegistryUnavailable."""
        try:
            yield
        except OperationalError as exc:
            if _is_lock_timeout(exc):
                raise RegistryUnavailable(
                    f"registry database {describe(self.url)} stayed locked for "
                    f"{SQLITE_BUSY_TIMEOUT_MS / 1000:.0f} s by another writer"
                ) from None
            raise RegistryUnavailable(
                f"registry database {describe(self.url)} is unreachable: "
                f"{_first_line(exc.orig)}"
            ) from None
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise RegistryUnavailable(
                    f"registry database {describe(self.url)} dropped the connection: "
                    f"{_first_line(exc.orig)}"
                ) from None
            raise

    @property
    def write_engine(self) -> Engine:
        """The engine of write transactions (BEGIN IMMEDIATE on SQLite)."""
        return self._write_engine

    def dispose(self) -> None:
        self.engine.dispose()
        if self._write_engine is not self.engine:
            self._write_engine.dispose()


def _first_line(exc: BaseException | None) -> str:
    return str(exc).strip().splitlines()[0] if exc is not None and str(exc).strip() else "?"


def _is_lock_timeout(exc: OperationalError) -> bool:
    return "database is locked" in str(exc.orig)

