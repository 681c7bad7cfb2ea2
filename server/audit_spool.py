"""The audit log's write path: an in-memory buffer, a writer thread, spool segments.

The request path only builds an ``AuditEntry`` (references to the request and its
answer; no serialisation) and appends it (``AuditLog.record``). A writer thread
takes everything buffered as one group, serialises each entry into its
``audit_requests`` fields, chains it (``registry.audit_chain``), appends the lines
to the open spool segment and fsyncs once for the group. Under ``strict`` the
response waits for that fsync (group commit: one fsync per group, however many
requests it holds); under ``relaxed`` it does not, and what was buffered or written
but not yet fsynced (at most one group, about ``group_seconds``) can be lost in a
crash.

A stream is one process's sequence of records (id ``host:pid:boot``); its folder
``<spool>/<stream>/`` holds numbered segments. The open one is ``NNNNNN.open``;
every ``seal_seconds`` (or at ``segment_bytes``) it is renamed ``NNNNNN.sealed`` and
left for the shipper (``server.audit_shipper``), which loads it into SQL and
deletes it. Line 0 of a stream is its genesis.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from native import bytes_codec
from registry.audit_chain import GENESIS_PREVIOUS, canonical, key_id, link

from .errors import StoreUnavailable
from .ids import uuid7

log = logging.getLogger("osprey.audit")

OPEN, SEALED = ".open", ".sealed"
SEGMENT_BYTES = 8 * 1024 * 1024
SEAL_SECONDS = 0.5
POLICIES = ("strict", "relaxed", "off")
WHEN_FULL = ("refuse", "relax")


@dataclass
class AuditEntry:
    """One request's decision(s), as the request path hands them over (no copies)."""

    decision_id: str
    at_ns: int  # wall clock, ns since the epoch, when the request arrived
    request_id: str
    routing_key: str
    model: str
    version: int | None
    route: str
    rows: int
    status: str  # OK, or the gRPC status code name
    error: str
    latency_us: int
    caller: str
    principal: str
    trace_id: str
    inputs: dict[str, Any]  # name -> array, or (raw KServe BYTES buffer, rows)
    outputs: dict[str, np.ndarray]
    score_output: str | None = None
    decision_output: str | None = None
    threshold: float | None = None
    queue_us: int | None = None
    # Inputs the feature spec marks as personal data: stored as keyed hashes only.
    personal: frozenset[str] = frozenset()
    done: asyncio.Future[None] | None = field(default=None, repr=False)


def _column(value: Any) -> list[Any]:
    """A tensor as a JSON list (BYTES as text, invalid UTF-8 replaced)."""
    if isinstance(value, tuple):  # (raw BYTES buffer, element count)
        buffer, count = value
        value = bytes_codec.decode(bytes(buffer), count)
    array = np.asarray(value)
    if array.dtype == object:
        flat = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                for v in array.reshape(-1)]
        return np.array(flat, dtype=object).reshape(array.shape).tolist()
    if array.dtype.kind == "V" or array.dtype.name == "bfloat16":
        array = array.astype(np.float32)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        # JSON (and jsonb) have no NaN or infinity: those elements become strings
        spelled = array.astype(object)
        spelled[np.isnan(array)] = "NaN"
        spelled[np.isposinf(array)] = "Infinity"
        spelled[np.isneginf(array)] = "-Infinity"
        return spelled.tolist()
    return array.tolist()


def _hashed(value: Any, pii_key: bytes) -> list[Any]:
    """A personal-data tensor as keyed hashes (HMAC-SHA256 under the personal-data key,
    which the database never holds): equal values stay equal, nothing is in the clear."""
    if isinstance(value, tuple):
        buffer, count = value
        items = list(bytes_codec.decode(bytes(buffer), count))
        shape: tuple[int, ...] = (count,)
    else:
        array = np.asarray(value)
        shape = array.shape
        items = [v if isinstance(v, bytes) else (str(v).encode() if array.dtype == object
                 else np.asarray(v).tobytes()) for v in array.reshape(-1)]
    digests = ["hmac-sha256:" + hmac.new(pii_key, item, hashlib.sha256).hexdigest()[:32]
               for item in items]
    return np.array(digests, dtype=object).reshape(shape).tolist()


