"""The server's side of audit shipping: start the shipper side-car, watch the spool.

Each server process starts ``osprey audit ship --follow`` as a child process
(``audit_shipper = "sidecar"``, the default; on Kubernetes ``"external"`` leaves
it to a container of its own on the spool volume). Several server processes on one
spool root each start one; the spool's lock lets one work at a time. The child
exits when the server does (SIGTERM after the writer sealed everything: a last pass
ships it; what a side-car killed before its handler was up left, the server ships
itself) or when the server dies (it notices its parent is gone, ships what is
left, including the dead stream's open segment, and exits). A child that dies is
started again.

Every ``WATCH_SECONDS`` the server re-measures its stream's spool (the bound of
``audit_spool_max_bytes`` counts what is not yet shipped) and reads the shipper's
``.shipper.json``: the database unreachable, or no shipper pass for
``STALE_SECONDS``, turns the ``osprey.audit`` health NOT_SERVING.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from registry.db import Database

from .audit_shipper import SpoolShipper, read_status
from .audit_spool import AuditLog
from .config import ServerConfig

log = logging.getLogger("osprey.audit")

WATCH_SECONDS = 0.25
STALE_SECONDS = 10.0
RESTART_SECONDS = 5.0
STOP_SECONDS = 30.0  # for the last pass after the server stopped


class ShipperSidecar:
    def __init__(self, config: ServerConfig, audit: AuditLog, database: Database,
                 on_reachable: Callable[[bool], None]) -> None:
        self.config = config
        self.database = database
        self.audit = audit
        self.on_reachable = on_reachable
        self.external = config.audit_shipper == "external"
        self.proc: subprocess.Popen[bytes] | None = None
        self._started_at = 0.0
        self._task: asyncio.Task[None] | None = None

    def command(self) -> list[str]:
        # the database by environment (never on a command line, where `ps` shows it)
        command = [sys.executable, "-m", "server", "audit", "ship", "--follow",
                   "--spool", str(self.audit.spool_root), "--home", str(self.config.home),
                   "--parent", str(os.getpid())]
        return command

    def _spawn(self) -> None:
        env = dict(os.environ)
        if self.config.database_url:
            env["OSPREY_DATABASE_URL"] = self.config.database_url
        self.proc = subprocess.Popen(self.command(), env=env, stdin=subprocess.DEVNULL,
                                     cwd=Path(__file__).resolve().parents[1])
        self._started_at = time.monotonic()
        log.info("audit shipper side-car started (pid %d)", self.proc.pid)

    def start(self) -> None:
        self._started_at = time.monotonic()  # the grace period for a first status
        if not self.external:
            self._spawn()
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        reachable = True
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            self.audit.rescan()
            proc = self.proc
            if proc is not None and proc.poll() is not None and (
                time.monotonic() - self._started_at >= RESTART_SECONDS
            ):
                log.error("audit shipper side-car exited with %s; starting it again",
                          proc.returncode)
                self._spawn()
            status = read_status(self.audit.spool_root)
            now_reachable = (self.audit.failure is None and status is not None
                             and status.reachable and status.age < STALE_SECONDS)
            if status is None and time.monotonic() - self._started_at < STALE_SECONDS:
                now_reachable = self.audit.failure is None  # the first pass is coming
            if now_reachable != reachable:
                reachable = now_reachable
                self.on_reachable(reachable)

    async def stop(self) -> None:
        """After the writer sealed everything: let the side-car ship it and exit, then
        ship what is left here (a side-car stopped before it could, e.g. still
        starting), unless another process's shipper holds the spool."""
        if self._task is not None:
            self._task.cancel()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, STOP_SECONDS)
            except subprocess.TimeoutExpired:
                log.error("audit shipper side-car did not exit in %.0fs; killed",
                          STOP_SECONDS)
                proc.kill()
                await asyncio.to_thread(proc.wait)
        if not self.external:
            shipper = SpoolShipper(self.audit.spool_root, self.database)
            try:
                shipped = await asyncio.wait_for(asyncio.to_thread(shipper.ship_if_free),
                                                 STOP_SECONDS)
            except TimeoutError:
                shipper.error = f"the database did not answer in {STOP_SECONDS:.0f}s"
                shipped = False
            if shipped is False:
                log.warning("audit records left in %s (%s): the next shipper ships them",
                            self.audit.spool_root, shipper.error)
