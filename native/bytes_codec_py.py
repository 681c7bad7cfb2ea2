"""Pure-Python twin of ``native._bytes_codec``: KServe BYTES tensors.

A BYTES tensor is its elements back to back, each a 4-byte little-endian length
followed by that many bytes. This module is the specification the Cython kernel is
tested against; ``native.bytes_codec`` picks one of the two.
"""

from __future__ import annotations

import struct

import numpy as np
import numpy.typing as npt

_LENGTH = struct.Struct("<I")


def decode(buf: bytes, count: int, text: bool = False) -> npt.NDArray[np.object_]:
    """Split ``buf`` into exactly ``count`` elements; ValueError says what was wrong.

    With ``text`` the elements are decoded as UTF-8 ``str`` (what ONNX string
    tensors hold), else they are ``bytes``.
    """
    out = np.empty(count, dtype=object)
    view = memoryview(buf)
    pos, end = 0, len(buf)
    for i in range(count):
        if pos + 4 > end:
            raise ValueError(
                f"BYTES element {i} has a truncated length prefix "
                f"(needs 4 bytes at offset {pos}, buffer is {end} bytes)"
            )
        (length,) = _LENGTH.unpack_from(view, pos)
        pos += 4
        if length > end - pos:
            raise ValueError(
                f"BYTES element {i} declares {length} bytes at offset {pos} "
                f"but only {end - pos} remain"
            )
        chunk = bytes(view[pos : pos + length])
        if text:
            try:
                out[i] = chunk.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(
                    f"BYTES element {i} is not valid UTF-8 ({exc.reason} at byte {exc.start}); "
                    f"ONNX string tensors hold UTF-8 text"
                ) from None
        else:
            out[i] = chunk
        pos += length
    if pos != end:
        raise ValueError(
            f"BYTES buffer holds more than the {count} elements its shape declares "
            f"({end - pos} bytes left over)"
        )
    return out


def encode(items: npt.NDArray[np.object_]) -> bytes:
    """Serialise ``bytes``/``str`` elements (C order) as one BYTES buffer."""
    parts: list[bytes] = []
    for item in items.reshape(-1):
        data = item.encode() if isinstance(item, str) else bytes(item)
        parts.append(_LENGTH.pack(len(data)))
        parts.append(data)
    return b"".join(parts)
