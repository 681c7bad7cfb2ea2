"""Prometheus metrics at :8002/metrics, Triton-compatible names plus real histograms.

Triton's families (``nv_inference_*``) keep existing dashboards working. Triton
exposes its counters without the ``_total`` suffix that prometheus-client's
``Counter`` always adds, so they are kept here as plain numbers and exposed by a
collector under their exact names (as ``untyped``; the pending count as a gauge).
The ``osprey_*`` histograms give the distributions Triton's sums cannot (written by
the event-loop thread only, as plain bucket counts: ``LoopHistogram``), and
``osprey_drift_rows_sketched_total`` counts the rows a feature-spec version counted
into its drift sketch (only such versions have the series). Every series carries
``model`` and ``version`` labels.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import (
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    UnknownMetricFamily,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

_LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)

_LABELS = ("model", "version")

# attribute of TritonCounters -> (Triton's family name, help)
_TRITON_FAMILIES = {
    "success": ("nv_inference_request_success", "Successful inference requests"),
    "inference_count": (
        "nv_inference_count", "Inferences performed (rows; a batch of N counts N)"
    ),
    "exec_count": ("nv_inference_exec_count", "Model executions (batches)"),
    "request_us": ("nv_inference_request_duration_us", "Cumulative end-to-end request time"),
    "queue_us": ("nv_inference_queue_duration_us", "Cumulative time requests waited queued"),
    "compute_input_us": (
        "nv_inference_compute_input_duration_us", "Cumulative input packing time"
    ),
    "compute_infer_us": (
        "nv_inference_compute_infer_duration_us", "Cumulative model execution time"
    ),
    "compute_output_us": (
        "nv_inference_compute_output_duration_us", "Cumulative output splitting time"
    ),
}


@dataclass
class TritonCounters:
    """Triton's cumulative counters of one model version (event-loop thread only)."""

    success: int = 0
    inference_count: int = 0
    exec_count: int = 0
    pending: int = 0
    request_us: float = 0.0
    queue_us: float = 0.0
    compute_input_us: float = 0.0
    compute_infer_us: float = 0.0
    compute_output_us: float = 0.0
    failures: dict[str, int] = field(default_factory=dict)  # by reason


class _TritonCollector(Collector):
    def __init__(self, counters: dict[tuple[str, str], TritonCounters]) -> None:
        self.counters = counters

    def collect(self) -> Iterator[Metric]:
        items = sorted(self.counters.items())
        for attr, (name, doc) in _TRITON_FAMILIES.items():
            family = UnknownMetricFamily(name, doc, labels=_LABELS)
            for labels, c in items:
                family.add_metric(labels, getattr(c, attr))
            yield family
        failure = UnknownMetricFamily(
            "nv_inference_request_failure",
            "Failed inference requests, by reason (REJECTED, CANCELED, BACKEND, OTHER)",
            labels=(*_LABELS, "reason"),
        )
        pending = GaugeMetricFamily(
            "nv_inference_pending_request_count",
            "Requests waiting in the batcher queue",
            labels=_LABELS,
        )
        for labels, c in items:
            for reason, count in sorted(dict(c.failures).items()):
                failure.add_metric((*labels, reason), count)
            pending.add_metric(labels, c.pending)
        yield failure
        yield pending


