"""The audit spool writer in pure Python: the twin of ``native._spool``.

Same contract (see ``native._spool``): ``append`` queues a finished record and
returns its number; ``run`` (in a thread) writes groups to ``NNNNNNNN.open``
segments, fsyncs per group under ``strict``, seals segments by age or size, bumps
``wake_fd`` when records become durable or the spool fails; ``stop`` makes ``run``
write what is queued, seal, and return. Unlike the kernel it needs the GIL for
every step, so under load its wake-ups wait for the event loop's thread.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

ZERO_AHEAD = 2 * 1024 * 1024  # as the kernel: strict segments are zero-filled ahead


class SpoolWriter:
    def __init__(self, folder: str | os.PathLike[str], strict: bool, group_seconds: float,
                 seal_seconds: float, segment_bytes: int, wake_fd: int = -1) -> None:
        self._folder = Path(folder)
        self._strict = strict
        self._group = group_seconds
        self._seal_after = seal_seconds
        self._segment_limit = segment_bytes
        self._wake_fd = wake_fd
        self._cond = threading.Condition()
        self._pending: list[bytes] = []
        self._appended = 0
        self._durable = 0
        self._bytes_written = 0
        self._sealed = 0
        self._groups = 0
        self._failure: str | None = None
        self._stopping = False
        self._running = False
        self._fd = -1
        self._segment_no = 0
        self._segment_bytes = 0
        self._zeroed = 0
        self._segment_opened = 0.0

    def append(self, record: bytes) -> int:
        with self._cond:
            self._pending.append(record)
            self._appended += 1
            return self._appended

    def kick(self) -> None:
        with self._cond:
            self._cond.notify()

    @property
    def durable(self) -> int:
        return self._durable

    @property
    def appended(self) -> int:
        return self._appended

    @property
    def bytes_written(self) -> int:
        return self._bytes_written

    @property
    def groups(self) -> int:
        return self._groups

    @property
    def sealed(self) -> int:
        return self._sealed

    @property
    def failure(self) -> str | None:
        return self._failure

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()

    def run(self) -> None:
        if self._running:
            raise RuntimeError("the spool writer is already running")
        self._running = True
        last_flush = time.monotonic()
        try:
            while True:
                with self._cond:
                    now = time.monotonic()
                    if not self._stopping and (
                        not self._pending or (not self._strict and now < last_flush + self._group)
                    ):
                        deadline = (self._segment_opened if self._fd >= 0 else now) \
                            + self._seal_after
                        if not self._strict and self._pending:
                            deadline = min(deadline, last_flush + self._group)
                        if deadline > now:
                            self._cond.wait(deadline - now)
                    stopping = self._stopping
                    group, self._pending = self._pending, []
                    target = self._appended
                now = time.monotonic()
                if group:
                    last_flush = now
                    self._write_group(b"".join(group))
                if self._fd >= 0 and (stopping or now - self._segment_opened >= self._seal_after
                                      or self._segment_bytes >= self._segment_limit):
                    self._seal()
                with self._cond:
                    if self._failure is not None:
                        self._wake()
                    elif target > self._durable:
                        self._durable = target
                        self._wake()
                    if stopping and not self._pending:
                        return
        finally:
            self._running = False

    def _wake(self) -> None:
        if self._wake_fd >= 0:
            os.eventfd_write(self._wake_fd, 1)

    def _write_group(self, data: bytes) -> None:
        if self._failure is not None:
            return
        try:
            if self._fd < 0:
                self._segment_no += 1
                path = self._folder / f"{self._segment_no:08d}.open"
                flags = os.O_WRONLY | os.O_CREAT | (0 if self._strict else os.O_APPEND)
                self._fd = os.open(path, flags, 0o644)
                self._segment_bytes = 0
                self._zeroed = 0
                self._segment_opened = time.monotonic()
            if self._strict:
                needed = self._segment_bytes + len(data)
                if needed > self._zeroed:  # zero-fill ahead; the size changes: fsync
                    end = needed + ZERO_AHEAD
                    os.pwrite(self._fd, bytes(end - self._zeroed), self._zeroed)
                    self._zeroed = end
                    os.fsync(self._fd)
                view, offset = memoryview(data), self._segment_bytes
                while view:
                    written = os.pwrite(self._fd, view, offset)
                    view, offset = view[written:], offset + written
                os.fdatasync(self._fd)
            else:
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view):]
        except OSError as exc:
            self._failure = exc.strerror or str(exc)
            return
        self._segment_bytes += len(data)
        self._bytes_written += len(data)
        self._groups += 1

    def _seal(self) -> None:
        fd, self._fd = self._fd, -1
        try:
            try:
                if self._zeroed > self._segment_bytes:
                    os.ftruncate(fd, self._segment_bytes)
                os.fsync(fd)
            finally:
                os.close(fd)
            opened = self._folder / f"{self._segment_no:08d}.open"
            opened.rename(opened.with_suffix(".sealed"))
            folder = os.open(self._folder, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
        except OSError as exc:
            if self._failure is None:
                self._failure = exc.strerror or str(exc)
            return
        self._sealed += 1
