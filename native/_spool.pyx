# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Cython kernel of the audit spool writer; ``native.spool_py`` is its twin.

The request path (holding the GIL) copies a finished record into the pending
buffer under a pthread mutex (``append``) and, under ``strict``, wakes the writer
once per event-loop iteration (``kick``). The writer thread (``run``) never takes
the GIL: it swaps the pending buffer for its own, writes it to the open segment,
fsyncs (``strict``: every group, before the records count as durable, with
``fdatasync`` into a segment zero-filled ahead of the data so that no group changes
its size; ``relaxed``: only when a segment is sealed, which also cuts the zero
tail), publishes how many records are durable and bumps
an eventfd, which the event loop watches to release the responses waiting for
them. Segments are ``NNNNNNNN.open`` files sealed (fsynced, renamed to
``NNNNNNNN.sealed``, folder fsynced) once they are ``seal_seconds`` old or
``segment_bytes`` large. A failed write or fsync is sticky: ``failure`` names it
and nothing more counts as durable (a strict server then refuses requests).

Rotating segments is off the writer's path: a second thread, the rotator, creates
the next segment ahead of need (under strict zero-filled for about twice what the
last segment held, and fsynced, since its size changes) and seals each segment the
writer hands over, in order. The writer only takes the prepared segment and hands
the full one over, so a group never waits behind the journal commits of a
rotation (measured with 1-row records every 0.5 ms and segments sealed every
0.1 s: one group in 60 to 90 waited over 1 ms when the writer rotated by itself).

