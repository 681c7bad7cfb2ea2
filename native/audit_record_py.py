"""The audit record encoder in pure Python: the twin of ``native._audit_record``.

``encode(entry, stream_id, seq, column_json)`` returns the canonical JSON (compact,
keys sorted, UTF-8) of one audit record; every tensor column is encoded by
``column_json(value, personal) -> bytes``. The kernel writes numeric NumPy columns
itself and must produce the same bytes; ``f32_repr`` is how both write a float32.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import struct
from collections.abc import Callable
from typing import Any

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# float32 values at least 2^-99 (exponent field 28) are written as their shortest
# round-trip decimal; smaller ones, zero and non-finite ones are left to ``repr``.
F32_MIN_EXPONENT_FIELD = 28


def f32_repr(value: float) -> str | None:
    """The shortest decimal that reads back as the float32 ``value`` (the closest such
    one, ties to even), laid out as Python's ``repr`` lays out a float; None where the
    encoder leaves the value to ``repr`` (see F32_MIN_EXPONENT_FIELD)."""
    (bits,) = struct.unpack("<I", struct.pack("<f", value))
    field = (bits >> 23) & 0xFF
    if field < F32_MIN_EXPONENT_FIELD or field == 0xFF:
        return None
    frac = bits & 0x7FFFFF
    m = frac | 0x800000
    e = field - 152
    m4, hi = 4 * m, 4 * m + 2
    lo = 4 * m - 1 if frac == 0 and field > 1 else 4 * m - 2
    inclusive = m % 2 == 0
    k = math.floor(math.log10(math.ldexp(m4, e)))
    for q in range(k + 2, k - 11, -1):
        c = _closest(lo, m4, hi, e, q, inclusive)
        if c is not None:
            break
    else:  # pragma: no cover - a float32 always has a 9-digit decimal
        raise AssertionError(value)
    digits = str(c).rstrip("0") or "0"
    decpt = q + len(str(c))
    text = _layout(digits, decpt)
    return "-" + text if bits >> 31 else text


def _ratio(x: int, e: int, q: int) -> tuple[int, int]:
    """x * 2^e / 10^q as (numerator, denominator)."""
    n, d = x, 1
    n, d = (n << e, d) if e >= 0 else (n, d << -e)
    return (n, d * 10**q) if q >= 0 else (n * 10**-q, d)


def _closest(lo: int, m4: int, hi: int, e: int, q: int, inclusive: bool) -> int | None:
    n, d = _ratio(lo, e, q)
    cmin = n // d + (1 if n % d or not inclusive else 0)
    n, d = _ratio(hi, e, q)
    cmax = n // d - (1 if n % d == 0 and not inclusive else 0)
    if cmin > cmax:
        return None
    n, d = _ratio(m4, e, q)
    c, r = divmod(n, d)
    if 2 * r > d or (2 * r == d and c % 2):
        c += 1
    return min(max(c, cmin), cmax)


def _layout(digits: str, decpt: int) -> str:
    """``digits`` x 10^(decpt - len(digits)) as ``repr`` writes it."""
    if decpt <= -4 or decpt > 16:
        exponent = decpt - 1
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    if decpt <= 0:
        return "0." + "0" * -decpt + digits
    if decpt >= len(digits):
        return digits + "0" * (decpt - len(digits)) + ".0"
    return digits[:decpt] + "." + digits[decpt:]


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


_DECODER = json.JSONDecoder()
_WHITESPACE = " \t\n\r"


def frame(body: bytes, chain: bytes, declared: bytes) -> bytes:
    """The spool line of a record: its canonical ``body`` (what the chain signs) with
    the chain value (hex) and the version's ``declared`` JSON (for the shipper, not
    signed) added as the last two keys, and a newline."""
    if len(body) < 2 or not body.endswith(b"}"):
        raise ValueError("audit record: the body is not a JSON object")
    return (body[:-1] + b',"chain":"' + chain.hex().encode() + b'","declared":' + declared
            + b"}\n")


def split(line: bytes) -> dict[str, Any]:
    """The fields of one spool line (a JSON object): strings, numbers, booleans and
    null as Python values; objects and arrays as their JSON text, exactly as written
    (the shipper stores tensors as that text instead of parsing and writing them
    again). ValueError names where a line that is not such an object goes wrong."""
    try:
        text = line.decode()
    except UnicodeDecodeError as exc:
        raise ValueError(f"audit record: not UTF-8 at position {exc.start}") from None
    n = len(text)
    i = _skip(text, 0)
    if i >= n or text[i] != "{":
        raise ValueError(f"audit record: expected '{{' at position {i}")
    out: dict[str, Any] = {}
    i = _skip(text, i + 1)
    if i < n and text[i] == "}":
        return _end(text, i + 1, out)
    while True:
        if i >= n or text[i] != '"':
            raise ValueError(f"audit record: expected a key at position {i}")
        try:
            key, i = json.decoder.scanstring(text, i + 1)  # type: ignore[attr-defined]
        except json.JSONDecodeError as exc:
            raise ValueError(f"audit record: bad key at position {i}: {exc.msg}") from None
        i = _skip(text, i)
        if i >= n or text[i] != ":":
            raise ValueError(f"audit record: expected ':' at position {i}")
        i = _skip(text, i + 1)
        try:
            value, end = _DECODER.raw_decode(text, i)
        except json.JSONDecodeError as exc:
            raise ValueError(f"audit record: bad value at position {i}: {exc.msg}") from None
        out[key] = text[i:end] if text[i] in "{[" else value
        i = _skip(text, end)
        if i < n and text[i] == ",":
            i = _skip(text, i + 1)
            continue
        if i < n and text[i] == "}":
            return _end(text, i + 1, out)
        raise ValueError(f"audit record: expected ',' or '}}' at position {i}")


def records(data: bytes, fields: tuple[str, ...]) -> tuple[list[tuple[Any, ...]], int]:
    """Every line of a spool segment as the tuple of ``fields``, read as ``split``
    reads it (None where a line has no such key), and the length of a torn last line
    (0 if none). Zero bytes after the data (a strict segment's fill) are not lines;
    nor are empty ones. A last line without its newline that does not read is torn
    (a crash cut it short); any other bad line is a ValueError naming its number."""
    data = data.rstrip(b"\0")
    lines = data.split(b"\n")
    out: list[tuple[Any, ...]] = []
    for number, line in enumerate(lines, 1):
        if not line:
            continue
        try:
            values = split(line)
        except ValueError as exc:
            if number == len(lines):
                return out, len(line)
            raise ValueError(f"line {number}: {exc}") from None
        out.append(tuple(values.get(name) for name in fields))
    return out, 0


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WHITESPACE:
        i += 1
    return i


def _end(text: str, i: int, out: dict[str, Any]) -> dict[str, Any]:
    if _skip(text, i) != len(text):
        raise ValueError(f"audit record: data after the object at position {i}")
    return out
