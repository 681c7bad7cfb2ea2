"""Audit record encoder: the Cython kernel, or its pure-Python twin.

``OSPREY_NO_EXTENSIONS=1`` forces the twin; so does a missing extension (an
ImportError), which ``EXTENSION_LOADED`` reports so a test can catch a build that
silently failed. See ``native.audit_record_py`` for the contract.
"""

from __future__ import annotations

import os

from . import audit_record_py
from .audit_record_py import iso_time

EXTENSION_LOADED = False
if os.environ.get("OSPREY_NO_EXTENSIONS") != "1":
    try:
        from ._audit_record import encode, f32_repr, frame, records, split

        EXTENSION_LOADED = True
    except ImportError:
        encode, f32_repr = audit_record_py.encode, audit_record_py.f32_repr
        frame = audit_record_py.frame
        records, split = audit_record_py.records, audit_record_py.split
else:
    encode, f32_repr = audit_record_py.encode, audit_record_py.f32_repr
    frame = audit_record_py.frame
    records, split = audit_record_py.records, audit_record_py.split

__all__ = ["EXTENSION_LOADED", "encode", "f32_repr", "frame", "iso_time", "records", "split"]
