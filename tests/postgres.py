"""The real PostgreSQL of this machine, for tests: databases of this run only.

Each run creates its own databases (``osprey_test_<pid>_<random>_<suffix>``) and
drops them at the end; nothing else on the shared server is touched. A server that
cannot be reached fails the test (it is never skipped). ``OSPREY_TEST_POSTGRES``
overrides the admin URL.
"""

from __future__ import annotations

import os
import secrets

import psycopg
import pytest

PG_ADMIN_URL = os.environ.get(
    "OSPREY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _pg_url(database: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + database


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
