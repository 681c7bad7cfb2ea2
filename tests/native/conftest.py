"""Shared settings for the native parity tests.

Hypothesis runs the fixed, reproducible "ci" profile (200 examples, derandomized,
no deadline) unless ``HYPOTHESIS_PROFILE`` names another registered one.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", max_examples=200, deadline=None, derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
