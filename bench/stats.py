"""Latency percentiles."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LatencySummary:
    """Per-call latency in milliseconds (NaN when nothing completed)."""

    count: int
    mean_ms: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float


def summarize(latencies_s: Sequence[float]) -> LatencySummary:
    """Percentiles of ``latencies_s`` (seconds), reported in milliseconds."""
    if not latencies_s:
        nan = float("nan")
        return LatencySummary(0, nan, nan, nan, nan, nan)
    ms = np.asarray(latencies_s, dtype=np.float64) * 1e3
    p50, p99, p999 = np.percentile(ms, [50, 99, 99.9])
    return LatencySummary(
        count=int(ms.size),
        mean_ms=float(ms.mean()),
        p50_ms=float(p50),
        p99_ms=float(p99),
        p999_ms=float(p999),
        max_ms=float(ms.max()),
    )
