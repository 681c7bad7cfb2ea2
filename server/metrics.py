"""Prometheus metrics at :8002/metrics, Triton-compatible names plus real histograms.

Triton's counters (``nv_inference_*``) keep existing dashboards working; the
``osprey_*`` histograms give the distributions Triton's sums cannot. Every series
carries ``model`` and ``version`` labels.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)

_LABELS = ("model", "version")


@dataclass(frozen=True)
class VersionMetrics:
    """The metric children of one model version, bound once (label lookup is costly)."""

    success: Any
    failure: Any  # still labelled by reason
    inference_count: Any
    exec_count: Any
    pending: Any
    request_us: Any
    queue_us: Any
    compute_input_us: Any
    compute_infer_us: Any
    compute_output_us: Any
    request_seconds: Any
    queue_seconds: Any
    compute_seconds: Any
    batch_rows: Any


class ServerMetrics:
    """All of a server's metric families, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.success = Counter(
            "nv_inference_request_success", "Successful inference requests", _LABELS, registry=r
        )
        self.failure = Counter(
            "nv_inference_request_failure",
            "Failed inference requests, by reason (REJECTED, CANCELED, BACKEND, OTHER)",
            (*_LABELS, "reason"),
            registry=r,
        )
        self.inference_count = Counter(
            "nv_inference_count", "Inferences performed (rows; a batch of N counts N)", _LABELS,
            registry=r,
        )
        self.exec_count = Counter(
            "nv_inference_exec_count", "Model executions (batches)", _LABELS, registry=r
        )
        self.pending = Gauge(
            "nv_inference_pending_request_count",
            "Requests waiting in the batcher queue",
            _LABELS,
            registry=r,
        )
        self.request_us = Counter(
            "nv_inference_request_duration_us", "Cumulative end-to-end request time", _LABELS,
            registry=r,
        )
        self.queue_us = Counter(
            "nv_inference_queue_duration_us", "Cumulative time requests waited in the queue",
            _LABELS, registry=r,
        )
        self.compute_input_us = Counter(
            "nv_inference_compute_input_duration_us", "Cumulative input packing time", _LABELS,
            registry=r,
        )
        self.compute_infer_us = Counter(
            "nv_inference_compute_infer_duration_us", "Cumulative model execution time",
            _LABELS, registry=r,
        )
        self.compute_output_us = Counter(
            "nv_inference_compute_output_duration_us", "Cumulative output splitting time",
            _LABELS, registry=r,
        )
        self.request_seconds = Histogram(
            "osprey_request_duration_seconds", "End-to-end request latency", _LABELS,
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.queue_seconds = Histogram(
            "osprey_queue_duration_seconds", "Time a request waited for its batch", _LABELS,
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.compute_seconds = Histogram(
            "osprey_compute_duration_seconds", "Time of one execution (pack, run, split)",
            _LABELS, buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.batch_rows = Histogram(
            "osprey_batch_size_rows", "Rows per execution", _LABELS, buckets=_BATCH_BUCKETS,
            registry=r,
        )

    def for_version(self, model: str, version: int) -> VersionMetrics:
        labels = (model, str(version))
        return VersionMetrics(
            success=self.success.labels(*labels),
            failure=self.failure,
            inference_count=self.inference_count.labels(*labels),
            exec_count=self.exec_count.labels(*labels),
            pending=self.pending.labels(*labels),
            request_us=self.request_us.labels(*labels),
            queue_us=self.queue_us.labels(*labels),
            compute_input_us=self.compute_input_us.labels(*labels),
            compute_infer_us=self.compute_infer_us.labels(*labels),
            compute_output_us=self.compute_output_us.labels(*labels),
            request_seconds=self.request_seconds.labels(*labels),
            queue_seconds=self.queue_seconds.labels(*labels),
            compute_seconds=self.compute_seconds.labels(*labels),
            batch_rows=self.batch_rows.labels(*labels),
        )

    def forget_version(self, model: str, version: int) -> None:
        """Drop an unloaded version's gauge so it does not report stale pending work."""
        labels = (model, str(version))
        with contextlib.suppress(KeyError):
            self.pending.remove(*labels)
