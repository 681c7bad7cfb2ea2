"""The audit log in SQL: loading spooled records, querying, verifying the chain.

``load`` takes the lines of spool segments (``server.audit_spool``) and inserts
them in the caller's transaction, idempotently: a record already there (same
decision id, same row index) is skipped, so a segment shipped twice (a crash
between commit and delete) changes nothing. Each load checkpoints the chain head
of every stream it touched into ``audit_checkpoints``.

``verify`` recomputes every stream's chain from the database and the key and
reports, by stream and sequence number: edited records (chain mismatch), inserted
records (a sequence number twice, or a record no stream explains), deleted records
(gaps), a truncated tail (fewer records than a checkpoint vouches for), missing
streams (checkpoints or records of a stream without its genesis), and decision rows
that disagree with the (chained) request they belong to.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from .audit_chain import CHAINED_FIELDS, GENESIS_PREVIOUS, key_id, link
from .models import AuditCheckpoint, AuditDecision, AuditRequest, AuditStream, Feedback

SHIPPER = "audit shipper"


def _insert(session: Session, table: Any) -> Any:
    dialect = session.get_bind().dialect.name
    return (pg_insert if dialect == "postgresql" else sqlite_insert)(table)


def _time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


REQUEST_COLUMNS = (*CHAINED_FIELDS, "chain")
DECISION_COLUMNS = ("decision_id", "row_index", "route", "at", "model", "version", "status",
                    "score", "decision")


@dataclass
class AuditBatch:
    """Spooled records as ``load`` inserts them (``server.audit_shipper.read_segment``
    reads a segment into one): genesis records as dicts, requests as tuples of
    REQUEST_COLUMNS and their decided rows as tuples of DECISION_COLUMNS, times as the
    writer wrote them (ISO 8601 with an offset), inputs and outputs as JSON text."""

    streams: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[Any, ...]] = field(default_factory=list)
    decisions: list[tuple[Any, ...]] = field(default_factory=list)


def load(session: Session, batch: AuditBatch) -> int:
    """Insert a batch of spooled records; returns the requests given."""
    if batch.streams:
        session.execute(_insert(session, AuditStream).on_conflict_do_nothing(), [
            {"id": g["stream_id"], "host": g["host"], "pid": g["pid"],
             "started_at": _time(g["started_at"]), "key_id": g["key_id"],
             "genesis_chain": ""} for g in batch.streams
        ])
    if batch.requests:
        _bulk_insert(session, batch)
        heads: dict[str, tuple[int, str]] = {}
        for stream_id, seq, *_, chain in batch.requests:
            if stream_id not in heads or seq > heads[stream_id][0]:
                heads[stream_id] = (seq, chain)
        _checkpoint(session, heads)
    return len(batch.requests)


def _checkpoint(session: Session, heads: dict[str, tuple[int, str]]) -> None:
    """The shipped chain head of each stream, into ``audit_checkpoints`` through the raw
    connection: one ORM insert per segment cost ~1 ms, more than the commit's share."""
    now = dt.datetime.now(dt.UTC)
    raw = session.connection().connection.driver_connection
    assert raw is not None
    columns = "stream_id, seq, chain, at, kind, actor, reason"
    if session.get_bind().dialect.name == "postgresql":
        with raw.cursor() as cur:
            cur.executemany(f"INSERT INTO audit_checkpoints ({columns}) "
                            "VALUES (%s, %s, %s, %s, 'ship', %s, '')",
                            [(s, seq, chain, now, SHIPPER) for s, (seq, chain) in heads.items()])
        return
    at = now.strftime("%Y-%m-%d %H:%M:%S.%f")  # as SQLAlchemy stores a UTC datetime
    raw.executemany(f"INSERT INTO audit_checkpoints ({columns}) "
                    "VALUES (?, ?, ?, ?, 'ship', ?, '')",
                    [(s, seq, chain, at, SHIPPER) for s, (seq, chain) in heads.items()])


def _bulk_insert(session: Session, batch: AuditBatch) -> None:
    """Requests and their decision rows, skipping any already there: ``executemany`` on
    the raw SQLite connection (SQLite itself turns the times into the text SQLAlchemy
    stores: ``_sqlite_values``), ``COPY`` into a temporary table then one ``INSERT … ON
    CONFLICT DO NOTHING`` on PostgreSQL (times as written: ``timestamptz`` reads them).
    No per-row SQLAlchemy work."""
    raw = session.connection().connection.driver_connection
    assert raw is not None
    if session.get_bind().dialect.name == "postgresql":
        with raw.cursor() as cur:
            for table, columns, rows in (("audit_requests", REQUEST_COLUMNS, batch.requests),
                                         ("audit_decisions", DECISION_COLUMNS,
                                          batch.decisions)):
                if not rows:
                    continue
                staging = f"{table}_incoming"
                cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {staging} "
                            f"(LIKE {table}) ON COMMIT DELETE ROWS")
                names = ", ".join(columns)
                with cur.copy(f"COPY {staging} ({names}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                cur.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM {staging} "
                            "ON CONFLICT DO NOTHING")
        return
    raw.create_function("osprey_utc", 1, _sqlite_time, deterministic=True)
    for table, columns, rows in (("audit_requests", REQUEST_COLUMNS, batch.requests),
                                 ("audit_decisions", DECISION_COLUMNS, batch.decisions)):
        if rows:
            raw.executemany(f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) "
                            f"VALUES ({_sqlite_values(columns)})", rows)


