"""``osprey audit query|verify``: the audit log for auditors, from the command line.

``query`` finds requests by decision id, client request id, or time range (with
model and version), with their decided rows. ``verify`` recomputes every writer
stream's HMAC chain with the key (``audit_key_file``, default
``$OSPREY_HOME/audit.key``) and exits 1 if anything was edited, inserted, deleted,
truncated or is missing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import select

from server.errors import InvalidInput

from . import audit_store
from .audit_chain import load_key
from .cli import add_common_flags, config_of, emit, format_time, open_database, table
from .migrate import check_schema
from .models import AuditDecision, AuditRequest, Feedback
from .repository import add_event
from .service import default_actor

AUDIT_EVENTS = "(audit)"  # the model name of registry events about the audit log

QUERY_LIMIT = 1000


def _when(value: str | None, flag: str) -> dt.datetime | None:
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{flag} takes an ISO 8601 time, got {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _in_window(query: Any, table: type[AuditRequest] | type[AuditDecision],
               args: argparse.Namespace) -> Any:
    """``query`` limited to --since/--until and --model/--version, on ``table``'s columns."""
    since, until = _when(args.since, "--since"), _when(args.until, "--until")
    if since is not None:
        query = query.where(table.at >= since)
    if until is not None:
        query = query.where(table.at < until)
    if args.model:
        query = query.where(table.model == args.model)
    if args.version is not None:
        query = query.where(table.version == args.version)
    return query


def _request_json(row: AuditRequest, decisions: list[AuditDecision]) -> dict[str, Any]:
    return {
        "decision_id": row.decision_id, "at": row.at.isoformat(), "request_id": row.request_id,
        "routing_key": row.routing_key, "model": row.model, "version": row.version,
        "route": row.route, "rows": row.rows, "status": row.status, "error": row.error,
        "latency_us": row.latency_us, "caller": row.caller, "principal": row.principal,
        "trace_id": row.trace_id, "inputs": row.inputs, "outputs": row.outputs,
        "stream_id": row.stream_id, "seq": row.seq,
        "decisions": [{"row_index": d.row_index, "score": d.score, "decision": d.decision}
                      for d in decisions],
    }


def _query(args: argparse.Namespace) -> int:
    config = config_of(args)
    db = open_database(config)
    check_schema(db)
    query = select(AuditRequest).order_by(AuditRequest.at, AuditRequest.decision_id)
    if args.decision_id:
        query = query.where(AuditRequest.decision_id == args.decision_id)
    elif args.request_id is not None:
        query = query.where(AuditRequest.request_id == args.request_id)
    elif args.since is None:
        raise InvalidInput("give --decision-id, --request-id, or --since (with --until)")
    query = _in_window(query, AuditRequest, args)
    with db.read() as session:
        rows = session.scalars(query.limit(args.limit)).all()
        ids = [r.decision_id for r in rows]
        decided: dict[tuple[str, str], list[AuditDecision]] = {
            (r.decision_id, r.route): [] for r in rows}
        if ids:
            for d in session.scalars(select(AuditDecision)
                                     .where(AuditDecision.decision_id.in_(ids))
                                     .order_by(AuditDecision.row_index)):
                decided.setdefault((d.decision_id, d.route), []).append(d)
        document = [_request_json(r, decided[(r.decision_id, r.route)]) for r in rows]
    text = table(
        ["at (UTC)", "decision id", "request id", "model", "version", "route", "rows",
         "status", "scores", "decisions"],
        [[format_time(r["at"]), r["decision_id"], r["request_id"] or "-", r["model"], r["version"],
          r["route"], r["rows"], r["status"],
          ",".join(f"{d['score']:.4g}" for d in r["decisions"] if d["score"] is not None)
          or None,
          ",".join(str(d["decision"]) for d in r["decisions"] if d["decision"] is not None)
          or None] for r in document],
    ) if document else "no audited requests match"
    return emit(args, document, text)


