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

A Python thread runs ``run`` so that ``threading`` can join it; ``run`` releases
the GIL at once and holds it again only to return.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.errno cimport EINTR, errno
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy, strerror
from posix.fcntl cimport O_CREAT, O_RDONLY, O_WRONLY
from posix.fcntl cimport open as c_open
from posix.time cimport timespec
from posix.unistd cimport close, fsync, ftruncate, pwrite, write


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


# strict segments are zero-filled this far ahead of the data (then fdatasync of a group
# only flushes data blocks: no size change, no journal commit; half the CPU and latency
# of an fsync after an append, measured on ext4)
DEF ZERO_AHEAD = 2 * 1024 * 1024
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
    cdef bytes _folder
    cdef const char* _folder_c
    cdef char _open_path[PATH_MAX]
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
        pthread_condattr_destroy(&attr)
        self._strict = strict
        self._group_ns = <int64_t>(group_seconds * 1e9)
        self._seal_ns = <int64_t>(seal_seconds * 1e9)
        self._segment_limit = segment_bytes
        self._wake_fd = wake_fd
        self._fd = -1

    def __dealloc__(self):
        if self._fd >= 0:
            close(self._fd)
        free(self._pending)
        free(self._writing)
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
        """The writer loop; returns after ``stop`` once everything queued is written."""
        if self._running:
            raise RuntimeError("the spool writer is already running")
        self._running = True
        with nogil:
            self._loop()
        self._running = False

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
            if self._fd >= 0 and (stopping or now - self._segment_opened >= self._seal_ns
                                  or self._segment_bytes >= self._segment_limit):
                self._seal()

            pthread_mutex_lock(&self._mutex)
            if self._failure != 0:
                self._wake()  # the waiting responses learn that their records failed
            elif target > self._durable:
                self._durable = target
                self._wake()
            if stopping and self._pending_len == 0:
                break
        pthread_mutex_unlock(&self._mutex)

    cdef void _wake(self) noexcept nogil:
        cdef uint64_t one = 1
        if self._wake_fd >= 0:
            write(self._wake_fd, &one, 8)

    cdef void _write_group(self, size_t size) noexcept nogil:
        cdef int err
        if self._failure != 0:
            return
        if self._fd < 0:
            self._segment_no += 1
            snprintf(self._open_path, PATH_MAX, "%s/%08lld.open", self._folder_c,
                     <long long>self._segment_no)
            self._fd = c_open(self._open_path, O_WRONLY | O_CREAT, 0o644)
            if self._fd < 0:
                self._failure = errno
                return
            self._segment_bytes = 0
            self._zeroed = 0
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

    cdef void _seal(self) noexcept nogil:
        cdef int err = 0
        if self._zeroed > self._segment_bytes and ftruncate(self._fd, self._segment_bytes) != 0:
            err = errno  # the zero-filled tail goes; a sealed segment is its lines only
        if err == 0 and fsync(self._fd) != 0:
            err = errno
        close(self._fd)
        self._fd = -1
        if err == 0:
            snprintf(self._sealed_path, PATH_MAX, "%s/%08lld.sealed", self._folder_c,
                     <long long>self._segment_no)
            if rename(self._open_path, self._sealed_path) != 0:
                err = errno
        if err == 0:
            err = _fsync_path(self._folder_c)
        if err != 0 and self._failure == 0:
            self._failure = err
            return
        self._sealed += 1
