"""Decision identifiers: UUIDv7 (RFC 9562), time-ordered so audit rows sort by time."""

from __future__ import annotations

import os
import random
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_counter = 0
# The random bits only keep ids of different processes apart: a generator seeded
# from the OS once per process (again in a forked child) instead of a getrandom()
# per id, whose GIL release costs a hand-off under load.
_random = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _random.seed(os.urandom(32)))


def uuid7() -> uuid.UUID:
    """A new UUIDv7; monotonic within a process (a 12-bit counter breaks ms ties)."""
    return uuid.UUID(int=_uuid7_int())


def uuid7_str() -> str:
    """A new UUIDv7 in its canonical text (8-4-4-4-12 lowercase hex), without the
    ``uuid.UUID`` object in between: one per request (1.8 against 3.1 µs, best of 10)."""
    h = f"{_uuid7_int():032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _uuid7_int() -> int:
    global _last_ms, _counter
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            _counter += 1
            if _counter > 0xFFF:  # counter exhausted within one ms: borrow the next ms
                _last_ms += 1
                _counter = 0
            ms = _last_ms
        else:
            _last_ms = ms
            _counter = _random.getrandbits(10)
        counter = _counter
        rand = _random.getrandbits(62)
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= counter << 64
    value |= 0b10 << 62
    value |= rand
    return value