def serialise(
    entry: AuditEntry, stream_id: str, seq: int, pii_key: bytes = b""
) -> dict[str, Any]:
    """The ``audit_requests`` fields of an entry (what the chain signs)."""
    at = dt.datetime.fromtimestamp(entry.at_ns / 1e9, dt.UTC)
    return {
        "stream_id": stream_id,
        "seq": seq,
        "decision_id": entry.decision_id,
        "at": at.isoformat(timespec="microseconds"),
        "request_id": entry.request_id,
        "routing_key": entry.routing_key,
        "model": entry.model,
        "version": entry.version,
        "route": entry.route,
        "rows": entry.rows,
        "status": entry.status,
        "error": entry.error,
        "latency_us": entry.latency_us,
        "queue_us": entry.queue_us,
        "caller": entry.caller,
        "principal": entry.principal,
        "trace_id": entry.trace_id,
        "inputs": {
            k: _hashed(v, pii_key) if k in entry.personal else _column(v)
            for k, v in entry.inputs.items()
        },
        "outputs": {k: _column(v) for k, v in entry.outputs.items()},
    }


def decisions_of(fields: dict[str, Any], score_output: str | None,
                 decision_output: str | None, threshold: float | None) -> list[dict[str, Any]]:
    """The ``audit_decisions`` rows of a record: one per row, score and decision as the
    version declares them (none for a plain model or a failed request)."""
    scores = _per_row(fields["outputs"].get(score_output)) if score_output else None
    decided = _per_row(fields["outputs"].get(decision_output)) if decision_output else None
    rows = []
    for i in range(fields["rows"] if fields["status"] == "OK" else 0):
        score = scores[i] if scores is not None and i < len(scores) else None
        decision = decided[i] if decided is not None and i < len(decided) else None
        if decision is None and threshold is not None and isinstance(score, int | float):
            decision = score >= threshold
        rows.append({
            "decision_id": fields["decision_id"], "row_index": i, "at": fields["at"],
            "model": fields["model"], "version": fields["version"], "route": fields["route"],
            "status": fields["status"],
            "score": float(score) if isinstance(score, int | float) else None,
            "decision": None if decision is None else str(decision).lower()
            if isinstance(decision, bool) else str(decision),
        })
    return rows


def _per_row(column: Any) -> list[Any] | None:
    if column is None:
        return None
    return [row[0] if isinstance(row, list) and row else row for row in column]


class SpoolFull(StoreUnavailable):
    """The audit spool reached its bound while the database is away."""


