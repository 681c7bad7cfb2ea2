"""The shared server starts and answers a basic inference (the other files go deeper)."""

from __future__ import annotations

import numpy as np
import tritonclient.grpc as grpcclient

from .process import ServerProcess


def test_add_sub_roundtrip(server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(server.url)
    a = np.arange(32, dtype=np.float32).reshape(2, 16)
    b = np.ones((2, 16), dtype=np.float32)
    inputs = [
        grpcclient.InferInput("INPUT0", [2, 16], "FP32"),
        grpcclient.InferInput("INPUT1", [2, 16], "FP32"),
    ]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    result = client.infer("add_sub", inputs, request_id="r1")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    assert result.get_response().id == "r1"
    assert result.get_response().parameters["osprey_decision_id"].string_param
