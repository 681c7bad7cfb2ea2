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
