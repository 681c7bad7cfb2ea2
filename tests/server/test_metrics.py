"""Prometheus exposition: Triton's metric names, so existing dashboards keep working."""

from __future__ import annotations

import re

import numpy as np
import tritonclient.grpc as grpcclient

from .clientutil import make_inputs, metrics_text
from .process import ServerProcess

TRITON_COUNTERS = (
    "nv_inference_request_success",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_input_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us",
)


def test_triton_metric_names(server: ServerProcess) -> None:
    """Triton exposes e.g. ``nv_inference_count{model=..,version=..} N``, no ``_total``."""
    client = grpcclient.InferenceServerClient(server.url)
    a = np.ones((2, 16), np.float32)
    client.infer("add_sub", make_inputs({"INPUT0": a, "INPUT1": a}))
    text = metrics_text(server.metrics_port)
    missing = []
    for name in (*TRITON_COUNTERS, "nv_inference_pending_request_count"):
        sample = re.compile(rf'^{name}\{{[^}}]*model="add_sub"[^}}]*\}} ', re.M)
        if not sample.search(text):
            missing.append(name)
    assert not missing, f"not exposed under Triton's names: {missing}"


def test_loop_histograms_expose_what_prometheus_client_histograms_do() -> None:
    """``HistogramFamily`` (the event loop's plain bucket counts) gives the same
    ``_bucket`` / ``_count`` / ``_sum`` samples as prometheus-client's ``Histogram`` fed
    the same values: values on a bucket bound, between bounds, above the last one."""
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from server.metrics import HistogramFamily

    values = [0.0, 0.0001, 0.00011, 0.003, 0.25, 0.26, 7.0, 11.0, 1e9, 3, 2, 4096, 5000]
    for buckets in ((0.0001, 0.00025, 0.5, 10.0), (1, 2, 4, 4096)):
        ours, theirs = CollectorRegistry(), CollectorRegistry()
        family = HistogramFamily("x_seconds", "doc", buckets, ours)
        reference = Histogram("x_seconds", "doc", ("model", "version"), buckets=buckets,
                              registry=theirs)
        for labels in (("a", "1"), ("b", "2")):
            for v in values if labels[0] == "a" else values[:3]:
                family.labels(*labels).observe(v)
                reference.labels(*labels).observe(v)

        def samples(registry: CollectorRegistry) -> list[str]:
            return sorted(line for line in generate_latest(registry).decode().splitlines()
                          if line.startswith("x_seconds_") and "_created" not in line)

        assert samples(ours) == samples(theirs)
        assert any('le="+Inf"' in line for line in samples(ours))
