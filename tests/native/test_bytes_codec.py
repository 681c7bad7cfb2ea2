"""The BYTES codec: the Cython kernel must agree with its pure-Python twin."""

from __future__ import annotations

import os
import subprocess
import sys
from types import ModuleType

import numpy as np
import pytest

from native import bytes_codec, bytes_codec_py

try:
    from native import _bytes_codec
except ImportError:  # reported by test_extension_loaded
    _bytes_codec = None  # type: ignore[assignment]

IMPLEMENTATIONS = {"py": bytes_codec_py, "c": _bytes_codec}


@pytest.fixture(params=["py", "c"])
def codec(request: pytest.FixtureRequest) -> ModuleType:
    module = IMPLEMENTATIONS[request.param]
    assert module is not None, "the Cython extension native._bytes_codec is not built"
    return module


def test_extension_loaded() -> None:
    """Fails when the build silently skipped the extension (unless told to)."""
    if os.environ.get("OSPREY_NO_EXTENSIONS") == "1":
        assert not bytes_codec.EXTENSION_LOADED
    else:
        assert bytes_codec.EXTENSION_LOADED, "native._bytes_codec failed to import"


def test_no_extensions_switch_forces_the_twin() -> None:
    code = "from native import bytes_codec as b; print(b.EXTENSION_LOADED, b.decode.__module__)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "OSPREY_NO_EXTENSIONS": "1"},
        capture_output=True, text=True, check=True,
    ).stdout.split()
    assert out == ["False", "native.bytes_codec_py"]


def test_round_trip(codec: ModuleType) -> None:
    items = np.array([b"ab", b"", "h\u00e9llo", b"\x00\xff" * 300, b"x"], dtype=object)
    buf = codec.encode(items)
    assert buf == bytes_codec_py.encode(items)
    assert buf[:6] == b"\x02\x00\x00\x00ab"
    decoded = codec.decode(buf, len(items))
    assert decoded.dtype == object
    assert list(decoded) == [b"ab", b"", "h\u00e9llo".encode(), b"\x00\xff" * 300, b"x"]


def test_round_trip_random(codec: ModuleType) -> None:
    rng = np.random.default_rng(7)
    items = np.empty(500, dtype=object)
    items[:] = [rng.bytes(int(n)) for n in rng.integers(0, 40, 500)]
    decoded = codec.decode(codec.encode(items.reshape(25, 20)), 500)
    assert list(decoded) == list(items)


def test_empty(codec: ModuleType) -> None:
    assert codec.encode(np.empty(0, dtype=object)) == b""
    assert codec.decode(b"", 0).shape == (0,)


@pytest.mark.parametrize(
    ("buf", "count", "message"),
    [
        (b"\x01\x00", 1, "BYTES element 0 has a truncated length prefix"),
        (b"\x02\x00\x00\x00ab\x01\x00", 2, "BYTES element 1 has a truncated length prefix"),
        (b"\x05\x00\x00\x00ab", 1, "BYTES element 0 declares 5 bytes at offset 4 but only 2"),
        (b"\xff\xff\xff\xff", 1, "declares 4294967295 bytes"),
        (b"\x01\x00\x00\x00ab", 1, "(1 bytes left over)"),
        (b"\x00\x00\x00\x00", 0, "more than the 0 elements"),
    ],
)
def test_malformed(codec: ModuleType, buf: bytes, count: int, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        codec.decode(buf, count)


def test_text_decoding(codec: ModuleType) -> None:
    buf = codec.encode(np.array(["h\u00e9llo", "", "\x00ctl"], dtype=object))
    assert list(codec.decode(buf, 3, text=True)) == ["h\u00e9llo", "", "\x00ctl"]


def test_text_decoding_refuses_invalid_utf8(codec: ModuleType) -> None:
    buf = codec.encode(np.array([b"ok", b"\xff\xfe"], dtype=object))
    with pytest.raises(ValueError, match=r"BYTES element 1 is not valid UTF-8 \(invalid start"):
        codec.decode(buf, 2, text=True)
    assert list(codec.decode(buf, 2)) == [b"ok", b"\xff\xfe"]