def _sqlite_values(columns: tuple[str, ...]) -> str:
    """Numbered parameters for ``columns``; ``at``, as the writer wrote it, becomes in
    SQLite the text SQLAlchemy stores for a UTC datetime (``_sqlite_time``: sliced,
    not parsed; a time in any other form goes through that function)."""
    marks = []
    for i, column in enumerate(columns, 1):
        p = f"?{i}"
        marks.append(p if column != "at" else (
            f"CASE WHEN length({p}) = 32 AND substr({p}, 11, 1) = 'T' AND substr({p}, 27) "
            f"= '+00:00' THEN substr({p}, 1, 10) || ' ' || substr({p}, 12, 15) "
            f"ELSE osprey_utc({p}) END"))
    return ", ".join(marks)


def _sqlite_time(text: str) -> str:
    """How SQLAlchemy stores a UTC datetime in SQLite (what the ORM reads back). The
    writer's times are ``YYYY-MM-DDTHH:MM:SS.ffffff+00:00``: sliced, not parsed."""
    if len(text) == 32 and text[10] == "T" and text.endswith("+00:00"):
        return text[:10] + " " + text[11:26]
    return _time(text).astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


# -- retention ------------------------------------------------------------------------------


def prune(session: Session, before: dt.datetime, actor: str, reason: str) -> dict[str, Any]:
    """Delete audited requests (with their decision rows and feedback) older than
    ``before``; first checkpoint, per stream, the chain value of the last record
    deleted, so that ``verify`` starts from there. Returns what was deleted."""
    last = session.execute(
        select(AuditRequest.stream_id, func.max(AuditRequest.seq))
        .where(AuditRequest.at < before).group_by(AuditRequest.stream_id)).all()
    now = dt.datetime.now(dt.UTC)
    checkpoints = []
    for stream_id, seq in last:
        chain = session.scalar(select(AuditRequest.chain).where(
            AuditRequest.stream_id == stream_id, AuditRequest.seq == seq))
        checkpoints.append({"stream_id": stream_id, "seq": seq, "chain": chain, "at": now,
                            "kind": "prune", "actor": actor,
                            "reason": f"{reason} (before {before.isoformat()})"})
    if checkpoints:
        session.execute(_insert(session, AuditCheckpoint), checkpoints)
    old = select(AuditRequest.decision_id).where(AuditRequest.at < before)
    counted = {}
    for name, table, where in (
        ("feedback", Feedback, Feedback.decision_id.in_(old)),
        ("decisions", AuditDecision, AuditDecision.decision_id.in_(old)),
        ("requests", AuditRequest, AuditRequest.at < before),
    ):
        counted[name] = int(session.scalar(select(func.count()).select_from(table).where(where))
                            or 0)
        session.execute(delete(table).where(where))
    feedback, decisions, requests = (counted["feedback"], counted["decisions"],
                                     counted["requests"])
    return {"before": before.isoformat(), "streams": len(checkpoints), "requests": requests,
            "decisions": decisions, "feedback": feedback}


# -- verification ---------------------------------------------------------------------------


@dataclass
class Finding:
    stream: str
    seq: int | None
    kind: str  # edited | inserted | deleted | truncated | missing_stream | decision_mismatch
    detail: str

    def __str__(self) -> str:
        if not self.stream:
            return f"{self.kind}: {self.detail}"
        where = f"stream {self.stream}" + (f" seq {self.seq}" if self.seq is not None else "")
        return f"{self.kind}: {where}: {self.detail}"


@dataclass
class Verification:
    streams: int = 0
    records: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


def _fields(row: AuditRequest) -> dict[str, Any]:
    fields = {name: getattr(row, name) for name in CHAINED_FIELDS}
    fields["at"] = row.at.astimezone(dt.UTC).isoformat(timespec="microseconds")
    return fields


