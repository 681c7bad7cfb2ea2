"""The audit log's tamper evidence: canonical records and the HMAC-SHA256 chain.

Each writer stream (one server process: host, pid, boot) is a sequence of records
numbered from 0. Record 0 is the stream's genesis; every record carries

    chain[n] = HMAC-SHA256(key, chain[n-1] || canonical(record n))

with chain[-1] = 32 zero bytes. ``canonical`` is compact JSON with sorted keys of
exactly the fields stored in SQL, so ``osprey audit verify`` recomputes the chain
from the database alone (plus the key, which the database never holds). An
attacker who edits, inserts or deletes rows cannot produce the right values
without the key; one who truncates a stream's tail is caught by the chain heads
checkpointed in ``audit_checkpoints``.

Floats are JSON numbers; NaN and ±infinity (JSON has none) are the strings "NaN",
"Infinity" and "-Infinity".
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any

from server.errors import ConfigError

GENESIS_PREVIOUS = bytes(32)
KEY_BYTES = 32

# The fields of an audit_requests row that the chain covers, in every record.
CHAINED_FIELDS = (
    "stream_id", "seq", "decision_id", "at", "request_id", "routing_key", "model", "version",
    "route", "rows", "status", "error", "latency_us", "queue_us", "caller", "principal",
    "trace_id", "inputs", "outputs",
)


def canonical(fields: dict[str, Any]) -> bytes:
    """The bytes the chain signs: compact, key-sorted JSON of ``fields``."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


def link(key: bytes, previous: bytes, fields: dict[str, Any]) -> bytes:
    return hmac.new(key, previous + canonical(fields), hashlib.sha256).digest()


class Hmac:
    """HMAC-SHA256 under one key, for many messages: the key's inner and outer pad
    states are hashed once and copied per message (RFC 2104), 1.3 µs for a 1 KB
    record here against 2.9 µs for ``hmac.digest``, which sets the key up each call."""

    def __init__(self, key: bytes) -> None:
        if len(key) > 64:  # SHA-256's block size
            key = hashlib.sha256(key).digest()
        block = key.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def digest(self, message: bytes, more: bytes = b"") -> bytes:
        """The MAC of ``message + more`` (without joining them)."""
        inner = self._inner.copy()
        inner.update(message)
        if more:
            inner.update(more)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


def key_id(key: bytes) -> str:
    """A public fingerprint of the key (which key signed a stream), not the key."""
    return hashlib.sha256(b"osprey-audit-key-id" + key).hexdigest()[:32]


def load_key(path: Path, create: bool = False) -> bytes:
    """The chain key from ``path`` (hex or raw, at least 32 bytes, mode 0600).

    ``create``: make a new random key there if the file does not exist (the embedded
    default under $OSPREY_HOME; production points ``audit_key_file`` at a secret).
    """
    if create and not path.exists():
        _create_key(path)
    try:
        mode = path.stat().st_mode & 0o777
        raw = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"audit_key_file {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise ConfigError(
            f"audit_key_file {path} is readable by others (mode {mode:o}); chmod 600 it"
        )
    try:
        key = bytes.fromhex(raw.decode())
    except (UnicodeDecodeError, ValueError):
        key = raw
    if len(key) < KEY_BYTES:
        raise ConfigError(
            f"audit_key_file {path} holds {len(key)} bytes; the audit chain needs at least "
            f"{KEY_BYTES} (e.g. `openssl rand -hex 32`)"
        )
    return key


def _create_key(path: Path) -> None:
    """Publish a new random key at ``path`` atomically: written in full to a private
    temporary file, then linked into place; if another process (a sibling worker) got
    there first, its key is the one everyone uses."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(KEY_BYTES) + "\n")
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
