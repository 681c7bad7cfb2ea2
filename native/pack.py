"""Batch packing and splitting: the Cython kernel, or its pure-NumPy twin.

``OSPREY_NO_EXTENSIONS=1`` forces the twin; so does a missing extension (an
ImportError), which ``EXTENSION_LOADED`` reports so a test can catch a build that
silently failed. See ``native.pack_py`` for the specification of each function.
"""

from __future__ import annotations

import os

from . import pack_py
from .pack_py import OFFSET_DTYPE

EXTENSION_LOADED = False
if os.environ.get("OSPREY_NO_EXTENSIONS") != "1":
    try:
        from ._pack import pack, pack_bytes, split

        EXTENSION_LOADED = True
    except ImportError:
        pack, pack_bytes, split = pack_py.pack, pack_py.pack_bytes, pack_py.split
else:
    pack, pack_bytes, split = pack_py.pack, pack_py.pack_bytes, pack_py.split

__all__ = ["EXTENSION_LOADED", "OFFSET_DTYPE", "pack", "pack_bytes", "split"]