class LoopHistogram:
    """One histogram series, observed by the event-loop thread only: a bisect and two
    additions (prometheus-client's ``Histogram.observe`` takes a lock per value:
    1.5-2.4 against 0.3 µs, and a request makes two observations). A scrape, in the
    metrics server's thread, reads the counts as they are."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds  # ascending, +Inf last
        self.counts = [0] * len(bounds)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # the first bucket with le >= value
        self.sum += value


class HistogramFamily(Collector):
    """A labelled family of ``LoopHistogram`` series, exposed as prometheus-client's
    ``Histogram`` exposes one (``_bucket`` cumulative by ``le``, ``_count``, ``_sum``)."""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...],
                 registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = (*(float(b) for b in buckets), float("inf"))
        self._series: dict[tuple[str, ...], LoopHistogram] = {}
        registry.register(self)

    def labels(self, *values: str) -> LoopHistogram:
        return self._series.setdefault(values, LoopHistogram(self.bounds))

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=_LABELS)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=_LABELS)
        for labels, series in sorted(self._series.items()):
            counts, total = list(series.counts), series.sum
            cumulative, buckets = 0, []
            for bound, count in zip(self.bounds, counts, strict=True):
                cumulative += count
                buckets.append((floatToGoString(bound), cumulative))
            family.add_metric(labels, buckets, total)
        yield family


@dataclass(frozen=True)
class VersionMetrics:
    """The metric children of one model version, bound once (label lookup is costly)."""

    triton: TritonCounters
    request_seconds: LoopHistogram
    queue_seconds: LoopHistogram
    compute_seconds: LoopHistogram
    batch_rows: LoopHistogram
    drift_rows: Any = None  # feature-spec versions only


class ServerMetrics:
    """All of a server's metric families, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._triton: dict[tuple[str, str], TritonCounters] = {}
        r.register(_TritonCollector(self._triton))
        self.request_seconds = HistogramFamily(
            "osprey_request_duration_seconds", "End-to-end request latency",
            _LATENCY_BUCKETS, r,
        )
        self.queue_seconds = HistogramFamily(
            "osprey_queue_duration_seconds", "Time a request waited for its batch",
            _LATENCY_BUCKETS, r,
        )
        self.compute_seconds = HistogramFamily(
            "osprey_compute_duration_seconds", "Time of one execution (pack, run, split)",
            _LATENCY_BUCKETS, r,
        )
        self.batch_rows = HistogramFamily(
            "osprey_batch_size_rows", "Rows per execution", _BATCH_BUCKETS, r,
        )
        # prometheus-client exposes a Counter as osprey_drift_rows_sketched_total.
        self.drift_rows = Counter(
            "osprey_drift_rows_sketched",
            "Rows counted into the drift sketch of a feature-spec version",
            _LABELS, registry=r,
        )

        self.shadow_dropped = Counter(
            "osprey_shadow_dropped",
            "Shadow copies not run or not answered (shed under load, or failed)",
            _LABELS, registry=r,
        )
        # Adds up over worker processes like every other series: > 0 means some
        # worker serves its last deployment without the registry database.
        self.registry_unreachable = Gauge(
            "osprey_registry_unreachable",
            "1 per process serving its last deployment because the registry database "
            "cannot be reached (0: every process follows the registry)",
            registry=r,
        )

        self.audit_spool_bytes = Gauge(
            "osprey_audit_spool_bytes",
            "Audit records on local disk not yet shipped to the database",
            registry=r,
        )
        # records / groups = the group commit's batch (one write, and under strict one
        # fdatasync, per group)
        self.audit_records = Gauge(
            "osprey_audit_records", "Audit records handed to the spool writer since start",
            registry=r,
        )
        self.audit_groups = Gauge(
            "osprey_audit_groups", "Groups the spool writer wrote since start", registry=r,
        )

    def shadow_dropped_inc(self, model: str, version: int) -> None:
        self.shadow_dropped.labels(model, str(version)).inc()

    def for_version(self, model: str, version: int, sketched: bool = False) -> VersionMetrics:
        """The metrics of one version; counters survive a reload of the same version.

        ``sketched``: the version has a feature spec, so it counts drift rows.
        """
        labels = (model, str(version))
        triton = self._triton.setdefault(labels, TritonCounters())
        return VersionMetrics(
            triton=triton,
            request_seconds=self.request_seconds.labels(*labels),
            queue_seconds=self.queue_seconds.labels(*labels),
            compute_seconds=self.compute_seconds.labels(*labels),
            batch_rows=self.batch_rows.labels(*labels),
            drift_rows=self.drift_rows.labels(*labels) if sketched else None,
        )
