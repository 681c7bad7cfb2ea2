"""Fixtures shared by every test package."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .postgres import PgServer


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """This run's databases on the shared PostgreSQL (dropped at the end)."""
    server = PgServer()
    try:
        yield server
    finally:
        server.drop_all()
