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
from typing import Any

from sqlalchemy import select

from server.errors import InvalidInput

from . import audit_store
from .audit_chain import load_key
from .cli import _common, _config, _emit, _time, open_database, table
from .migrate import check_schema
from .models import AuditDecision, AuditRequest

QUERY_LIMIT = 1000


def _when(value: str | None, flag: str) -> dt.datetime | None:
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{flag} takes an ISO 8601 time, got {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


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
    config = _config(args)
    db = open_database(config)
    check_schema(db)
    query = select(AuditRequest).order_by(AuditRequest.at, AuditRequest.decision_id)
    if args.decision_id:
        query = query.where(AuditRequest.decision_id == args.decision_id)
    elif args.request_id is not None:
        query = query.where(AuditRequest.request_id == args.request_id)
    elif args.since is None:
        raise InvalidInput("give --decision-id, --request-id, or --since (with --until)")
    since, until = _when(args.since, "--since"), _when(args.until, "--until")
    if since is not None:
        query = query.where(AuditRequest.at >= since)
    if until is not None:
        query = query.where(AuditRequest.at < until)
    if args.model:
        query = query.where(AuditRequest.model == args.model)
    if args.version is not None:
        query = query.where(AuditRequest.version == args.version)
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
        [[_time(r["at"]), r["decision_id"], r["request_id"] or "-", r["model"], r["version"],
          r["route"], r["rows"], r["status"],
          ",".join(f"{d['score']:.4g}" for d in r["decisions"] if d["score"] is not None)
          or None,
          ",".join(str(d["decision"]) for d in r["decisions"] if d["decision"] is not None)
          or None] for r in document],
    ) if document else "no audited requests match"
    return _emit(args, document, text)


def _verify(args: argparse.Namespace) -> int:
    config = _config(args)
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
    _emit(args, document, text)
    return 0 if result.ok else 1


def add_commands(sub: Any) -> None:
    audit = sub.add_parser("audit", help="the audit log of every decision").add_subparsers(
        dest="audit_command", required=True)
    p = audit.add_parser("query", help="audited requests and their decisions")
    _common(p, write=False)
    p.add_argument("--decision-id")
    p.add_argument("--request-id", help="the client's request id (not unique)")
    p.add_argument("--since", help="ISO 8601 time (UTC unless it says otherwise)")
    p.add_argument("--until")
    p.add_argument("--model")
    p.add_argument("--version", type=int)
    p.add_argument("--limit", type=int, default=QUERY_LIMIT)
    p.set_defaults(run=_query)
    p = audit.add_parser("verify", help="prove the audit log unaltered (exit 1 if not)")
    _common(p, write=False)
    p.add_argument("--since", help="check decision rows of requests from this time on")
    p.set_defaults(run=_verify)