A Python thread runs ``run`` so that ``threading`` can join it; ``run`` starts the
rotator's thread, releases the GIL and holds it again only to join it and return.
"""

import threading

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.errno cimport EINTR, errno
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy, strerror
from posix.fcntl cimport O_CREAT, O_RDONLY, O_WRONLY
from posix.fcntl cimport open as c_open
from posix.time cimport timespec
from posix.unistd cimport close, fsync, ftruncate, pwrite, unlink, write


cdef extern from "<unistd.h>" nogil:
    int fdatasync(int fd)


cdef extern from "<time.h>" nogil:
    int clock_gettime(int clock_id, timespec* tp)
    int CLOCK_MONOTONIC


cdef extern from "<stdio.h>" nogil:
    int rename(const char* old, const char* new)
    int snprintf(char* out, size_t size, const char* fmt, ...)


cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef struct pthread_cond_t:
        pass
    ctypedef struct pthread_condattr_t:
        pass
    int pthread_mutex_init(pthread_mutex_t* m, void* attr)
    int pthread_mutex_destroy(pthread_mutex_t* m)
    int pthread_mutex_lock(pthread_mutex_t* m)
    int pthread_mutex_unlock(pthread_mutex_t* m)
    int pthread_condattr_init(pthread_condattr_t* a)
    int pthread_condattr_setclock(pthread_condattr_t* a, int clock_id)
    int pthread_condattr_destroy(pthread_condattr_t* a)
    int pthread_cond_init(pthread_cond_t* c, pthread_condattr_t* a)
    int pthread_cond_destroy(pthread_cond_t* c)
    int pthread_cond_signal(pthread_cond_t* c)
    int pthread_cond_wait(pthread_cond_t* c, pthread_mutex_t* m)
    int pthread_cond_timedwait(pthread_cond_t* c, pthread_mutex_t* m, const timespec* t)


DEF PATH_MAX = 4096

cdef int64_t _now_ns() noexcept nogil:
    cdef timespec t
    clock_gettime(CLOCK_MONOTONIC, &t)
    return <int64_t>t.tv_sec * 1000000000 + t.tv_nsec


cdef int _pwrite_all(int fd, const char* data, size_t size, int64_t offset) noexcept nogil:
    """0, or the errno of a failed pwrite (short writes are continued)."""
    cdef ssize_t n
    while size > 0:
        n = pwrite(fd, data, size, offset)
        if n < 0:
            if errno == EINTR:
                continue
            return errno
        data += n
        size -= <size_t>n
        offset += n
    return 0


# strict segments are zero-filled ahead of the data (then fdatasync of a group only
# flushes data blocks: no size change, no journal commit; half the CPU and latency of an
# fsync after an append, measured on ext4): the rotator fills a new segment for twice
# what the last one held, at least ZERO_MIN; a segment that outgrows it is extended by
# the writer, ZERO_AHEAD past the data (rare: the rate doubled within seal_seconds)
DEF ZERO_MIN = 256 * 1024
DEF ZERO_AHEAD = 1024 * 1024
cdef char _ZEROS[65536]


cdef int _fsync_path(const char* path) noexcept nogil:
    cdef int fd = c_open(path, O_RDONLY)
    if fd < 0:
        return errno
    cdef int err = 0
    if fsync(fd) != 0:
        err = errno
    close(fd)
    return err


cdef class SpoolWriter:
    cdef pthread_mutex_t _mutex
    cdef pthread_cond_t _cond
    cdef char* _pending
    cdef size_t _pending_len
    cdef size_t _pending_cap
    cdef char* _writing
    cdef size_t _writing_cap
    cdef int64_t _appended      # records appended (the last one's number)
    cdef int64_t _durable       # records on disk (strict: fsynced)
    cdef int64_t _bytes_written
    cdef int64_t _sealed
    cdef int64_t _groups
    cdef int _failure           # errno of the first failed write/fsync/rename, 0 if none
    cdef bint _stopping
    cdef bint _running
    cdef bint _strict
    cdef int64_t _group_ns
    cdef int64_t _seal_ns
    cdef int64_t _segment_limit
    cdef int _wake_fd
    cdef int _fd                # the open segment, -1 if none
    cdef int64_t _segment_no
    cdef int64_t _segment_bytes
    cdef int64_t _zeroed        # strict: bytes of the open segment already zero-filled
    cdef int64_t _segment_opened
    # the rotator's side (under _mutex): it waits on _rot_cond, the writer on _cond
    cdef pthread_cond_t _rot_cond
    cdef bint _rot_running      # a rotator serves (set by run, cleared by the rotator)
    cdef bint _rot_stopping     # the writer is done: seal what it handed over, then stop
    cdef int64_t _created       # segments created (the last one's number)
    cdef int _next_fd           # the prepared segment, -1 if none
    cdef int64_t _next_no
    cdef int64_t _next_zeroed
    cdef int _seal_fd           # the segment handed over for sealing, -1 if none
    cdef int64_t _seal_no
    cdef int64_t _seal_bytes
    cdef int64_t _seal_zeroed
    cdef int64_t _last_size     # bytes of the last segment handed over
    cdef bytes _folder
    cdef const char* _folder_c
    cdef char _open_path[PATH_MAX]     # the rotator's path buffers
    cdef char _sealed_path[PATH_MAX]

    def __cinit__(self, folder, bint strict, double group_seconds, double seal_seconds,
                  long long segment_bytes, int wake_fd=-1):
        cdef pthread_condattr_t attr
        self._folder = str(folder).encode()
        self._folder_c = self._folder
        if len(self._folder) > PATH_MAX - 32:
            raise ValueError(f"spool folder path too long: {folder}")
        pthread_mutex_init(&self._mutex, NULL)
        pthread_condattr_init(&attr)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        pthread_cond_init(&self._cond, &attr)
        pthread_cond_init(&self._rot_cond, &attr)
        pthread_condattr_destroy(&attr)
        self._strict = strict
        self._group_ns = <int64_t>(group_seconds * 1e9)
        self._seal_ns = <int64_t>(seal_seconds * 1e9)
        self._segment_limit = segment_bytes
        self._wake_fd = wake_fd
        self._fd = -1
        self._next_fd = -1
        self._seal_fd = -1

    def __dealloc__(self):
        if self._fd >= 0:
            close(self._fd)
        if self._next_fd >= 0:
            close(self._next_fd)
        if self._seal_fd >= 0:
            close(self._seal_fd)
        free(self._pending)
        free(self._writing)
        pthread_cond_destroy(&self._rot_cond)
        pthread_cond_destroy(&self._cond)
        pthread_mutex_destroy(&self._mutex)

    # -- request path (GIL held) ------------------------------------------------------

    def append(self, bytes record):
        """Queue one record (a complete line); returns its number (1, 2, ...)."""
        cdef Py_ssize_t size = PyBytes_GET_SIZE(record)
        cdef const char* data = PyBytes_AS_STRING(record)
        cdef size_t cap
        cdef char* grown
        cdef int64_t number
        pthread_mutex_lock(&self._mutex)
        if self._pending_len + <size_t>size > self._pending_cap:
            cap = self._pending_cap * 2 if self._pending_cap else 65536
            while cap < self._pending_len + <size_t>size:
                cap *= 2
            grown = <char*>realloc(self._pending, cap)
            if grown == NULL:
                pthread_mutex_unlock(&self._mutex)
                raise MemoryError("audit spool buffer")
            self._pending = grown
            self._pending_cap = cap
        memcpy(self._pending + self._pending_len, data, size)
        self._pending_len += size
        self._appended += 1
        number = self._appended
        pthread_mutex_unlock(&self._mutex)
        return number

    def kick(self):
        """Write what is queued now (strict: once per event-loop iteration, so that the
        records of one iteration share one group and one fdatasync)."""
        pthread_mutex_lock(&self._mutex)
        pthread_cond_signal(&self._cond)
        pthread_mutex_unlock(&self._mutex)

    @property
    def durable(self):
        """How many appended records are on disk (strict: fsynced; relaxed: written)."""
        return self._durable

    @property
    def appended(self):
        return self._appended

    @property
    def bytes_written(self):
        return self._bytes_written

    @property
    def groups(self):
        """Groups written so far (one write, and under strict one fdatasync, each)."""
        return self._groups

    @property
    def sealed(self):
        """Segments sealed so far."""
        return self._sealed

    @property
    def failure(self):
        """Why the spool cannot be written (the first error), or None."""
        if self._failure == 0:
            return None
        return strerror(self._failure).decode("utf-8", "replace")

    def stop(self):
        """Ask ``run`` to write what is queued, seal the open segment and return."""
        pthread_mutex_lock(&self._mutex)
        self._stopping = True
        pthread_cond_signal(&self._cond)
        pthread_mutex_unlock(&self._mutex)

    # -- writer thread (no GIL) -------------------------------------------------------

    def run(self):
        """The writer loop; returns after ``stop`` once everything queued is written
        and every segment sealed (the rotator's thread, started here, is joined)."""
        if self._running:
            raise RuntimeError("the spool writer is already running")
        self._running = True
        self._rot_running = True
        self._rot_stopping = False
        rotator = threading.Thread(target=self._run_rotator, name="osprey-audit-rotator",
                                   daemon=True)
        try:
            rotator.start()
        except BaseException:
            self._rot_running = self._running = False
            raise
        with nogil:
            self._loop()
        rotator.join()
        self._running = False

    def _run_rotator(self):
        with nogil:
            self._rotate()

    cdef void _loop(self) noexcept nogil:
        cdef int64_t now, deadline, target, last_flush = _now_ns()
        cdef size_t size
        cdef char* swap
        cdef bint stopping
        cdef timespec until
        pthread_mutex_lock(&self._mutex)
        while True:
            now = _now_ns()
            if not self._stopping and (
                self._pending_len == 0 or (not self._strict and now < last_flush + self._group_ns)
            ):
                deadline = now + self._seal_ns
                if self._fd >= 0:
                    deadline = self._segment_opened + self._seal_ns
                if not self._strict and self._pending_len > 0:
                    deadline = min(deadline, last_flush + self._group_ns)
                if deadline > now:
                    until.tv_sec = deadline // 1000000000
                    until.tv_nsec = deadline % 1000000000
                    pthread_cond_timedwait(&self._cond, &self._mutex, &until)
            stopping = self._stopping
            swap = self._writing
            self._writing = self._pending
            self._pending = swap
            size = self._pending_len
            self._pending_len = 0
            self._writing_cap, self._pending_cap = self._pending_cap, self._writing_cap
            target = self._appended
            pthread_mutex_unlock(&self._mutex)

            now = _now_ns()
            if size > 0:
                last_flush = now
                self._write_group(size)

            pthread_mutex_lock(&self._mutex)
            if self._failure != 0:
                self._wake()  # the waiting responses learn that their records failed
            elif target > self._durable:
                self._durable = target
                self._wake()
            if self._fd >= 0 and (stopping or now - self._segment_opened >= self._seal_ns
                                  or self._segment_bytes >= self._segment_limit):
                self._hand_over()
            if stopping and self._pending_len == 0:
                break
        self._rot_stopping = True
        pthread_cond_signal(&self._rot_cond)
        pthread_mutex_unlock(&self._mutex)

    cdef void _hand_over(self) noexcept nogil:
        """Give the open segment to the rotator to seal (``_mutex`` held); waits while
        it still seals the one before (segments are sealed in order)."""
        while self._seal_fd >= 0 and self._rot_running:
            pthread_cond_wait(&self._cond, &self._mutex)
        if not self._rot_running:  # cannot happen while run() runs; never leak the fd
            close(self._fd)
            self._fd = -1
            return
        self._seal_fd, self._seal_no = self._fd, self._segment_no
        self._seal_bytes, self._seal_zeroed = self._segment_bytes, self._zeroed
        self._last_size = self._segment_bytes
        self._fd = -1
        pthread_cond_signal(&self._rot_cond)

    cdef void _take_segment(self) noexcept nogil:
        """Make the rotator's prepared segment the open one (waits for it, which it
        prepared long before unless the disk is very slow); on failure _fd stays -1."""
        pthread_mutex_lock(&self._mutex)
        while self._next_fd < 0 and self._failure == 0 and self._rot_running:
            pthread_cond_signal(&self._rot_cond)
            pthread_cond_wait(&self._cond, &self._mutex)
        if self._next_fd >= 0:
            self._fd, self._segment_no, self._zeroed = (
                self._next_fd, self._next_no, self._next_zeroed)
            self._next_fd = -1
            pthread_cond_signal(&self._rot_cond)  # prepare the one after
        pthread_mutex_unlock(&self._mutex)

    # -- rotator thread (no GIL) ------------------------------------------------------

    cdef void _rotate(self) noexcept nogil:
        """Seal what the writer hands over, keep a next segment prepared; at the end
        seal the last one and remove the prepared segment nobody used."""
        cdef int fd, err
        cdef int64_t number, want, zeroed
        pthread_mutex_lock(&self._mutex)
        while True:
            if self._seal_fd >= 0:
                fd, number = self._seal_fd, self._seal_no
                want, zeroed = self._seal_bytes, self._seal_zeroed
                pthread_mutex_unlock(&self._mutex)
                err = self._seal_segment(fd, number, want, zeroed)
                pthread_mutex_lock(&self._mutex)
                self._seal_fd = -1
                if err != 0:
                    self._fail(err)
                else:
                    self._sealed += 1
                pthread_cond_signal(&self._cond)
            elif self._next_fd < 0 and not self._rot_stopping and self._failure == 0:
                self._created += 1
                number = self._created
                want = max(<int64_t>ZERO_MIN, 2 * self._last_size) if self._strict else 0
                pthread_mutex_unlock(&self._mutex)
                fd = -1
                err = self._create_segment(number, want, &fd)
                pthread_mutex_lock(&self._mutex)
                if err != 0:
                    self._fail(err)
                else:
                    self._next_fd, self._next_no, self._next_zeroed = fd, number, want
                pthread_cond_signal(&self._cond)
            elif self._rot_stopping:
                break
            else:
                pthread_cond_wait(&self._rot_cond, &self._mutex)
        fd, number = self._next_fd, self._next_no
        self._next_fd = -1
        self._rot_running = False
        pthread_cond_signal(&self._cond)
        pthread_mutex_unlock(&self._mutex)
        if fd >= 0:  # prepared, never written: not a segment
            close(fd)
            snprintf(self._open_path, PATH_MAX, "%s/%08lld.open", self._folder_c,
                     <long long>number)
            unlink(self._open_path)

    cdef void _fail(self, int err) noexcept nogil:
        """Record the first failure (``_mutex`` held) and tell the event loop."""
        if self._failure == 0:
            self._failure = err
        self._wake()

    cdef int _create_segment(self, int64_t number, int64_t zeros, int* out) noexcept nogil:
        """Create segment ``number``, zero-filled for ``zeros`` bytes and fsynced (its
        size changed) when ``zeros``; 0 or an errno."""
        cdef int64_t filled = 0, chunk
        cdef int err = 0
        snprintf(self._open_path, PATH_MAX, "%s/%08lld.open", self._folder_c,
                 <long long>number)
        cdef int fd = c_open(self._open_path, O_WRONLY | O_CREAT, 0o644)
        if fd < 0:
            return errno
        while filled < zeros and err == 0:
            chunk = min(<int64_t>sizeof(_ZEROS), zeros - filled)
            err = _pwrite_all(fd, _ZEROS, <size_t>chunk, filled)
            filled += chunk
        if err == 0 and zeros > 0 and fsync(fd) != 0:
            err = errno
        if err != 0:
            close(fd)
            return err
        out[0] = fd
        return 0

    cdef int _seal_segment(self, int fd, int64_t number, int64_t size,
                           int64_t zeroed) noexcept nogil:
        """Cut the zero tail, fsync, close, rename to ``.sealed``, fsync the folder."""
        cdef int err = 0
        if zeroed > size and ftruncate(fd, size) != 0:
            err = errno  # the zero-filled tail goes; a sealed segment is its lines only
        if err == 0 and fsync(fd) != 0:
            err = errno
        close(fd)
        if err == 0:
            snprintf(self._open_path, PATH_MAX, "%s/%08lld.open", self._folder_c,
                     <long long>number)
            snprintf(self._sealed_path, PATH_MAX, "%s/%08lld.sealed", self._folder_c,
                     <long long>number)
            if rename(self._open_path, self._sealed_path) != 0:
                err = errno
        if err == 0:
            err = _fsync_path(self._folder_c)
        return err

    cdef void _wake(self) noexcept nogil:
        cdef uint64_t one = 1
        if self._wake_fd >= 0:
            write(self._wake_fd, &one, 8)

    cdef void _write_group(self, size_t size) noexcept nogil:
        cdef int err
        if self._failure != 0:
            return
        if self._fd < 0:
            self._take_segment()
            if self._fd < 0:
                return  # the rotator failed: _failure says why
            self._segment_bytes = 0
            self._segment_opened = _now_ns()
        err = self._zero_ahead(self._segment_bytes + <int64_t>size) if self._strict else 0
        if err == 0:
            err = _pwrite_all(self._fd, self._writing, size, self._segment_bytes)
        if err == 0 and self._strict and fdatasync(self._fd) != 0:
            err = errno
        if err != 0:
            self._failure = err
            return
        self._segment_bytes += size
        self._bytes_written += size
        self._groups += 1

    cdef int _zero_ahead(self, int64_t needed) noexcept nogil:
        """Zero-fill the segment (and fsync it: its size changes) up to ``needed`` plus
        ZERO_AHEAD, when ``needed`` is beyond what is filled; 0 or an errno."""
        cdef int64_t end, chunk
        cdef int err
        if needed <= self._zeroed:
            return 0
        end = needed + ZERO_AHEAD
        while self._zeroed < end:
            chunk = min(<int64_t>sizeof(_ZEROS), end - self._zeroed)
            err = _pwrite_all(self._fd, _ZEROS, <size_t>chunk, self._zeroed)
            if err != 0:
                return err
            self._zeroed += chunk
        if fsync(self._fd) != 0:
            return errno
        return 0
