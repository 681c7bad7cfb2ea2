"""registry.db: how Osprey connects to PostgreSQL."""

from __future__ import annotations

from sqlalchemy.engine import make_url

from registry.db import Database

from ..postgres import PgServer


def _dsn(url: str) -> dict[str, str]:
    """The libpq parameters a real connection of ``Database(url)`` was opened with."""
    db = Database(url)
    assert db.url.drivername == "postgresql+psycopg"
    try:
        raw = db.engine.raw_connection()
        try:
            dsn: str = raw.driver_connection.info.dsn  # type: ignore[union-attr]
        finally:
            raw.close()
    finally:
        db.engine.dispose()
    return dict(part.split("=", 1) for part in dsn.split())


def test_connections_detect_a_silent_peer_with_keepalives_and_a_user_timeout(
    pg_server: PgServer,
) -> None:
    dsn = _dsn(pg_server.create("keepalive"))
    assert dsn["keepalives"] == "1"
    assert dsn["keepalives_idle"] == "10"
    assert dsn["tcp_user_timeout"] == "30000"
    assert dsn["connect_timeout"] == "5"


def test_the_urls_own_connection_parameters_win(pg_server: PgServer) -> None:
    url = make_url(pg_server.create("keepalive_url")).update_query_dict(
        {"keepalives_idle": "60", "tcp_user_timeout": "5000"})
    dsn = _dsn(url.render_as_string(hide_password=False))
    assert dsn["keepalives_idle"] == "60"
    assert dsn["tcp_user_timeout"] == "5000"
    assert dsn["keepalives_count"] == "3"  # the rest stay Osprey's
