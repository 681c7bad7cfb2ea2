"""The feature transform: the Cython kernel, or its pure-NumPy twin.

``OSPREY_NO_EXTENSIONS=1`` forces the twin; so does a missing extension (an
ImportError), which ``EXTENSION_LOADED`` reports so a test can catch a build that
silently failed. ``native.transform_py`` is the specification of ``transform``,
``count`` and ``count_scores``; ``compile_plan`` (``native.transform_plan``) and the
twin's helpers ``numeric_bins`` and ``split_bytes`` are shared by both.
"""

from __future__ import annotations

import os

from .transform_plan import TransformPlan, compile_plan
from .transform_py import numeric_bins, split_bytes

EXTENSION_LOADED = False
if os.environ.get("OSPREY_NO_EXTENSIONS") != "1":
    try:
        from ._transform import count, count_scores, transform

        EXTENSION_LOADED = True
    except ImportError:
        from .transform_py import count, count_scores, transform
else:
    from .transform_py import count, count_scores, transform

__all__ = [
    "EXTENSION_LOADED",
    "TransformPlan",
    "compile_plan",
    "count",
    "count_scores",
    "numeric_bins",
    "split_bytes",
    "transform",
]
