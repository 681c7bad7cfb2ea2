"""The audit log in SQL, on SQLite and PostgreSQL: the real writer and shipper load
records idempotently, and ``verify`` names every kind of tampering."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import insert, select, text

from registry import audit_store
from registry.audit_chain import load_key
from registry.audit_store import REQUEST_COLUMNS
from registry.db import Database
from registry.models import AuditCheckpoint, AuditDecision, AuditRequest
from server.audit_shipper import SpoolShipper, read_segment
from server.audit_spool import AuditEntry, AuditLog
from server.ids import uuid7


def entry(rows: int = 1, status: str = "OK", request_id: str = "r") -> AuditEntry:
    x = np.arange(rows, dtype=np.float32).reshape(rows, 1)
    return AuditEntry(
        decision_id=str(uuid7()), at_ns=time.time_ns(), request_id=request_id, routing_key="",
        model="fraud", version=1, route="stable", rows=rows, status=status, error="",
        latency_us=120, caller="ipv4:127.0.0.1:5000", principal="", trace_id="",
        inputs={"INPUT": x, "NOTE": (b"\x02\x00\x00\x00hi" * rows, rows)},
        outputs={"SCORE": x / 10} if status == "OK" else {},
        score_output="SCORE", threshold=0.15,
    )


@pytest.fixture()
def key(tmp_path: Path) -> bytes:
    return load_key(tmp_path / "audit.key", create=True)


def write(spool: Path, key: bytes, entries: list[AuditEntry]) -> AuditLog:
    """The real writer thread, strict: every record fsynced, then sealed."""

    async def run() -> AuditLog:
        log = AuditLog(spool, key, "strict", seal_seconds=0.05)
        log.start()
        for e in entries:
            await log.record(e)
        await asyncio.to_thread(log.stop)
        return log

    return asyncio.run(run())


def ship(log: AuditLog, db: Database) -> None:
    assert SpoolShipper(log.spool_root, db).ship_once()


def test_records_reach_sql_with_their_decisions(db: Database, key: bytes, tmp_path: Path) -> None:
    entries = [entry(1), entry(3), entry(2, status="INVALID_ARGUMENT")]
    log = write(tmp_path / "spool", key, entries)
    ship(log, db)
    assert not list(log.folder.iterdir())  # shipped segments are deleted
    with db.read() as s:
        requests = s.scalars(select(AuditRequest).order_by(AuditRequest.seq)).all()
        assert [r.seq for r in requests] == [1, 2, 3]
        assert [r.decision_id for r in requests] == [e.decision_id for e in entries]
        assert requests[1].inputs == {"INPUT": [[0.0], [1.0], [2.0]], "NOTE": ["hi"] * 3}
        assert requests[2].status == "INVALID_ARGUMENT" and requests[2].outputs == {}
        decided = s.execute(select(AuditDecision.decision_id, AuditDecision.row_index,
                                   AuditDecision.score, AuditDecision.decision)
                            .order_by(AuditDecision.decision_id, AuditDecision.row_index)).all()
    assert [(d[1], d[2], d[3]) for d in decided] == [
        (0, 0.0, "false"), (0, 0.0, "false"), (1, pytest.approx(0.1), "false"),
        (2, pytest.approx(0.2), "true")]
    with db.read() as s:
        assert audit_store.verify(s, key).ok


def test_shipping_twice_changes_nothing(db: Database, key: bytes, tmp_path: Path) -> None:
    log = write(tmp_path / "spool", key, [entry(2) for _ in range(5)])
    segments = sorted(log.folder.iterdir())
    batches = [read_segment(seg) for seg in segments]
    for _ in range(2):  # a crash between commit and delete ships a segment again
        with db.write() as s:
            for batch in batches:
                audit_store.load(s, batch)
    with db.read() as s:
        assert len(s.scalars(select(AuditRequest)).all()) == 5
        assert len(s.scalars(select(AuditDecision)).all()) == 10
        assert audit_store.verify(s, key).ok


@pytest.fixture()
def shipped(db: Database, key: bytes, tmp_path: Path) -> list[AuditEntry]:
    entries = [entry(1 + i % 3, request_id=str(i % 4)) for i in range(30)]
    ship(write(tmp_path / "spool", key, entries), db)
    return entries


def findings(db: Database, key: bytes) -> list[tuple[str, int | None]]:
    with db.read() as s:
        return [(f.kind, f.seq) for f in audit_store.verify(s, key).findings]


def test_edits_are_named(db: Database, key: bytes, shipped: list[AuditEntry]) -> None:
    with db.write() as s:
        s.execute(text("UPDATE audit_requests SET error = 'nothing' WHERE seq = 7"))
        s.execute(text("UPDATE audit_decisions SET score = 0.99 WHERE decision_id = :d "
                       "AND row_index = 0"), {"d": shipped[11].decision_id})
    assert findings(db, key) == [("edited", 7), ("decision_mismatch", 12)]


def test_deleted_and_inserted_records_are_named(
    db: Database, key: bytes, shipped: list[AuditEntry]
) -> None:
    with db.write() as s:
        s.execute(text("DELETE FROM audit_requests WHERE seq IN (5, 6)"))
        row = s.scalars(select(AuditRequest).where(AuditRequest.seq == 9)).one()
        forged = {c.name: getattr(row, c.name) for c in AuditRequest.__table__.columns}
        forged.update(decision_id=str(uuid7()), seq=31, request_id="forged")
        s.execute(insert(AuditRequest), [forged])
    found = findings(db, key)
    assert ("deleted", 5) in found and ("edited", 31) in found
    assert ("orphaned", None) in found  # the deleted requests' decision rows


def test_truncated_tail_is_named(db: Database, key: bytes, shipped: list[AuditEntry]) -> None:
    with db.write() as s:
        s.execute(text("DELETE FROM audit_decisions WHERE decision_id IN "
                       "(SELECT decision_id FROM audit_requests WHERE seq > 20)"))
        s.execute(text("DELETE FROM audit_requests WHERE seq > 20"))
    assert findings(db, key) == [("truncated", 21)]


def test_a_plain_sha256_chain_does_not_pass(
    db: Database, key: bytes, shipped: list[AuditEntry]
) -> None:
    """An attacker without the key edits a row and recomputes the chain with SHA-256."""
    with db.write() as s:
        rows = s.scalars(select(AuditRequest).order_by(AuditRequest.seq)).all()
        s.execute(text("UPDATE audit_requests SET status = 'OK', error = 'reviewed' "
                       "WHERE seq = 3"))
        previous = b""
        for r in rows:
            s.refresh(r)
            fields = audit_store._fields(r)
            digest = hashlib.sha256(previous + json.dumps(fields, sort_keys=True).encode())
            previous = digest.digest()
            s.execute(text("UPDATE audit_requests SET chain = :c WHERE decision_id = :d"),
                      {"c": digest.hexdigest(), "d": r.decision_id})
    kinds = {kind for kind, _ in findings(db, key)}
    assert kinds == {"edited"}
    assert len(findings(db, key)) == 30


def test_missing_stream_and_wrong_key(
    db: Database, key: bytes, shipped: list[AuditEntry], tmp_path: Path
) -> None:
    other = load_key(tmp_path / "other.key", create=True)
    with db.read() as s:
        assert [f.kind for f in audit_store.verify(s, other).findings] == ["wrong_key"]
    with db.write() as s:
        s.execute(text("DELETE FROM audit_streams"))
    assert ("missing_stream", None) in findings(db, key)


def test_checkpoints_are_append_only(db: Database, shipped: list[AuditEntry]) -> None:
    with db.read() as s:
        assert s.scalars(select(AuditCheckpoint)).all()
    with pytest.raises(Exception, match="audit_checkpoints is append-only"), db.write() as s:
        s.execute(text("DELETE FROM audit_checkpoints"))


def test_non_finite_inputs_are_recorded_as_strings(
    db: Database, key: bytes, tmp_path: Path
) -> None:
    e = entry(3)
    e.inputs = {"INPUT": np.array([[np.nan], [np.inf], [-np.inf]], np.float32)}
    ship(write(tmp_path / "spool", key, [e]), db)
    with db.read() as s:
        row = s.scalars(select(AuditRequest)).one()
        assert row.inputs == {"INPUT": [["NaN"], ["Infinity"], ["-Infinity"]]}
        assert audit_store.verify(s, key).ok


def test_key_file_checks(tmp_path: Path) -> None:
    from server.errors import ConfigError

    loose = tmp_path / "loose.key"
    loose.write_text("ab" * 32)
    loose.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        load_key(loose)
    short = tmp_path / "short.key"
    short.write_text("abcd")
    short.chmod(0o600)
    with pytest.raises(ConfigError, match="needs at least 32"):
        load_key(short)
    with pytest.raises(ConfigError, match="No such file"):
        load_key(tmp_path / "absent.key")




def test_prune_checkpoints_and_verification_starts_there(
    db: Database, key: bytes, tmp_path: Path
) -> None:
    base = time.time_ns() - 3600 * 10**9
    entries = [entry(2) for _ in range(20)]
    for i, e in enumerate(entries):
        e.at_ns = base + i * 10**9
    ship(write(tmp_path / "spool", key, entries), db)
    import datetime as dt

    cut = dt.datetime.fromtimestamp((base + 10.5 * 10**9) / 1e9, dt.UTC)
    with db.write() as s:
        done = audit_store.prune(s, cut, "auditor", "retention: 7 years")
    assert (done["requests"], done["decisions"], done["streams"]) == (11, 22, 1)
    with db.read() as s:
        assert [r.seq for r in s.scalars(select(AuditRequest).order_by(AuditRequest.seq))] == \
            list(range(12, 21))
        assert audit_store.verify(s, key).ok
    with db.write() as s:  # tampering after a prune is still caught
        s.execute(text("DELETE FROM audit_requests WHERE seq = 12"))
    assert ("deleted", 12) in findings(db, key)


def test_numbers_are_kept_exactly_as_signed(db: Database, key: bytes, tmp_path: Path) -> None:
    """Large and tiny floats, float64 and int64: read back as written (jsonb would rewrite
    1e+30 as an integer and break the chain), so the log still verifies."""
    e = entry(4)
    e.inputs = {"INPUT": np.array([[1e30], [1e-7], [123456789012345678.0], [-0.0]]),
                "COUNT": np.array([[2**62], [0], [-1], [7]], np.int64)}
    ship(write(tmp_path / "spool", key, [e]), db)
    with db.read() as s:
        row = s.scalars(select(AuditRequest)).one()
        assert row.inputs["INPUT"] == [[1e30], [1e-7], [123456789012345678.0], [-0.0]]
        assert row.inputs["COUNT"] == [[2**62], [0], [-1], [7]]
        assert audit_store.verify(s, key).ok


def test_audit_ship_command_ships_a_spool_once(
    database_url: str, db: Database, key: bytes, home: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`osprey audit ship` (what an SRE runs on a spool a dead host left): ships every
    sealed segment, says how many, and publishes the shipper's status."""
    from server.cli import main

    spool = tmp_path / "spool"
    log = write(spool, key, [entry(2) for _ in range(4)])
    code = main(["audit", "ship", "--home", str(home), "--database-url", database_url,
                 "--spool", str(spool), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["shipped"] == 4 and report["ok"] is True
    assert not list(log.folder.iterdir())
    with db.read() as s:
        assert len(s.scalars(select(AuditDecision)).all()) == 8
        assert audit_store.verify(s, key).ok


def test_the_follower_publishes_its_status_and_stops(db: Database, key: bytes,
                                                    tmp_path: Path) -> None:
    import threading

    from server.audit_shipper import SpoolShipper, read_status

    spool = tmp_path / "spool"
    write(spool, key, [entry(1) for _ in range(3)])
    stopping = threading.Event()
    shipper = SpoolShipper(spool, db)
    thread = threading.Thread(target=shipper.follow, args=(None, stopping))
    thread.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        seen = read_status(spool)
        if seen is not None and seen.shipped >= 3:
            break
        time.sleep(0.05)
    status = read_status(spool)
    assert status is not None and status.reachable and status.shipped == 3
    # a second shipper on the same spool waits its turn (the lock) until told to stop
    other_stop = threading.Event()
    other = threading.Thread(target=SpoolShipper(spool, db).follow, args=(None, other_stop))
    other.start()
    time.sleep(0.3)
    assert other.is_alive()  # still waiting for the lock
    other_stop.set()
    other.join(5)
    stopping.set()
    thread.join(5)
    assert not thread.is_alive() and not other.is_alive()


def test_a_long_pass_publishes_its_progress(db: Database, key: bytes, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A backlog (after an outage) takes one long pass: the status file says the
    shipper is alive and how far it got, segment by segment, not only at the end."""
    from server import audit_shipper
    from server.audit_shipper import SpoolShipper, read_status

    spool = tmp_path / "spool"
    for _ in range(3):  # three streams, a segment each
        write(spool, key, [entry(1), entry(1)])
    monkeypatch.setattr(audit_shipper, "PROGRESS_SECONDS", 0.0)
    shipper = SpoolShipper(spool, db)
    seen: list[int] = []
    publish = shipper.publish

    def observed(reachable: bool) -> None:
        publish(reachable)
        status = read_status(spool)
        assert status is not None and status.reachable
        seen.append(status.shipped)

    monkeypatch.setattr(shipper, "publish", observed)
    assert shipper.ship_once(publishing=True)
    assert seen == [2, 4, 6]
    assert SpoolShipper(spool, db).ship_once()  # a pass of the servers' own: no status
    assert read_status(spool).shipped == 6  # type: ignore[union-attr]


def test_an_open_segment_torn_inside_its_zero_fill_reads_its_whole_lines(
    tmp_path: Path,
) -> None:
    """A strict segment left open by a crash: whole lines, a torn one, then the zeros
    it was filled with ahead of the data."""
    segment = tmp_path / "00000001.open"
    segment.write_bytes(b'{"kind":"genesis","stream_id":"s"}\n'
                        b'{"decision_id":"1","rows":0,"status":"OK","outputs":{}}\n'
                        b'{"decision_id":"2","ro' + bytes(4096))
    batch = read_segment(segment)
    assert [g["stream_id"] for g in batch.streams] == ["s"]
    assert [r[REQUEST_COLUMNS.index("decision_id")] for r in batch.requests] == ["1"]
    assert batch.decisions == []


def test_a_time_with_another_offset_is_stored_as_the_same_instant(db: Database) -> None:
    """The writer's UTC times are sliced into SQLite's stored form; any other offset is
    converted, on both databases, never stored as the wall time it names."""
    values = dict.fromkeys(REQUEST_COLUMNS, "")
    values.update(stream_id="s", seq=1, decision_id="d-offset", rows=1, status="OK",
                  latency_us=1, queue_us=None, version=1, route="stable", inputs="{}",
                  outputs="{}", at="2026-11-28T14:00:00.250000+02:00")
    batch = audit_store.AuditBatch(
        requests=[tuple(values[c] for c in REQUEST_COLUMNS)],
        decisions=[("d-offset", 0, "stable", values["at"], "", 1, "OK", None, None)])
    with db.write() as s:
        audit_store.load(s, batch)
    expected = dt.datetime(2026, 11, 28, 12, 0, 0, 250000, tzinfo=dt.UTC)
    with db.read() as s:
        assert s.scalars(select(AuditRequest.at)).one() == expected
        assert s.scalars(select(AuditDecision.at)).one() == expected
