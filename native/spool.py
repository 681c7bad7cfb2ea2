"""Audit spool writer: the Cython kernel, or its pure-Python twin.

``OSPREY_NO_EXTENSIONS=1`` forces the twin; so does a missing extension (an
ImportError), which ``EXTENSION_LOADED`` reports so a test can catch a build that
silently failed. See ``native._spool`` for the contract.
"""

from __future__ import annotations

import os

from . import spool_py

EXTENSION_LOADED = False
if os.environ.get("OSPREY_NO_EXTENSIONS") != "1":
    try:
        from ._spool import SpoolWriter

        EXTENSION_LOADED = True
    except ImportError:
        SpoolWriter = spool_py.SpoolWriter  # type: ignore[misc, assignment]
else:
    SpoolWriter = spool_py.SpoolWriter  # type: ignore[misc, assignment]

__all__ = ["EXTENSION_LOADED", "SpoolWriter"]
