"""The audit record encoder in pure Python: the twin of ``native._audit_record``.

``encode(entry, stream_id, seq, column_json)`` returns the canonical JSON (compact,
keys sorted, UTF-8) of one audit record; every tensor column is encoded by
``column_json(value, personal) -> bytes``. The kernel writes numeric NumPy columns
itself and must produce the same bytes.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def iso_time(at_ns: int) -> str:
    """``at_ns`` (ns since the epoch) as ISO 8601 UTC, floored to microseconds."""
    return (_EPOCH + dt.timedelta(microseconds=at_ns // 1000)).isoformat(
        timespec="microseconds")


def _text(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _columns(columns: dict[str, Any], personal: frozenset[str],
             column_json: Callable[[Any, bool], bytes]) -> str:
    return "{" + ",".join(
        _text(name) + ":" + column_json(columns[name], name in personal).decode()
        for name in sorted(columns)) + "}"


def _number(value: int | None) -> str:
    return "null" if value is None else str(int(value))


def encode(entry: Any, stream_id: str, seq: int,
           column_json: Callable[[Any, bool], bytes]) -> bytes:
    return (
        '{"at":' + _text(iso_time(entry.at_ns))
        + ',"caller":' + _text(entry.caller)
        + ',"decision_id":' + _text(entry.decision_id)
        + ',"error":' + _text(entry.error)
        + ',"inputs":' + _columns(entry.inputs, entry.personal, column_json)
        + ',"latency_us":' + _number(entry.latency_us)
        + ',"model":' + _text(entry.model)
        + ',"outputs":' + _columns(entry.outputs, frozenset(), column_json)
        + ',"principal":' + _text(entry.principal)
        + ',"queue_us":' + _number(entry.queue_us)
        + ',"request_id":' + _text(entry.request_id)
        + ',"route":' + _text(entry.route)
        + ',"routing_key":' + _text(entry.routing_key)
        + ',"rows":' + _number(entry.rows)
        + ',"seq":' + _number(seq)
        + ',"status":' + _text(entry.status)
        + ',"stream_id":' + _text(stream_id)
        + ',"trace_id":' + _text(entry.trace_id)
        + ',"version":' + _number(entry.version)
        + "}"
    ).encode()
