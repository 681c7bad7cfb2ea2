"""The audit log against real servers: every decision is there, exactly once, even
after ``kill -9`` (strict) and across a database outage; the log verifies."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from registry import audit_store, migrate
from registry.audit_chain import load_key
from registry.db import Database
from registry.models import AuditDecision, AuditRequest
from registry.service import Registry
from tests.postgres import PgServer
from tests.tcp_proxy import TcpProxy

from .onnx_models import offset_graph, write_model
from .process import ServerProcess

WHO = {"actor": "test@ops", "reason": "test"}
CONFIG = {"max_batch_size": 64, "max_queue_delay_us": 500, "score_output": "OUTPUT",
          "decision": {"threshold": 1.5}}


def _database(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'osprey.db'}"
    server: PgServer = request.getfixturevalue("pg_server")
    return server.create(f"audit_{len(server.created)}")


def _decision_id(result: Any) -> str:
    return str(result.get_response().parameters["osprey_decision_id"].string_param)


def wait_for(predicate: Any, timeout: float = 30.0, what: str = "") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _count(db: Database, table: Any) -> int:
    with db.read() as s:
        return int(s.scalar(select(func.count()).select_from(table)) or 0)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_every_decision_is_there_exactly_once(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = _database(backend, tmp_path, request)
    db = Database(url)
    migrate.upgrade(db)
    home = tmp_path / "home"
    registry = Registry(db, home)
    for k in (1, 2):
        registry.register("fraud", write_model(tmp_path / "onnx", f"v{k}", offset_graph(k), None),
                          settings=CONFIG, **WHO)
    registry.set_stable("fraud", 1, **WHO)
    registry.start_rollout("fraud", 2, "canary", weight=30, **WHO)
    server = ServerProcess(None, home, "--database-url", url, "--registry-poll-seconds", "0.3")
    sent: list[tuple[str, int, int, str]] = []  # decision id, rows, version, request id

    async def drive() -> None:
        client = aioclient.InferenceServerClient(server.url)

        async def one(i: int) -> None:
            rows = (1, 1, 3, 17)[i % 4]
            tensor = aioclient.InferInput("INPUT", [rows, 1], "FP32")
            tensor.set_data_from_numpy(np.full((rows, 1), 0.25 * (i % 5), np.float32))
            request_id = ("", "0", "7", f"req-{i}")[i % 4]  # empty, repeated, unique ids
            result = await client.infer("fraud", [tensor], request_id=request_id,
                                        parameters={"osprey_routing_key": f"acct-{i}"})
            version = int(result.get_response().model_version)
            sent.append((_decision_id(result), rows, version, request_id))

        for start in range(0, 400, 40):
            await asyncio.gather(*(one(i) for i in range(start, start + 40)))
        await client.close()

    try:
        asyncio.run(drive())
        expected_rows = sum(rows for _, rows, _, _ in sent)
        wait_for(lambda: _count(db, AuditDecision) >= expected_rows, what="shipped")
        time.sleep(0.6)  # anything extra would have arrived by now
    finally:
        server.stop()
    assert {v for _, _, v, _ in sent} == {1, 2}
    with db.read() as s:
        requests = {r.decision_id: (r.rows, r.version, r.request_id, r.status, r.route)
                    for r in s.scalars(select(AuditRequest))}
        decisions = s.execute(select(AuditDecision.decision_id, AuditDecision.row_index,
                                     AuditDecision.version, AuditDecision.route)).all()
        queued = list(s.scalars(select(AuditRequest.queue_us)))
        assert audit_store.verify(s, load_key(home / "audit.key")).ok
    # the time each request waited in the batcher's queue (microseconds, a few ms at most)
    assert all(q is not None and 0 <= q < 5_000_000 for q in queued)
    assert set(requests) == {d for d, _, _, _ in sent}
    assert len(decisions) == expected_rows == len(set((d, i) for d, i, _, _ in decisions))
    for decision_id, rows, version, request_id in sent:
        route = "canary" if version == 2 else "stable"
        assert requests[decision_id] == (rows, version, request_id, "OK", route)
    db.dispose()


def _hammer(url: str, stop: threading.Event, received: list[str]) -> None:
    client = grpcclient.InferenceServerClient(url)
    tensor = grpcclient.InferInput("INPUT", [1, 1], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 1), np.float32))
    while not stop.is_set():
        try:
            received.append(_decision_id(client.infer("fraud", [tensor])))
        except Exception:
            if stop.is_set():
                break
            time.sleep(0.01)
    client.close()


def _running(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def test_kill_9_loses_no_acknowledged_decision(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_model(repo, "fraud", offset_graph(1), CONFIG)
    home = tmp_path / "home"
    server = ServerProcess(repo, home, "--audit", "strict")
    received: list[str] = []
    stop = threading.Event()
    threads = [threading.Thread(target=_hammer, args=(server.url, stop, received))
               for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(3.0)
    sidecars = [int(c) for t in Path(f"/proc/{server.proc.pid}/task").iterdir()
                for c in (t / "children").read_text().split()]
    assert sidecars, "no audit shipper side-car beside the server"
    os.kill(server.proc.pid, signal.SIGKILL)  # no drain, no flush, no shipping
    server.proc.wait(30)
    # the orphaned side-car notices, ships what it can and exits on its own
    wait_for(lambda: not any(_running(pid) for pid in sidecars), what="the side-car to exit")
    stop.set()
    for t in threads:
        t.join(30)
    assert len(received) > 100
    # a new process ships the dead one's spool first
    again = ServerProcess(repo, home, "--audit", "strict")
    db = Database(f"sqlite:///{home / 'osprey.db'}")
    try:
        wait_for(lambda: _count(db, AuditRequest) >= len(received), what="backfill")
        time.sleep(0.6)
        with db.read() as s:
            stored = list(s.scalars(select(AuditRequest.decision_id)))
            assert audit_store.verify(s, load_key(home / "audit.key")).ok
        assert set(received) <= set(stored)  # every acknowledged decision is there
        assert len(stored) == len(set(stored))  # and none twice
        # and the dead stream's folder, shipped whole, is gone
        dead = f"_{server.proc.pid}_"
        wait_for(lambda: not any(dead in p.name for p in (home / "audit-spool").iterdir()),
                 what="the dead stream's folder to go")
    finally:
        again.stop()
        db.dispose()


def _backfilled_once(stop: threading.Event, threads: list[threading.Thread],
                     received: list[str], db: Database, key_file: Path) -> None:
    """After the outage: stop the load, then every answered decision is in the
    database exactly once and the log verifies."""
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(30)
    wait_for(lambda: _count(db, AuditRequest) >= len(received), what="backfill")
    with db.read() as s:
        stored = list(s.scalars(select(AuditRequest.decision_id)))
        assert audit_store.verify(s, load_key(key_file)).ok
    assert set(received) <= set(stored) and len(stored) == len(set(stored))


def test_database_outage_spools_then_backfills(pg_server: PgServer, tmp_path: Path) -> None:
    url = pg_server.create("audit_outage")
    db = Database(url)
    migrate.upgrade(db)
    parsed = make_url(url)
    assert parsed.host is not None and parsed.port is not None
    proxy = TcpProxy(parsed.host, parsed.port)
    via_proxy = parsed.set(port=proxy.port).render_as_string(hide_password=False)
    repo = tmp_path / "repo"
    write_model(repo, "fraud", offset_graph(1), CONFIG)
    server = ServerProcess(repo, tmp_path / "home", "--database-url", via_proxy)
    received: list[str] = []
    stop = threading.Event()
    threads = [threading.Thread(target=_hammer, args=(server.url, stop, received))
               for _ in range(4)]
    try:
        for t in threads:
            t.start()
        time.sleep(1.0)
        proxy.cut()
        cut_at = len(received)
        time.sleep(4.0)
        assert len(received) > cut_at + 50  # still answering, into the spool
        assert any((tmp_path / "home" / "audit-spool").rglob("*.sealed"))
        proxy.restore()
        _backfilled_once(stop, threads, received, db, tmp_path / "home" / "audit.key")
    finally:
        stop.set()
        server.stop()
        proxy.close()
        db.dispose()


def test_sqlite_locked_spools_then_backfills(tmp_path: Path) -> None:
    """The embedded database made unwritable (another writer holds its lock: as root a
    chmod would not stop us): answers go on, into the spool, and everything is shipped
    once the lock is gone, nothing twice."""
    import sqlite3

    repo = tmp_path / "repo"
    write_model(repo, "fraud", offset_graph(1), CONFIG)
    home = tmp_path / "home"
    server = ServerProcess(repo, home, "--audit", "strict")
    db = Database(f"sqlite:///{home / 'osprey.db'}")
    received: list[str] = []
    stop = threading.Event()
    threads = [threading.Thread(target=_hammer, args=(server.url, stop, received))
               for _ in range(4)]
    blocker = sqlite3.connect(home / "osprey.db", timeout=30, isolation_level=None)
    try:
        for t in threads:
            t.start()
        time.sleep(1.0)
        blocker.execute("BEGIN EXCLUSIVE")  # no other writer until COMMIT
        locked_at = len(received)
        time.sleep(4.0)
        assert len(received) > locked_at + 50  # still answering, into the spool
        assert any((home / "audit-spool").rglob("*.sealed"))
        blocker.execute("COMMIT")
        _backfilled_once(stop, threads, received, db, home / "audit.key")
    finally:
        stop.set()
        blocker.close()
        server.stop()
        db.dispose()


def test_personal_data_never_reaches_the_database_in_the_clear(tmp_path: Path) -> None:
    from native.feature_spec import (
        CategoricalColumn,
        FeatureSpec,
        HashBuckets,
        NumericColumn,
        Standardize,
    )

    from .onnx_models import features_graph

    rng = np.random.default_rng(3)
    frame = {"amount": rng.lognormal(3, 1, 500),
             "card_id": [f"card-{i % 50:04d}" for i in range(500)]}
    spec = FeatureSpec((
        NumericColumn("amount", standardize=Standardize()),
        CategoricalColumn("card_id", HashBuckets(16, seed=1), personal=True),
    )).fit(frame)
    profile = spec.reference_profile(frame)
    repo = tmp_path / "repo"
    path = write_model(repo, "fraud", features_graph(1 + 16), {"max_batch_size": 8})
    (path.parent / "feature_spec.json").write_text(spec.to_json())
    (path.parent / "reference_profile.json").write_text(profile.to_json())
    home = tmp_path / "home"
    server = ServerProcess(repo, home)
    cards = [b"4111111111111111", b"5500005555555559"]
    try:
        client = grpcclient.InferenceServerClient(server.url)
        amount = grpcclient.InferInput("amount", [2, 1], "FP32")
        amount.set_data_from_numpy(np.array([[12.5], [99.0]], np.float32))
        card = grpcclient.InferInput("card_id", [2, 1], "BYTES")
        card.set_data_from_numpy(np.array([[cards[0]], [cards[1]]], dtype=object))
        client.infer("fraud", [amount, card])
        client.close()
        db = Database(f"sqlite:///{home / 'osprey.db'}")
        wait_for(lambda: _count(db, AuditRequest) >= 1, what="shipped")
        with db.read() as s:
            inputs = s.scalars(select(AuditRequest.inputs)).one()
        db.dispose()
    finally:
        server.stop()
    assert inputs["amount"] == [[12.5], [99.0]]
    assert all(str(v[0] if isinstance(v, list) else v).startswith("hmac-sha256:")
               for v in inputs["card_id"])
    for file in home.rglob("*"):  # the database, its WAL, the spool, anything
        if file.is_file():
            data = file.read_bytes()
            assert not any(c in data for c in cards), file


def test_the_caller_is_audited(tmp_path: Path) -> None:
    """Peer address, "client token" when the caller authenticated with one, and the
    W3C trace id of `traceparent`; nothing invented for a caller that sent neither."""
    repo = tmp_path / "repo"
    write_model(repo, "fraud", offset_graph(1), CONFIG)
    home = tmp_path / "home"
    token_file = tmp_path / "client.token"
    token = "client-" + os.urandom(16).hex()
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    server = ServerProcess(repo, home, "--client-token-file", str(token_file))
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    tensor = grpcclient.InferInput("INPUT", [1, 1], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 1), np.float32))
    client = grpcclient.InferenceServerClient(server.url)
    try:
        traced = _decision_id(client.infer("fraud", [tensor], headers={
            "authorization": f"Bearer {token}",
            "traceparent": f"00-{trace}-00f067aa0ba902b7-01"}))
        plain = _decision_id(client.infer("fraud", [tensor], headers={
            "authorization": f"Bearer {token}", "traceparent": "not-a-trace"}))
    finally:
        client.close()
        server.stop()
    db = Database(f"sqlite:///{home / 'osprey.db'}")
    with db.read() as s:  # shipped by the stop: nothing was waited for
        rows = {r.decision_id: (r.trace_id, r.principal, r.caller)
                for r in s.scalars(select(AuditRequest))}
    db.dispose()
    assert rows[traced][0] == trace and rows[plain][0] == ""
    assert rows[traced][1] == rows[plain][1] == "client token"
    assert rows[traced][2].startswith(("ipv4:127.0.0.1:", "ipv6:"))
