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
turn. After every pass it publishes ``.shipper.json`` (database reachable or not,
when, what it shipped), which the servers read for their ``osprey.audit`` health.
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

from native.audit_record import split
from registry import audit_store
from registry.db import Database

from .audit_spool import OPEN, SEALED, decided_rows
from .errors import OspreyError

log = logging.getLogger("osprey.audit")

SHIP_SECONDS = 0.05  # a pass as soon as a segment is sealed (SEAL_SECONDS): short bursts
PROGRESS_SECONDS = 1.0  # a long pass says it is alive at least this often
LOCK_FILE = ".shipper.lock"
STATUS_FILE = ".shipper.json"


def read_segment(path: Path) -> list[dict[str, Any]]:
    """The complete lines of a segment (a torn last line is left out; an open strict
    segment ends in the zeros it was filled with ahead of the data), each request's
decided rows under ``"decided"`` as (row index, score, decision). Tensors stay the
    JSON text the writer wrote (``native.audit_record.split``); only the outputs of
    records whose version declares a score or a decision are parsed, all of a
    segment's in one ``json.loads`` (one call per record cost more than the parse)."""
    data = path.read_bytes().rstrip(b"\0")
    lines = data.split(b"\n")
    out = []
    scored: list[tuple[dict[str, Any], tuple[Any, Any, Any]]] = []
    for i, line in enumerate(lines):
        if not line:
            continue
        try:
            record = split(line)
        except ValueError:
            if i == len(lines) - 1:  # the last line, cut short by a crash
                log.warning("%s: ignoring a torn last line (%d bytes)", path, len(line))
                continue
            raise
        declared = _declared(record.pop("declared", None))
        if record.get("kind") != "genesis":
            if (declared[0] or declared[1]) and record["status"] == "OK":
                scored.append((record, declared))
            else:
                record["decided"] = decided_rows(record["rows"], record["status"], {},
                                                 *declared)
        out.append(record)
    if scored:
        outputs = json.loads("[" + ",".join([r["outputs"] for r, _ in scored]) + "]")
        for (record, declared), parsed in zip(scored, outputs, strict=True):
            record["decided"] = decided_rows(record["rows"], record["status"], parsed,
                                             *declared)
    return out


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
        lines = read_segment(segment)
        with self.db.write() as session:
            self.shipped += audit_store.load(session, lines)
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
            while True:
                finished = _done(parent, stopping, 0.0)
                ok = self.ship_once(publishing=True)
                if ok != reachable:
                    log.log(logging.INFO if ok else logging.WARNING,
                            "audit database %s", "reachable: shipping the spool" if ok
                            else f"unreachable ({self.error}): decisions wait in the spool")
                reachable = ok
                self.publish(ok)
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
