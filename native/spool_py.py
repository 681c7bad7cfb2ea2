"""The audit spool writer in pure Python: the twin of ``native._spool``.

Same contract (see ``native._spool``): ``append`` queues a finished record and
returns its number; ``run`` (in a thread) writes groups to ``NNNNNNNN.open``
segments, fsyncs per group under ``strict``, seals segments by age or size, bumps
``wake_fd`` when records become durable or the spool fails; ``stop`` makes ``run``
write what is queued, seal, and return. As in the kernel, a rotator thread prepares
the next segment and seals the full ones, off the writer's path. Unlike the kernel
it needs the GIL for every step, so under load its wake-ups wait for the event
loop's thread.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

ZERO_MIN = 256 * 1024  # as the kernel: strict segments are zero-filled ahead by the
ZERO_AHEAD = 1024 * 1024  # rotator (twice the last segment), extended by the writer


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
        # the rotator's side (under _cond)
        self._rot_running = False
        self._rot_stopping = False
        self._created = 0
        self._next: tuple[int, int, int] | None = None  # (fd, number, zeroed)
        self._handed: tuple[int, int, int, int] | None = None  # (fd, number, size, zeroed)
        self._last_size = 0

    def append(self, record: bytes) -> int:
        with self._cond:
            self._pending.append(record)
            self._appended += 1
            return self._appended

    def kick(self) -> None:
        with self._cond:  # all: the rotator waits on the same condition
            self._cond.notify_all()

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
            self._cond.notify_all()

    def run(self) -> None:
        if self._running:
            raise RuntimeError("the spool writer is already running")
        self._running = True
        self._rot_running, self._rot_stopping = True, False
        rotator = threading.Thread(target=self._rotate, name="osprey-audit-rotator",
                                   daemon=True)
        try:
            rotator.start()
            self._loop()
            rotator.join()
        finally:
            self._running = False

    def _loop(self) -> None:
        last_flush = time.monotonic()
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
            with self._cond:
                if self._failure is not None:
                    self._wake()
                elif target > self._durable:
                    self._durable = target
                    self._wake()
                if self._fd >= 0 and (stopping or now - self._segment_opened >= self._seal_after
                                      or self._segment_bytes >= self._segment_limit):
                    self._hand_over()
                if stopping and not self._pending:
                    self._rot_stopping = True
                    self._cond.notify_all()
                    return

    def _hand_over(self) -> None:
        """The open segment to the rotator, to seal (``_cond`` held)."""
        while self._handed is not None and self._rot_running:
            self._cond.wait()
        if not self._rot_running:
            os.close(self._fd)
        else:
            self._handed = (self._fd, self._segment_no, self._segment_bytes, self._zeroed)
            self._last_size = self._segment_bytes
            self._cond.notify_all()
        self._fd = -1

    def _take_segment(self) -> None:
        with self._cond:
            while self._next is None and self._failure is None and self._rot_running:
                self._cond.notify_all()
                self._cond.wait()
            if self._next is not None:
                (self._fd, self._segment_no, self._zeroed), self._next = self._next, None
                self._cond.notify_all()

    def _rotate(self) -> None:
        with self._cond:
            while True:
                if self._handed is not None:
                    fd, number, size, zeroed = self._handed
                    self._cond.release()
                    try:
                        error = self._seal(fd, number, size, zeroed)
                    finally:
                        self._cond.acquire()
                    self._handed = None
                    if error is not None:
                        self._fail(error)
                    else:
                        self._sealed += 1
                    self._cond.notify_all()
                elif self._next is None and not self._rot_stopping and self._failure is None:
                    self._created += 1
                    number = self._created
                    zeros = max(ZERO_MIN, 2 * self._last_size) if self._strict else 0
                    self._cond.release()
                    try:
                        created = self._create(number, zeros)
                    finally:
                        self._cond.acquire()
                    if isinstance(created, str):
                        self._fail(created)
                    else:
                        self._next = (created, number, zeros)
                    self._cond.notify_all()
                elif self._rot_stopping:
                    break
                else:
                    self._cond.wait()
            unused, self._next = self._next, None
            self._rot_running = False
            self._cond.notify_all()
        if unused is not None:  # prepared, never written: not a segment
            os.close(unused[0])
            (self._folder / f"{unused[1]:08d}.open").unlink(missing_ok=True)

    def _fail(self, error: str) -> None:
        if self._failure is None:
            self._failure = error
        self._wake()

    def _create(self, number: int, zeros: int) -> int | str:
        """Segment ``number`` zero-filled for ``zeros`` bytes (fsynced), or the error."""
        flags = os.O_WRONLY | os.O_CREAT | (0 if self._strict else os.O_APPEND)
        try:
            fd = os.open(self._folder / f"{number:08d}.open", flags, 0o644)
        except OSError as exc:
            return exc.strerror or str(exc)
        try:
            if zeros:
                os.pwrite(fd, bytes(zeros), 0)
                os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            return exc.strerror or str(exc)
        return fd

    def _wake(self) -> None:
        if self._wake_fd >= 0:
            os.eventfd_write(self._wake_fd, 1)

    def _write_group(self, data: bytes) -> None:
        if self._failure is not None:
            return
        try:
            if self._fd < 0:
                self._take_segment()
                if self._fd < 0:
                    return  # the rotator failed: _failure says why
                self._segment_bytes = 0
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

    def _seal(self, fd: int, number: int, size: int, zeroed: int) -> str | None:
        """Cut the zero tail, fsync, rename to ``.sealed``, fsync the folder; the error
        or None."""
        try:
            try:
                if zeroed > size:
                    os.ftruncate(fd, size)
                os.fsync(fd)
            finally:
                os.close(fd)
            opened = self._folder / f"{number:08d}.open"
            opened.rename(opened.with_suffix(".sealed"))
            folder = os.open(self._folder, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
        except OSError as exc:
            return exc.strerror or str(exc)
        return None
