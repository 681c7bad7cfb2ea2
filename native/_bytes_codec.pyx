# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Cython kernel for KServe BYTES tensors; ``native.bytes_codec_py`` is its twin.

Decoding walks the length prefixes in C and builds each element with one
``PyBytes_FromStringAndSize``; encoding sizes the output once and copies into it.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport uint32_t, uint8_t
from libc.string cimport memcpy

import numpy as np

cimport numpy as cnp

cnp.import_array()


cdef inline uint32_t _read_u32le(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0]) | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


def decode(const uint8_t[::1] buf, Py_ssize_t count, bint text=False):
    """Split ``buf`` into exactly ``count`` elements; ValueError says what was wrong.

    With ``text`` the elements are decoded as UTF-8 ``str`` (what ONNX string
    tensors hold), else they are ``bytes``.
    """
    cdef Py_ssize_t end = buf.shape[0]
    cdef Py_ssize_t pos = 0
    cdef Py_ssize_t i
    cdef uint32_t length
    cdef const uint8_t* base = &buf[0] if end > 0 else NULL
    out = np.empty(count, dtype=object)
    cdef object[::1] view = out
    for i in range(count):
        if pos + 4 > end:
            raise ValueError(
                f"BYTES element {i} has a truncated length prefix "
                f"(needs 4 bytes at offset {pos}, buffer is {end} bytes)"
            )
        length = _read_u32le(base + pos)
        pos += 4
        if length > end - pos:
            raise ValueError(
                f"BYTES element {i} declares {length} bytes at offset {pos} "
                f"but only {end - pos} remain"
            )
        if text:
            try:
                view[i] = PyUnicode_DecodeUTF8(<const char*>(base + pos), length, NULL)
            except UnicodeDecodeError as exc:
                raise ValueError(
                    f"BYTES element {i} is not valid UTF-8 ({exc.reason} at byte {exc.start}); "
                    f"ONNX string tensors hold UTF-8 text"
                ) from None
        else:
            view[i] = PyBytes_FromStringAndSize(<const char*>(base + pos), length)
        pos += length
    if pos != end:
        raise ValueError(
            f"BYTES buffer holds more than the {count} elements its shape declares "
            f"({end - pos} bytes left over)"
        )
    return out


def encode(items):
    """Serialise ``bytes``/``str`` elements (C order) as one BYTES buffer."""
    flat = [item.encode() if isinstance(item, str) else bytes(item) for item in items.reshape(-1)]
    cdef Py_ssize_t total = 0
    cdef bytes data
    for data in flat:
        total += 4 + PyBytes_GET_SIZE(data)
    out = PyBytes_FromStringAndSize(NULL, total)
    cdef char* dst = PyBytes_AS_STRING(out)
    cdef Py_ssize_t n
    cdef uint32_t length
    for data in flat:
        n = PyBytes_GET_SIZE(data)
        length = <uint32_t>n
        dst[0] = <char>(length & 0xFF)
        dst[1] = <char>((length >> 8) & 0xFF)
        dst[2] = <char>((length >> 16) & 0xFF)
        dst[3] = <char>((length >> 24) & 0xFF)
        memcpy(dst + 4, PyBytes_AS_STRING(data), n)
        dst += 4 + n
    return out
