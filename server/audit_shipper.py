"""Shipping sealed audit spool segments into SQL, and leftovers of dead processes.

A thread takes this process's sealed segments in order, loads each into the
database in one transaction (``registry.audit_store.load``: idempotent, COPY-free
bulk inserts), and deletes the segment only after the commit. On start it first
claims the spool folders of processes that are gone (a crash, a ``kill -9``) by
renaming them, and ships their segments, the last one possibly still ``.open``
with a torn final line (ignored: under ``strict`` no acknowledged record is in it).

While the database cannot be reached, segments stay on disk (the spool grows up to
its bound) and the ``on_reachable`` callback reports it; everything is shipped
when the database returns.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from registry import audit_store
from registry.db import Database

from .audit_spool import OPEN, SEALED, AuditLog
from .errors import OspreyError

log = logging.getLogger("osprey.audit")

CLAIMED = ".claimed-"
SHIP_SECONDS = 0.25


def read_segment(path: Path) -> list[dict[str, Any]]:
    """The complete lines of a segment (a torn last line is left out)."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    out = []
    for i, line in enumerate(lines):
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # the last line, cut short by a crash
                log.warning("%s: ignoring a torn last line (%d bytes)", path, len(line))
                continue
            raise
    return out


def _segments(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in suffixes)


def _process_alive(folder_name: str) -> bool:
    """Whether the stream folder ``host_pid_uuid`` belongs to a live local process."""
    parts = folder_name.split("_")
    if len(parts) < 3 or parts[0] != socket.gethostname().replace(":", "_"):
        return True  # another host's folder (a shared volume): not ours to take
    try:
        os.kill(int(parts[1]), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


class AuditShipper:
    def __init__(
        self, audit: AuditLog, db: Database, on_reachable: Callable[[bool], None]
    ) -> None:
        self.audit = audit
        self.db = db
        self.on_reachable = on_reachable
        self.shipped = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="osprey-audit-shipper",
                                        daemon=True)
        self._claimed: list[Path] = []

    def start(self) -> None:
        self._claim_leftovers()
        self._thread.start()

    def _claim_leftovers(self) -> None:
        root = self.audit.spool_root
        own = self.audit.folder.name
        for folder in sorted(root.iterdir()):
            if not folder.is_dir() or folder.name == own:
                continue
            if CLAIMED in folder.name:
                owner = folder.name.split(CLAIMED, 1)[1]
                if _process_alive(owner):
                    continue
            elif _process_alive(folder.name):
                continue
            target = root / f"{folder.name.split(CLAIMED, 1)[0]}{CLAIMED}{own}"
            try:
                folder.rename(target)
            except OSError:
                continue  # another process claimed it first
            log.info("shipping the audit spool left by %s", folder.name)
            self._claimed.append(target)

    def _run(self) -> None:
        while not self._stop.wait(SHIP_SECONDS):
            self.ship_once()
        self.ship_once()

    def ship_once(self) -> bool:
        """Ship what is ready; False if the database could not be reached."""
        try:
            for folder in list(self._claimed):
                for segment in _segments(folder, (SEALED, OPEN)):
                    self._ship(segment, own=False)
                folder.rmdir()
                self._claimed.remove(folder)
            for segment in _segments(self.audit.folder, (SEALED,)):
                self._ship(segment, own=True)
        except OspreyError as exc:
            self.on_reachable(False)
            log.debug("audit shipping paused: %s", exc.message)
            return False
        except Exception:
            log.exception("audit shipping failed; retrying")
            return False
        self.on_reachable(True)
        return True

    def _ship(self, segment: Path, own: bool) -> None:
        lines = read_segment(segment)
        size = segment.stat().st_size
        with self.db.write() as session:
            self.shipped += audit_store.load(session, lines)
        segment.unlink()
        if own:
            self.audit.spool_bytes -= size

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