class AuditLog:
    """Buffer, writer thread and spool of one server process (one stream)."""

    def __init__(
        self,
        spool_root: Path,
        key: bytes,
        policy: str = "strict",
        *,
        pii_key: bytes | None = None,
        max_spool_bytes: int = 1 << 30,
        when_full: str = "refuse",
        seal_seconds: float = SEAL_SECONDS,
    ) -> None:
        if policy not in ("strict", "relaxed"):
            raise ValueError(f"audit policy {policy!r}")
        self.policy = policy
        self.key = key
        self.pii_key = pii_key or key
        self.when_full = when_full
        self.max_spool_bytes = max_spool_bytes
        self.seal_seconds = seal_seconds
        host, pid = socket.gethostname(), os.getpid()
        self.stream_id = f"{host}:{pid}:{uuid7()}"
        self.spool_root = spool_root
        self.folder = spool_root / self.stream_id.replace(":", "_")
        self.folder.mkdir(parents=True, exist_ok=True)
        self._pending: deque[AuditEntry] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._seq = 0
        self._chain = GENESIS_PREVIOUS
        self._segment_no = 0
        self._segment: Any = None
        self._segment_bytes = 0
        self._segment_opened = 0.0
        self.spool_bytes = 0  # sealed and open, not yet shipped (the shipper lowers it)
        self.written = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="osprey-audit-writer",
                                        daemon=True)
        self._genesis = {
            "kind": "genesis", "stream_id": self.stream_id, "seq": 0, "host": host, "pid": pid,
            "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="microseconds"),
            "key_id": key_id(key),
        }

    # -- request path ---------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()

    async def record(self, entry: AuditEntry) -> None:
        """Hand ``entry`` over; under strict, return once it is on disk."""
        strict = self.policy == "strict"
        if self.spool_bytes >= self.max_spool_bytes:
            if self.when_full == "refuse":
                raise SpoolFull(
                    f"the audit spool is full ({self.spool_bytes} bytes, bound "
                    f"{self.max_spool_bytes}) while the database is away; no decision is "
                    "made that could not be audited"
                )
            strict = False
        if strict:
            assert self._loop is not None
            entry.done = self._loop.create_future()
        with self._cond:
            self._pending.append(entry)
            self._cond.notify()
        if entry.done is not None:
            await entry.done

    def record_nowait(self, entry: AuditEntry) -> None:
        """Hand ``entry`` over without waiting (shadow answers: never on a client's
        path); dropped when the spool is full."""
        if self.spool_bytes >= self.max_spool_bytes:
            return
        with self._cond:
            self._pending.append(entry)
            self._cond.notify()

    # -- writer thread --------------------------------------------------------------------

    def _run(self) -> None:
        self._write_lines([(json.dumps(self._genesis, separators=(",", ":")), None)])
        self._seq = 1
        self._chain = link(self.key, GENESIS_PREVIOUS, self._genesis)
        while True:
            with self._cond:
                if not self._pending and not self._stopping:
                    self._cond.wait(timeout=self.seal_seconds / 2)
                group = list(self._pending)
                self._pending.clear()
                stopping = self._stopping
            if group:
                self._write_group(group)
            if self._segment is not None and (
                stopping or time.monotonic() - self._segment_opened >= self.seal_seconds
            ):
                self._seal()
            if stopping and not self._pending:
                return

    def _write_group(self, group: list[AuditEntry]) -> None:
        lines = []
        for entry in group:
            try:
                fields = serialise(entry, self.stream_id, self._seq, self.pii_key)
            except Exception:
                log.exception("audit record of decision %s could not be serialised",
                              entry.decision_id)
                fields = serialise(
                    _unserialisable(entry), self.stream_id, self._seq, self.pii_key)
            body = canonical(fields)  # what the chain signs, reused as the spool line
            self._chain = hmac.new(self.key, self._chain + body, hashlib.sha256).digest()
            decided = decisions_of(fields, entry.score_output, entry.decision_output,
                                   entry.threshold)
            line = (body[:-1].decode() + ',"chain":"' + self._chain.hex() + '","decisions":'
                    + json.dumps(decided, separators=(",", ":")) + "}")
            lines.append((line, entry))
            self._seq += 1
        self._write_lines(lines)

    def _write_lines(self, lines: Sequence[tuple[str, AuditEntry | None]]) -> None:
        if self._segment is None:
            self._open_segment()
        data = "".join(text + "\n" for text, _ in lines).encode()
        self._segment.write(data)
        self._segment.flush()
        os.fsync(self._segment.fileno())
        self._segment_bytes += len(data)
        self.spool_bytes += len(data)
        self.written += sum(1 for _, e in lines if e is not None)
        loop = self._loop
        for _, entry in lines:
            if entry is not None and entry.done is not None and loop is not None:
                loop.call_soon_threadsafe(_resolve, entry.done)
        if self._segment_bytes >= SEGMENT_BYTES:
            self._seal()

    def _open_segment(self) -> None:
        self._segment_no += 1
        path = self.folder / f"{self._segment_no:08d}{OPEN}"
        self._segment = path.open("ab")
        self._segment_bytes = 0
        self._segment_opened = time.monotonic()

    def _seal(self) -> None:
        segment = self._segment
        if segment is None:
            return
        segment.close()
        path = Path(segment.name)
        path.rename(path.with_suffix(SEALED))
        _fsync_dir(self.folder)
        self._segment = None

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is buffered, seal the open segment, stop the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unserialisable(entry: AuditEntry) -> AuditEntry:
    """The entry without its tensors (they could not be encoded): still audited."""
    return AuditEntry(**{**entry.__dict__, "inputs": {}, "outputs": {},
                         "error": (entry.error + "; " if entry.error else "")
                         + "tensors not recorded: they could not be encoded", "done": None})
