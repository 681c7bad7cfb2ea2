"""Shipping audit spool segments into SQL: the side-car behind ``osprey audit ship``.

A spool root holds one folder per writer stream (``host_pid_boot``). The shipper
loads every sealed segment, oldest first, into the database in one transaction
(``registry.audit_store.load``: idempotent bulk inserts, COPY on PostgreSQL) and
deletes the segment only after the commit. The folders of processes that are gone
(a crash, a ``kill -9``) are shipped whole, their last segment possibly still
``.open`` with a torn final line (ignored: under ``strict`` no acknowledged record
is in it), and then removed.

It runs as its own process (``osprey serve`` starts one beside each server process;
on Kubernetes it can be its own container on the spool volume), so that parsing and
inserting never take the serving process's CPU or GIL. One shipper works a spool
root at a time (an exclusive ``flock`` on ``.shipper.lock``); the others wait their
turn. It publishes ``.shipper.json`` (database reachable or not, when, what it
shipped) every ``PUBLISH_SECONDS`` and whenever reachability changes, which the
servers read for their ``osprey.audit`` health.
While the database cannot be reached, segments stay on disk (the spool grows up to
its bound) and everything is shipped when the database returns.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from native.audit_record import records
from registry import audit_store
from registry.audit_store import REQUEST_COLUMNS, AuditBatch
from registry.db import Database

from .audit_spool import OPEN, SEALED, decided_rows
from .errors import OspreyError

log = logging.getLogger("osprey.audit")

SHIP_SECONDS = 0.05  # a pass as soon as a segment is sealed (SEAL_SECONDS): short bursts
PROGRESS_SECONDS = 1.0  # a long pass says it is alive at least this often
PUBLISH_SECONDS = 0.5  # the status file, unless reachability changed (servers: STALE_SECONDS)
LOCK_FILE = ".shipper.lock"
STATUS_FILE = ".shipper.json"


# The keys the shipper reads from a spool line: a request's columns, the version's
# declared score and decision (not chained, not stored), and a genesis line's own.
FIELDS = (*REQUEST_COLUMNS, "declared", "kind", "host", "pid", "started_at", "key_id")
_REQUEST = len(REQUEST_COLUMNS)
_DECLARED_AT, _KIND = FIELDS.index("declared"), FIELDS.index("kind")
_DECISION_ID, _AT, _MODEL, _VERSION, _ROUTE, _ROWS, _STATUS, _OUTPUTS = (
    REQUEST_COLUMNS.index(name) for name in (
        "decision_id", "at", "model", "version", "route", "rows", "status", "outputs"))


def read_segment(path: Path) -> AuditBatch:
    """The complete lines of a segment as ``audit_store.load`` inserts them (a torn
    last line is left out; an open strict segment ends in the zeros it was filled
    with ahead of the data). ``native.audit_record.records`` reads every line in one
    call, tensors as the JSON text the writer wrote; only the outputs of records whose
    version declares a score or a decision are parsed, all of a segment's in one
    ``json.loads`` (one call per record cost more than the parse)."""
    try:
        rows, torn = records(path.read_bytes(), FIELDS)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    if torn:
        log.warning("%s: ignoring a torn last line (%d bytes)", path, torn)
    batch = AuditBatch()
    requests, decisions = batch.requests, batch.decisions
    scored: list[tuple[tuple[Any, ...], tuple[Any, Any, Any]]] = []
    for row in rows:
        if row[_KIND] == "genesis":
            batch.streams.append(dict(zip(FIELDS, row, strict=True)))
            continue
        request = row[:_REQUEST]
        requests.append(request)
        if request[_STATUS] != "OK":
            continue  # a failed request decided nothing
        declared = _declared(row[_DECLARED_AT])
        if declared[0] or declared[1]:
            scored.append((request, declared))
        else:  # a plain model: its rows, without score or decision
            decisions.extend(_decision_rows(request, [(i, None, None) for i in range(
                request[_ROWS])]))
    if scored:
        outputs = json.loads("[" + ",".join([r[_OUTPUTS] for r, _ in scored]) + "]")
        for (request, declared), parsed in zip(scored, outputs, strict=True):
            decisions.extend(_decision_rows(request, decided_rows(
                request[_ROWS], "OK", parsed, *declared)))
    return batch


def _decision_rows(request: tuple[Any, ...], decided: list[tuple[int, Any, Any]]
                   ) -> list[tuple[Any, ...]]:
    """``audit_decisions`` rows (DECISION_COLUMNS) of one request's (row index, score,
    decision) triples."""
    did, route, at = request[_DECISION_ID], request[_ROUTE], request[_AT]
    model, version, status = request[_MODEL], request[_VERSION], request[_STATUS]
    return [(did, i, route, at, model, version, status, score, decision)
            for i, score, decision in decided]


_DECLARED: dict[str, tuple[Any, Any, Any]] = {}


def _declared(text: str | None) -> tuple[Any, Any, Any]:
    """A record's ``declared`` [score, decision, threshold]: a handful of distinct
    texts per spool, parsed once each."""
    if text is None:
        return None, None, None
    value = _DECLARED.get(text)
    if value is None:
        parsed = json.loads(text)
        value = (parsed[0], parsed[1], parsed[2]) if isinstance(parsed, list) else (
            None, None, None)
        if len(_DECLARED) < 1024:
            _DECLARED[text] = value
    return value


def _segments(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in suffixes)


def process_alive(folder_name: str) -> bool:
    """Whether the stream folder ``host_pid_uuid`` belongs to a live local process
    (another host's folder on a shared volume counts as alive: not ours to judge)."""
    parts = folder_name.split("_")
    if len(parts) < 3 or parts[0] != socket.gethostname().replace(":", "_"):
        return True
    try:
        os.kill(int(parts[1]), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


@dataclass
class ShipperStatus:
    pid: int
    reachable: bool
    at: float  # time.time() of the pass
    shipped: int  # requests shipped by this shipper so far
    error: str = ""

    @property
    def age(self) -> float:
        return time.time() - self.at


def read_status(spool_root: Path) -> ShipperStatus | None:
    """The last pass of whichever shipper works ``spool_root``, or None."""
    try:
        return ShipperStatus(**json.loads((spool_root / STATUS_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


class SpoolShipper:
    """Ships every stream folder under ``spool_root`` into ``db``."""

    def __init__(self, spool_root: Path, db: Database) -> None:
        self.spool_root = spool_root
        self.db = db
        self.shipped = 0
        self.error = ""

    def ship_once(self, publishing: bool = False) -> bool:
        """Ship what is ready; False if the database could not be reached.

        ``publishing``: a long pass (a backlog after an outage) publishes its progress
        every ``PROGRESS_SECONDS``, so the servers do not take it for a stuck one."""
        published = time.monotonic()
        try:
            for folder in sorted(p for p in self.spool_root.iterdir() if p.is_dir()):
                alive = process_alive(folder.name)
                for segment in _segments(folder, (SEALED,) if alive else (SEALED, OPEN)):
                    self._ship(segment)
                    if publishing and time.monotonic() - published >= PROGRESS_SECONDS:
                        self.publish(True)
                        published = time.monotonic()
                if not alive:
                    with contextlib.suppress(OSError):  # not empty: written to meanwhile
                        folder.rmdir()
        except OspreyError as exc:
            self.error = exc.message
            log.debug("audit shipping paused: %s", exc.message)
            return False
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("audit shipping failed; retrying")
            return False
        self.error = ""
        return True

    def _ship(self, segment: Path) -> None:
        batch = read_segment(segment)
        with self.db.write() as session:
            self.shipped += audit_store.load(session, batch)
        segment.unlink()

    def publish(self, reachable: bool) -> None:
        """Write ``.shipper.json`` atomically."""
        status = ShipperStatus(os.getpid(), reachable, time.time(), self.shipped, self.error)
        tmp = self.spool_root / f".{STATUS_FILE}.{os.getpid()}"
        tmp.write_text(json.dumps(asdict(status)))
        tmp.replace(self.spool_root / STATUS_FILE)

    def ship_if_free(self) -> bool | None:
        """One pass if no other shipper works the spool now (else None: it will)."""
        self.spool_root.mkdir(parents=True, exist_ok=True)
        with (self.spool_root / LOCK_FILE).open("a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None
            return self.ship_once()

    def follow(self, parent: int | None = None, stopping: Any = None) -> None:
        """Ship every ``SHIP_SECONDS`` until ``stopping`` is set (a threading.Event) or
        ``parent`` exits; then one last pass. Waits its turn for the spool's lock."""
        self.spool_root.mkdir(parents=True, exist_ok=True)
        with (self.spool_root / LOCK_FILE).open("a") as lock:
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if _done(parent, stopping, 0.5):
                        return
            reachable: bool | None = None
            published, error = 0.0, ""
            while True:
                finished = _done(parent, stopping, 0.0)
                ok = self.ship_once(publishing=True)
                if ok != reachable:
                    log.log(logging.INFO if ok else logging.WARNING,
                            "audit database %s", "reachable: shipping the spool" if ok
                            else f"unreachable ({self.error}): decisions wait in the spool")
                if (finished or ok != reachable or self.error != error
                        or time.monotonic() - published >= PUBLISH_SECONDS):
                    self.publish(ok)  # ~0.3 ms of CPU: not after each of 20 passes a second
                    published, error = time.monotonic(), self.error
                reachable = ok
                if finished or _done(parent, stopping, SHIP_SECONDS):
                    if not finished:
                        self.publish(self.ship_once())
                    return


def _done(parent: int | None, stopping: Any, wait: float) -> bool:
    """Wait up to ``wait`` seconds; True once told to stop or the parent is gone."""
    if stopping is not None:
        if stopping.wait(wait):
            return True
    elif wait:
        time.sleep(wait)
    return parent is not None and os.getppid() != parent
