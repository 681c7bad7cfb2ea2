"""The outage tests' TCP proxy really cuts: a query in flight fails at once, new
connections are refused while cut, and they go through again after ``restore``."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from .tcp_proxy import TcpProxy


def _connect(proxy: TcpProxy) -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=proxy.port, user="postgres",
                           dbname="postgres", autocommit=True, connect_timeout=5)


def test_a_query_in_flight_fails_when_cut_instead_of_waiting_forever() -> None:
    with TcpProxy("127.0.0.1", 5432) as proxy:
        conn = _connect(proxy)
        outcome: list[BaseException | None] = []

        def query() -> None:
            try:
                conn.execute("SELECT pg_sleep(2)")
                outcome.append(None)
            except psycopg.OperationalError as exc:
                outcome.append(exc)

        thread = threading.Thread(target=query, daemon=True)
        thread.start()
        time.sleep(0.3)  # the query is waiting for its answer
        started = time.monotonic()
        proxy.cut()
        thread.join(10)
        assert not thread.is_alive(), "the query in flight hung after the cut"
        assert time.monotonic() - started < 1.5  # long before pg_sleep(2) would answer
        assert isinstance(outcome[0], psycopg.OperationalError)
        conn.close()


def test_an_idle_connection_fails_on_its_next_use_and_new_ones_wait_for_restore() -> None:
    with TcpProxy("127.0.0.1", 5432) as proxy:
        idle = _connect(proxy)
        proxy.cut()
        with pytest.raises(psycopg.OperationalError):
            idle.execute("SELECT 1")
        with pytest.raises(psycopg.OperationalError):
            _connect(proxy)
        proxy.restore()
        with _connect(proxy) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