def verify(session: Session, key: bytes, since: dt.datetime | None = None) -> Verification:
    """Recompute every stream's chain (see the module docstring)."""
    result = Verification()
    streams = {s.id: s for s in session.scalars(select(AuditStream))}
    heads: dict[str, int] = dict(session.execute(
        select(AuditCheckpoint.stream_id, func.max(AuditCheckpoint.seq))
        .group_by(AuditCheckpoint.stream_id)).all())
    pruned: dict[str, AuditCheckpoint] = {}
    for checkpoint in session.scalars(select(AuditCheckpoint)
                                      .where(AuditCheckpoint.kind == "prune")
                                      .order_by(AuditCheckpoint.id)):
        pruned[checkpoint.stream_id] = checkpoint  # the latest prune of each stream
    by_stream: dict[str, list[AuditRequest]] = defaultdict(list)
    query = select(AuditRequest).order_by(AuditRequest.stream_id, AuditRequest.seq)
    for row in session.scalars(query):
        by_stream[row.stream_id].append(row)
    decisions: dict[tuple[str, str], list[AuditDecision]] = defaultdict(list)
    for d in session.scalars(select(AuditDecision).order_by(AuditDecision.decision_id,
                                                            AuditDecision.row_index)):
        decisions[(d.decision_id, d.route)].append(d)
    result.streams = len(streams)
    for stream_id in sorted(set(by_stream) | set(heads) - set(streams)):
        if stream_id not in streams:
            result.findings.append(Finding(stream_id, None, "missing_stream",
                                           "records or checkpoints of a stream with no genesis"))
    for stream_id, stream in sorted(streams.items()):
        if stream.key_id != key_id(key):
            result.findings.append(Finding(stream_id, None, "wrong_key",
                                           f"stream signed with key {stream.key_id}, "
                                           f"not this key ({key_id(key)})"))
            continue
        genesis = {"kind": "genesis", "stream_id": stream.id, "seq": 0, "host": stream.host,
                   "pid": stream.pid, "started_at": stream.started_at.astimezone(dt.UTC)
                   .isoformat(timespec="microseconds"), "key_id": stream.key_id}
        # The chain values record n may follow: the stored one of n - 1, and the one
        # recomputed from its content (if only its chain value was tampered with).
        candidates = {link(key, GENESIS_PREVIOUS, genesis)}
        expected_seq = 1
        if stream_id in pruned:  # records up to the prune are gone by design
            candidates = {bytes.fromhex(pruned[stream_id].chain)}
            expected_seq = pruned[stream_id].seq + 1
        for row in by_stream.get(stream_id, []):
            result.records += 1
            if row.seq < expected_seq and stream_id in pruned and (
                row.seq <= pruned[stream_id].seq
            ):
                result.findings.append(Finding(stream_id, row.seq, "inserted",
                                               "a record older than the stream's prune"))
                continue
            if row.seq < expected_seq:
                result.findings.append(Finding(stream_id, row.seq, "inserted",
                                               f"a second record with sequence {row.seq}"))
                continue
            after_gap = row.seq > expected_seq
            if after_gap:
                result.findings.append(Finding(
                    stream_id, expected_seq, "deleted",
                    f"records {expected_seq}..{row.seq - 1} are missing (record {row.seq} "
                    "after the gap cannot be checked against them)"))
            fields = _fields(row)
            stored = bytes.fromhex(row.chain) if _is_hex(row.chain) else b""
            recomputed = {link(key, previous, fields) for previous in candidates}
            if stored not in recomputed and not after_gap:
                result.findings.append(Finding(
                    stream_id, row.seq, "edited",
                    f"decision {row.decision_id}: its content or chain value was changed "
                    "(or it was inserted)"))
            candidates = {stored} if stored in recomputed else {stored, *recomputed}
            expected_seq = row.seq + 1
            if since is None or row.at >= since:
                _check_decisions(result, row, decisions.get((row.decision_id, row.route), []))
        head = heads.get(stream_id)
        if head is not None and head >= expected_seq:
            result.findings.append(Finding(
                stream_id, expected_seq, "truncated",
                f"records {expected_seq}..{head} are gone: a checkpoint vouches for "
                f"sequence {head}"))
    known = {(row.decision_id, row.route) for rows in by_stream.values() for row in rows}
    for decision_id, route in sorted(set(decisions) - known):
        rows = decisions[(decision_id, route)]
        result.findings.append(Finding(
            "", None, "orphaned",
            f"decision {decision_id} ({route}): {len(rows)} decided row(s) without their "
            "request (the request was deleted)"))
    return result


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return len(text) == 64


def _check_decisions(result: Verification, row: AuditRequest,
                     found: list[AuditDecision]) -> None:
    expected = row.rows if row.status == "OK" else 0
    indexes = [d.row_index for d in found]
    if indexes != list(range(expected)):
        result.findings.append(Finding(
            row.stream_id, row.seq, "decision_mismatch",
            f"decision {row.decision_id} has rows {indexes}, the request decided {expected}"))
    for d in found:
        if (d.model, d.version, d.route, d.status) != (row.model, row.version, row.route,
                                                       row.status):
            result.findings.append(Finding(
                row.stream_id, row.seq, "decision_mismatch",
                f"decision {row.decision_id} row {d.row_index}: model/version/route/status "
                "differ from the request's"))
            continue
        outputs = row.outputs or {}
        if d.score is not None and not _in_outputs(d.score, d.row_index, outputs):
            result.findings.append(Finding(
                row.stream_id, row.seq, "decision_mismatch",
                f"decision {row.decision_id} row {d.row_index}: score {d.score} is not what "
                "the model answered"))


def _in_outputs(score: float, row_index: int, outputs: dict[str, Any]) -> bool:
    for column in outputs.values():
        if isinstance(column, list) and row_index < len(column):
            value = column[row_index]
            value = value[0] if isinstance(value, list) and value else value
            if isinstance(value, int | float) and float(value) == score:
                return True
    return False
