"""Per-version inference statistics, Triton's fields, fed from the batcher and core.

Everything here is updated on the event-loop thread, so plain integers suffice.
The same calls feed the version's Prometheus metrics (``server.metrics``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .metrics import VersionMetrics


@dataclass
class Duration:
    """Triton's StatisticDuration: a count and cumulative nanoseconds."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns


@dataclass
class BatchDurations:
    """Compute durations of executions of one batch size."""

    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass(frozen=True)
class ExecutionTiming:
    """What one execution (batch) cost, measured in the inference thread."""

    rows: int
    input_ns: int  # packing (and the feature transform, for a version with a spec)
    infer_ns: int
    output_ns: int
    sketched_rows: int = 0  # rows counted into the drift sketch


class VersionStats:
    """Triton ModelStatistics of one version (counts that really move)."""

    def __init__(self, metrics: VersionMetrics, model: str, version: int) -> None:
        self.metrics = metrics
        self.model = model
        self.version = version
        self.last_inference_ms = 0
        self.inference_count = 0
        self.execution_count = 0
        self.success = Duration()
        self.fail = Duration()
        self.queue = Duration()
        self.compute_input = Duration()
        self.compute_infer = Duration()
        self.compute_output = Duration()
        self.batches: dict[int, BatchDurations] = {}
        self.pending = 0

    def queued(self, delta: int) -> None:
        self.pending += delta
        self.metrics.triton.pending = self.pending

    def execution(self, timing: ExecutionTiming, requests: int, counted: int | None = None) -> None:
        """One batch ran with ``requests`` requests (or chunks of split requests) in it.

        ``counted`` of them are requests or the first chunk of a split request: the
        compute counts move by requests, as Triton's do, while every chunk's share of
        the time adds to the durations.
        """
        counted = requests if counted is None else counted
        self.execution_count += 1
        self.inference_count += timing.rows
        self.last_inference_ms = time.time_ns() // 1_000_000
        b = self.batches.setdefault(timing.rows, BatchDurations())
        b.compute_input.add(timing.input_ns)
        b.compute_infer.add(timing.infer_ns)
        b.compute_output.add(timing.output_ns)
        # Triton attributes an execution's compute time to every request in it.
        self.compute_input.add(timing.input_ns * requests, counted)
        self.compute_infer.add(timing.infer_ns * requests, counted)
        self.compute_output.add(timing.output_ns * requests, counted)
        m = self.metrics
        t = m.triton
        t.exec_count += 1
        t.inference_count += timing.rows
        t.compute_input_us += timing.input_ns * requests / 1000
        t.compute_infer_us += timing.infer_ns * requests / 1000
        t.compute_output_us += timing.output_ns * requests / 1000
        m.compute_seconds.observe((timing.input_ns + timing.infer_ns + timing.output_ns) / 1e9)
        m.batch_rows.observe(timing.rows)
        if timing.sketched_rows and m.drift_rows is not None:
            m.drift_rows.inc(timing.sketched_rows)

    def waited(self, queue_ns: int) -> None:
        """A request left the queue for execution after ``queue_ns``."""
        self.queue.add(queue_ns)
        self.metrics.triton.queue_us += queue_ns / 1000
        self.metrics.queue_seconds.observe(queue_ns / 1e9)

    def succeeded(self, request_ns: int) -> None:
        self.success.add(request_ns)
        m = self.metrics
        m.triton.success += 1
        m.triton.request_us += request_ns / 1000
        m.request_seconds.observe(request_ns / 1e9)

    def failed(self, request_ns: int, reason: str) -> None:
        self.fail.add(request_ns)
        failures = self.metrics.triton.failures
        failures[reason] = failures.get(reason, 0) + 1