def _verify(args: argparse.Namespace) -> int:
    config = config_of(args)
    db = open_database(config)
    check_schema(db)
    key = load_key(config.audit_key_file or config.home / "audit.key")
    with db.read() as session:
        result = audit_store.verify(session, key, _when(args.since, "--since"))
    document = {"ok": result.ok, "streams": result.streams, "records": result.records,
                "findings": [f.__dict__ for f in result.findings]}
    if result.ok:
        text = (f"audit log intact: {result.records} record(s) in {result.streams} "
                "stream(s), every chain verified")
    else:
        text = "\n".join([f"AUDIT LOG TAMPERED: {len(result.findings)} finding(s)",
                          *(f"  {f}" for f in result.findings)])
    emit(args, document, text)
    return 0 if result.ok else 1


def _prune(args: argparse.Namespace) -> int:
    config = config_of(args)
    db = open_database(config)
    check_schema(db)
    before = _when(args.before, "--before")
    assert before is not None
    reason = args.reason.strip()
    if not reason:
        raise InvalidInput("a reason is required (--reason)")
    actor = args.actor or default_actor()
    with db.write() as session:
        done = audit_store.prune(session, before, actor, reason)
        add_event(session, actor=actor, model=AUDIT_EVENTS, kind="audit_pruned",
                  reason=reason, after=done)
    return emit(args, done, (
        f"pruned {done['requests']} request(s), {done['decisions']} decision row(s) and "
        f"{done['feedback']} label(s) from before {done['before']}; {done['streams']} "
        "stream checkpoint(s) written (verification starts there)"))


EXPORT_COLUMNS = ("decision_id", "row_index", "route", "at", "model", "version", "status",
                  "score", "decision", "request_id", "routing_key", "caller", "principal",
                  "trace_id", "label", "label_source", "inputs")


PARQUET_BATCH_ROWS = 65_536


def _export_rows(args: argparse.Namespace) -> Iterator[tuple[Any, ...]]:
    """One tuple per decided row (``EXPORT_COLUMNS``), oldest first, streamed."""
    config = config_of(args)
    db = open_database(config)
    check_schema(db)
    query = (select(AuditDecision, AuditRequest, Feedback)
             .join(AuditRequest, (AuditRequest.decision_id == AuditDecision.decision_id)
                   & (AuditRequest.route == AuditDecision.route))
             .outerjoin(Feedback, (Feedback.decision_id == AuditDecision.decision_id)
                        & (Feedback.row_index == AuditDecision.row_index))
             .order_by(AuditDecision.at, AuditDecision.decision_id, AuditDecision.row_index))
    query = _in_window(query, AuditDecision, args)
    with db.read() as session:
        for d, r, f in session.execute(query.execution_options(yield_per=1000)).tuples():
            row_inputs = {name: column[d.row_index] if isinstance(column, list)
                          and d.row_index < len(column) else None
                          for name, column in (r.inputs or {}).items()}
            at = d.at if d.at.tzinfo else d.at.replace(tzinfo=dt.UTC)
            yield (d.decision_id, d.row_index, d.route, at, d.model, d.version, d.status,
                   d.score, d.decision, r.request_id, r.routing_key, r.caller, r.principal,
                   r.trace_id, json.dumps(f.label) if f is not None else None,
                   f.source if f is not None else None, json.dumps(row_inputs))
    db.dispose()


def _export(args: argparse.Namespace) -> int:
    rows = _export_rows(args)
    if args.format == "parquet":
        if not args.output:
            raise InvalidInput("--format parquet writes a file: give --output FILE")
        count = _write_parquet(rows, args.output)
    else:
        count = _write_csv(rows, args.output)
    if args.output:
        print(f"exported {count} decided row(s) to {args.output}")
    return 0


def _write_csv(rows: Iterator[tuple[Any, ...]], output: str | None) -> int:
    import csv
    import sys

    out = open(output, "w", newline="") if output else sys.stdout  # noqa: SIM115
    count = 0
    try:
        writer = csv.writer(out)
        writer.writerow(EXPORT_COLUMNS)
        for row in rows:
            writer.writerow(["" if v is None else v.isoformat() if isinstance(v, dt.datetime)
                             else v for v in row])
            count += 1
    finally:
        if output:
            out.close()
    return count


