"""The audit log's write path: record encoding, the chain, the native spool writer.

The request path only queues what its record is built from (``AuditLog.submit``:
the request, its answer and the time it was ready). At the end of the event-loop
iteration (strict: someone waits) or within ``BATCH_SECONDS`` (relaxed: a bigger
batch), ``AuditLog._flush`` takes every queued record in order, builds its ``AuditEntry``,
encodes it (``native.audit_record``: the canonical JSON the chain signs,
``registry.audit_chain``), chains it (HMAC-SHA256) and copies the line into the
spool writer's buffer (``native.spool``): one tight loop over a batch of records
instead of the same work spread over each request. The writer thread never
takes the GIL: it writes each group to the open segment and, under ``strict``,
fsyncs it before the records count as durable; an eventfd tells the event loop,
which then releases the waiting responses (group commit: one fsync per group,
however many requests it holds). Under ``relaxed`` nothing waits: records are
encoded within ``BATCH_SECONDS`` and written within ``group_seconds`` more (a
process crash loses at most the two, 20 ms) and fsynced when the segment is sealed
(a power loss loses at most ``seal_seconds`` more).

A stream is one process's sequence of records (id ``host:pid:boot``); its folder
``<spool>/<stream>/`` holds numbered segments. The open one is ``NNNNNNNN.open``;
every ``seal_seconds`` (or at ``segment_bytes``) it is fsynced, renamed
``NNNNNNNN.sealed`` and left for the shipper side-car (``server.audit_shipper``),
which loads it into SQL and deletes it. Line 0 of a stream is its genesis.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import logging
import math
import os
import socket
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from native import bytes_codec
from native.audit_record import encode, f32_repr, frame, iso_time
from native.spool import SpoolWriter
from registry.audit_chain import GENESIS_PREVIOUS, Hmac, key_id, link

from .errors import StoreUnavailable
from .ids import uuid7

log = logging.getLogger("osprey.audit")

OPEN, SEALED = ".open", ".sealed"
SEGMENT_BYTES = 8 * 1024 * 1024
# Sealed often so that each shipping pass is short: at 3k decisions/s a 0.5 s segment
# was a ~45 ms burst of the shipper's CPU on the server's core, and the requests behind
# it waited (open loop at 1.8k/s, p99 7-34 ms -> 8 ms; saturation p99 31 -> 19 ms).
SEAL_SECONDS = 0.1
# relaxed: how long records may wait in memory, first as queued entries (encoded in
# batches every BATCH_SECONDS), then as encoded lines (written every GROUP_SECONDS):
# together the loss window of a process crash, 20 ms (a power loss also loses the
# open segment's page cache, up to SEAL_SECONDS)
BATCH_SECONDS = 0.01
GROUP_SECONDS = 0.01
POLICIES = ("strict", "relaxed", "off")
WHEN_FULL = ("refuse", "relax")


@dataclass(slots=True)
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
    if array.dtype == np.float32:
        # each float32 as its shortest decimal (``native.audit_record.f32_repr``)
        return np.array([_float32(v) for v in array.reshape(-1).tolist()],
                        dtype=object).reshape(array.shape).tolist()
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        # JSON (and jsonb) have no NaN or infinity: those elements become strings
        spelled = array.astype(object)
        spelled[np.isnan(array)] = "NaN"
        spelled[np.isposinf(array)] = "Infinity"
        spelled[np.isneginf(array)] = "-Infinity"
        return spelled.tolist()
    return array.tolist()


def _float32(value: float) -> float | str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    text = f32_repr(value)
    return value if text is None else float(text)


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
    return {
        "stream_id": stream_id,
        "seq": seq,
        "decision_id": entry.decision_id,
        "at": iso_time(entry.at_ns),
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


def decided_rows(rows: int, status: str, outputs: dict[str, Any],
                 score_output: str | None, decision_output: str | None,
                 threshold: float | None) -> list[tuple[int, float | None, str | None]]:
    """(row index, score, decision) of each decided row of a record: one per row, score
    and decision as the version declares them (none for a plain model; no rows for a
    failed request). What the shipper turns into ``audit_decisions`` rows."""
    if status != "OK":
        return []
    scores = _per_row(outputs.get(score_output)) if score_output else None
    decided = _per_row(outputs.get(decision_output)) if decision_output else None
    if scores is None and decided is None:
        return [(i, None, None) for i in range(rows)]
    out: list[tuple[int, float | None, str | None]] = []
    for i in range(rows):
        score = scores[i] if scores is not None and i < len(scores) else None
        decision = decided[i] if decided is not None and i < len(decided) else None
        if decision is None and threshold is not None and isinstance(score, int | float):
            decision = score >= threshold
        out.append((
            i,
            float(score) if isinstance(score, int | float) else None,
            None if decision is None else str(decision).lower()
            if isinstance(decision, bool) else str(decision),
        ))
    return out


def _per_row(column: Any) -> list[Any] | None:
    if column is None:
        return None
    return [row[0] if isinstance(row, list) and row else row for row in column]


class SpoolFull(StoreUnavailable):
    """The audit spool reached its bound while the database is away."""


class SpoolUnwritable(StoreUnavailable):
    """The spool disk failed a write or fsync: nothing more can be audited."""


class AuditLog:
    """Record encoding, chain and spool writer of one server process (one stream)."""

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
        group_seconds: float = GROUP_SECONDS,
    ) -> None:
        if policy not in ("strict", "relaxed"):
            raise ValueError(f"audit policy {policy!r}")
        self.policy = policy
        self.key = key
        self._hmac = Hmac(key)
        self.pii_key = pii_key or key
        self.when_full = when_full
        self.max_spool_bytes = max_spool_bytes
        host, pid = socket.gethostname(), os.getpid()
        self.stream_id = f"{host}:{pid}:{uuid7()}"
        self.spool_root = spool_root
        self.folder = spool_root / self.stream_id.replace(":", "_")
        self.folder.mkdir(parents=True, exist_ok=True)
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._writer = SpoolWriter(self.folder, policy == "strict", group_seconds,
                                   seal_seconds, SEGMENT_BYTES, self._wake_fd)
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._pending: list[tuple[Callable[..., AuditEntry], tuple[Any, ...],
                                  asyncio.Future[None] | None]] = []
        self._flush_soon = False  # a flush is scheduled for the end of this iteration
        self._flush_later = False  # ... or within BATCH_SECONDS
        self._lock = threading.Lock()  # seq, chain and append order stay one
        self._seq = 0
        self._chain = GENESIS_PREVIOUS
        self._scanned_bytes = 0
        self._written_at_scan = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._writer.run, name="osprey-audit-writer",
                                        daemon=True)
        self._genesis = {
            "kind": "genesis", "stream_id": self.stream_id, "seq": 0, "host": host, "pid": pid,
            "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="microseconds"),
            "key_id": key_id(key),
        }

    @property
    def written(self) -> int:
        """Records (genesis included) the writer has put in the spool."""
        return int(self._writer.durable)

    @property
    def appended(self) -> int:
        """Records (genesis included) handed to the writer."""
        return int(self._writer.appended)

    @property
    def groups(self) -> int:
        """Groups the writer wrote (under strict, one fdatasync each)."""
        return int(self._writer.groups)

    @property
    def failure(self) -> str | None:
        """Why the spool cannot be written, or None."""
        return self._writer.failure

    @property
    def spool_bytes(self) -> int:
        """This stream's bytes not yet shipped: the last ``rescan`` plus what the writer
        wrote since (the shipper, another process, deletes shipped segments)."""
        return int(self._scanned_bytes + self._writer.bytes_written - self._written_at_scan)

    def rescan(self) -> int:
        """Measure this stream's spool folder again (segments the shipper deleted)."""
        written = self._writer.bytes_written
        total = 0
        try:
            with os.scandir(self.folder) as entries:
                for entry in entries:
                    with contextlib.suppress(OSError):
                        total += entry.stat().st_size
        except OSError:
            pass
        self._scanned_bytes, self._written_at_scan = total, written
        return total

    # -- request path ---------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._wake_fd, self._on_durable)
        with self._lock:
            self._writer.append(json.dumps(self._genesis, separators=(",", ":")).encode()
                                + b"\n")
            self._seq = 1
            self._chain = link(self.key, GENESIS_PREVIOUS, self._genesis)
        self._thread.start()

    def submit(self, build: Callable[..., AuditEntry], *args: Any
               ) -> asyncio.Future[None] | None:
        """Queue the record ``build(*args)`` returns; under strict, the future that
        resolves once it is on disk (None under relaxed: nothing to wait for). Raises
        SpoolFull or SpoolUnwritable when no decision may be made.

        The entry is built, encoded, chained and handed to the writer later, with
        every other record queued by then (``_schedule_flush``). ``args`` must not
        change until then (the request and its answer: they do not)."""
        strict = self.policy == "strict"
        failure = self._writer.failure
        if failure is not None:
            raise SpoolUnwritable(
                f"the audit spool cannot be written ({failure}); no decision is made that "
                "could not be audited"
            )
        if self.spool_bytes >= self.max_spool_bytes:
            if self.when_full == "refuse":
                raise SpoolFull(
                    f"the audit spool is full ({self.spool_bytes} bytes, bound "
                    f"{self.max_spool_bytes}) while the database is away; no decision is "
                    "made that could not be audited"
                )
            strict = False
        loop = self._loop
        assert loop is not None, "AuditLog.start() first"
        done = loop.create_future() if strict else None
        self._pending.append((build, args, done))
        self._schedule_flush(loop, soon=strict)
        return done

    async def record(self, entry: AuditEntry) -> None:
        """Hand ``entry`` over; under strict, return once it is on disk."""
        done = self.submit(_built, entry)
        if done is not None:
            await done

    def record_nowait(self, entry: AuditEntry) -> None:
        """Hand ``entry`` over without waiting (shadow answers: never on a client's
        path); dropped when the spool is full or failed."""
        if self.spool_bytes >= self.max_spool_bytes or self._writer.failure is not None:
            return
        loop = self._loop
        assert loop is not None, "AuditLog.start() first"
        self._pending.append((_built, (entry,), None))
        self._schedule_flush(loop, soon=False)

    def _schedule_flush(self, loop: asyncio.AbstractEventLoop, soon: bool) -> None:
        """A record waited on is flushed at the end of this loop iteration (with the
        others of the iteration: one group); one nobody waits for within
        BATCH_SECONDS, in a bigger batch. One tight loop over a batch costs a fraction
        of the same work interleaved with each request's gRPC and protobuf code
        (measured, event-loop CPU per 1-row record: 70 µs one by one, 25 µs in
        batches of ~4, 15 µs in batches of ~30; ~12 µs in isolation)."""
        if self._flush_soon:
            return
        if soon:
            self._flush_soon = True
            loop.call_soon(self._flush)
        elif not self._flush_later:
            self._flush_later = True
            loop.call_later(BATCH_SECONDS, self._flush)

    def _flush(self) -> None:
        """Build, encode, chain and hand to the writer every queued record, in order;
        then, if any of them is waited on, kick the writer (one group)."""
        with self._lock:  # seq, chain and append order stay one (stop() flushes too)
            self._flush_soon = self._flush_later = False  # a timer left is harmless
            pending, self._pending = self._pending, []
            if not pending:
                return
            kick = False
            for build, args, done in pending:
                try:
                    number = self._append(build(*args))
                except Exception as exc:  # a defect (or no memory), never the caller's
                    log.exception("an audit record could not be built or queued; its "
                                  "answer is refused under strict, lost under relaxed")
                    if done is not None:
                        self._refuse(done, RuntimeError(
                            f"the decision could not be audited ({type(exc).__name__})"))
                    continue
                if done is not None:
                    self._waiting.append((number, done))
                    kick = True
            if kick:
                self._writer.kick()

    def _refuse(self, done: asyncio.Future[None], error: Exception) -> None:
        """Fail a waiting answer (INTERNAL: the traceback is logged); from any thread
        (``stop`` flushes from the one it runs in)."""
        def fail() -> None:
            if not done.done():
                done.set_exception(error)

        assert self._loop is not None
        self._loop.call_soon_threadsafe(fail)

    def _append(self, entry: AuditEntry) -> int:
        """Encode, chain and queue one record (under ``_lock``); its writer number. The
        chain moves on only once the writer holds the record: one that could not be
        queued leaves no gap in the stream."""
        try:  # what the chain signs, reused as the spool line
            body = encode(entry, self.stream_id, self._seq, self._column_json)
        except Exception:
            log.exception("audit record of decision %s could not be serialised",
                          entry.decision_id)
            body = encode(_unserialisable(entry), self.stream_id, self._seq,
                          self._column_json)
        chain = self._hmac.digest(self._chain, body)
        number = int(self._writer.append(frame(body, chain, _declared_json(entry))))
        self._chain = chain
        self._seq += 1
        return number

    def _column_json(self, value: Any, personal: bool) -> bytes:
        """A tensor column the native encoder leaves to Python (BYTES, personal data)."""
        column = _hashed(value, self.pii_key) if personal else _column(value)
        return json.dumps(column, ensure_ascii=False, allow_nan=False,
                          separators=(",", ":")).encode()

    def _on_durable(self) -> None:
        """On the event loop, when the writer says records became durable (or failed)."""
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._wake_fd)
        durable = self._writer.durable
        waiting = self._waiting
        while waiting and waiting[0][0] <= durable:
            done = waiting.popleft()[1]
            if not done.done():
                done.set_result(None)
        failure = self._writer.failure
        if failure is not None and waiting:
            error = SpoolUnwritable(f"the audit spool cannot be written ({failure})")
            log.error("audit spool failed (%s): %d response(s) refused", failure, len(waiting))
            while waiting:
                done = waiting.popleft()[1]
                if not done.done():
                    done.set_exception(error)

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued, seal the open segment, stop the writer thread (any
        thread); the event loop then releases what was waiting."""
        self._flush()  # what the loop queued but has not flushed yet
        self._writer.stop()
        if self._thread.is_alive():
            self._thread.join(timeout)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._close_wakeups)

    def _close_wakeups(self) -> None:
        self._on_durable()
        assert self._loop is not None
        self._loop.remove_reader(self._wake_fd)


_DECLARED: dict[tuple[str | None, str | None, float | None], bytes] = {}


def _declared_json(entry: AuditEntry) -> bytes:
    """What the shipper needs to derive the decided rows (not part of the chain); a
    handful of distinct values per server, encoded once each."""
    key = (entry.score_output, entry.decision_output, entry.threshold)
    text = _DECLARED.get(key)
    if text is None:
        text = b"null" if key == (None, None, None) else json.dumps(
            list(key), separators=(",", ":")).encode()
        if len(_DECLARED) < 1024:
            _DECLARED[key] = text
    return text


def _built(entry: AuditEntry) -> AuditEntry:
    return entry


def _unserialisable(entry: AuditEntry) -> AuditEntry:
    """The entry without its tensors (they could not be encoded): still audited."""
    return dataclasses.replace(entry, inputs={}, outputs={}, error=(
        entry.error + "; " if entry.error else "") + "tensors not recorded: they could not "
        "be encoded")
