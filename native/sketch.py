"""Drift sketches from histogram counts: the Cython kernel, or its pure-NumPy twin.

``OSPREY_NO_EXTENSIONS=1`` forces the twin; so does a missing extension (an
ImportError), which ``EXTENSION_LOADED`` reports so a test can catch a build that
silently failed. Definitions (epsilon, empty histograms, KS range) are documented
in ``native.sketch_py``, the specification both implement.
"""

from __future__ import annotations

import os

from .sketch_py import COUNT_DTYPE, DEFAULT_EPSILON, Chi2Result, Chi2Rows, Ordered

EXTENSION_LOADED = False
if os.environ.get("OSPREY_NO_EXTENSIONS") != "1":
    try:
        from ._sketch import (
            chi2,
            chi2_rows,
            js_distance,
            js_distance_rows,
            ks_distance,
            ks_distance_rows,
            merge,
            merge_many,
            psi,
            psi_rows,
            score_distance,
        )

        EXTENSION_LOADED = True
    except ImportError:
        from .sketch_py import (
            chi2,
            chi2_rows,
            js_distance,
            js_distance_rows,
            ks_distance,
            ks_distance_rows,
            merge,
            merge_many,
            psi,
            psi_rows,
            score_distance,
        )
else:
    from .sketch_py import (
        chi2,
        chi2_rows,
        js_distance,
        js_distance_rows,
        ks_distance,
        ks_distance_rows,
        merge,
        merge_many,
        psi,
        psi_rows,
        score_distance,
    )

__all__ = [
    "COUNT_DTYPE",
    "DEFAULT_EPSILON",
    "EXTENSION_LOADED",
    "Chi2Result",
    "Chi2Rows",
    "Ordered",
    "chi2",
    "chi2_rows",
    "js_distance",
    "js_distance_rows",
    "ks_distance",
    "ks_distance_rows",
    "merge",
    "merge_many",
    "psi",
    "psi_rows",
    "score_distance",
]