def _write_parquet(rows: Iterator[tuple[Any, ...]], output: str) -> int:
    """Typed columns (time as UTC microseconds, version and row index as integers, score
    as a double; label and inputs as JSON text), in row groups of PARQUET_BATCH_ROWS."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise InvalidInput(
            "--format parquet needs pyarrow: pip install 'osprey[parquet]'") from None
    types = {"row_index": pa.int32(), "at": pa.timestamp("us", tz="UTC"),
             "version": pa.int64(), "score": pa.float64()}
    schema = pa.schema([(name, types.get(name, pa.string())) for name in EXPORT_COLUMNS])
    count = 0
    with pq.ParquetWriter(output, schema) as writer:
        batch: list[tuple[Any, ...]] = []

        def flush() -> None:
            columns: list[list[Any]] = [[row[i] for row in batch]
                                        for i in range(len(EXPORT_COLUMNS))]
            writer.write_table(pa.table(
                [pa.array(c, type=schema.field(i).type) for i, c in enumerate(columns)],
                schema=schema))
            batch.clear()

        for row in rows:
            batch.append(row)
            count += 1
            if len(batch) >= PARQUET_BATCH_ROWS:
                flush()
        if batch or count == 0:
            flush()
    return count


def _ship(args: argparse.Namespace) -> int:
    from server.audit_shipper import SpoolShipper

    config = config_of(args)
    spool = Path(args.spool) if args.spool else (
        config.audit_spool_dir or config.home / "audit-spool")
    db = open_database(config)
    check_schema(db)
    shipper = SpoolShipper(spool, db)
    if not args.follow:
        ok = shipper.ship_once()
        emit(args, {"spool": str(spool), "shipped": shipper.shipped, "ok": ok,
                    "error": shipper.error},
             f"shipped {shipper.shipped} audited request(s) from {spool}"
             + ("" if ok else f"; stopped: {shipper.error}"))
        return 0 if ok else 1
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    shipper.follow(args.parent, stopping)
    return 0


def add_commands(sub: Any) -> None:
    audit = sub.add_parser("audit", help="the audit log of every decision").add_subparsers(
        dest="audit_command", required=True)
    p = audit.add_parser("query", help="audited requests and their decisions")
    add_common_flags(p, write=False)
    p.add_argument("--decision-id")
    p.add_argument("--request-id", help="the client's request id (not unique)")
    p.add_argument("--since", help="ISO 8601 time (UTC unless it says otherwise)")
    p.add_argument("--until")
    p.add_argument("--model")
    p.add_argument("--version", type=int)
    p.add_argument("--limit", type=int, default=QUERY_LIMIT)
    p.set_defaults(run=_query)
    p = audit.add_parser("prune", help="delete audited decisions older than a date "
                                       "(checkpointed, recorded as an event)")
    add_common_flags(p, write=True)
    p.add_argument("--before", required=True, help="ISO 8601 time")
    p.set_defaults(run=_prune)
    p = audit.add_parser("export", help="one row per decided row, with its label (CSV or "
                                        "Parquet)")
    add_common_flags(p, write=False)
    p.add_argument("--format", choices=["csv", "parquet"], default="csv",
                   help="csv (default) or parquet (typed columns; needs pyarrow and --output)")
    p.add_argument("--output", help="file (default: standard output)")
    p.add_argument("--since")
    p.add_argument("--until")
    p.add_argument("--model")
    p.add_argument("--version", type=int)
    p.set_defaults(run=_export)
    p = audit.add_parser("ship", help="load spooled audit records into the database "
                                      "(once, or --follow as the side-car)")
    add_common_flags(p, write=False)
    p.add_argument("--spool", help="spool folder (default: audit_spool_dir, else "
                                   "$OSPREY_HOME/audit-spool)")
    p.add_argument("--follow", action="store_true",
                   help="keep shipping every 0.05 s until SIGTERM (the side-car)")
    p.add_argument("--parent", type=int, help=argparse.SUPPRESS)  # exit with this process
    p.set_defaults(run=_ship)
    p = audit.add_parser("verify", help="prove the audit log unaltered (exit 1 if not)")
    add_common_flags(p, write=False)
    p.add_argument("--since", help="check decision rows of requests from this time on")
    p.set_defaults(run=_verify)
