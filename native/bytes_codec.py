"""KServe BYTES codec: the Cython kernel, or its pure-Python twin.

``OSPREY_NO_EXTENSIONS=1`` forces the twin; so does a missing extension (an
ImportError), which ``EXTENSION_LOADED`` reports so a test can catch a build that
silently failed.
"""

from __future__ import annotations

import os

from . import bytes_codec_py

EXTENSION_LOADED = False
if os.environ.get("OSPREY_NO_EXTENSIONS") != "1":
    try:
        from ._bytes_codec import decode, encode

        EXTENSION_LOADED = True
    except ImportError:
        decode, encode = bytes_codec_py.decode, bytes_codec_py.encode
else:
    decode, encode = bytes_codec_py.decode, bytes_codec_py.encode

__all__ = ["EXTENSION_LOADED", "decode", "encode"]
