"""More ONNX test models: controllable work, a dynamic second dimension, run-time failure.

Separate from ``onnx_models`` (whose models the shared repository uses) so that the
batching, error and lifecycle tests can add models without touching shared fixtures.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def sleep_graph(size: int = 192) -> onnx.GraphProto:
    """OUTPUT = INPUT, after ``max(WORK)`` rounds of a [size x size] product.

    Inputs ``INPUT`` FP32 [batch, 1] and ``WORK`` INT64 [batch, 1]. The number of
    rounds comes from the data (a Loop trip count), so one model gives cheap warmups
    (WORK = 0) and executions as long as a test needs: a reliable way to keep a model
    busy, fill its queue and pass deadlines.
    """
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((size, size)) / np.sqrt(size)).astype(np.float32)
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("MatMul", ["h_in", "W"], ["p"]),
            helper.make_node("Tanh", ["p"], ["h_out"]),
        ],
        "round",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("h_in", TensorProto.FLOAT, [size, size]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [size, size]),
        ],
    )
    nodes = [
        helper.make_node("ReduceMax", ["WORK"], ["rounds"], keepdims=0),
        helper.make_node("Loop", ["rounds", "", "W"], ["h"], body=body),
        helper.make_node("ReduceSum", ["h"], ["s"], keepdims=0),
        helper.make_node("Mul", ["s", "zero"], ["z"]),
        helper.make_node("Add", ["INPUT", "z"], ["OUTPUT"]),
    ]
    return helper.make_graph(
        nodes,
        "sleep",
        [
            helper.make_tensor_value_info("INPUT", TensorProto.FLOAT, ["batch", 1]),
            helper.make_tensor_value_info("WORK", TensorProto.INT64, ["batch", 1]),
        ],
        [helper.make_tensor_value_info("OUTPUT", TensorProto.FLOAT, ["batch", 1])],
        initializer=[
            numpy_helper.from_array(w, "W"),
            numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
        ],
    )


def dynamic_width_graph() -> onnx.GraphProto:
    """``INPUT`` FP32 [batch, width] (width dynamic) -> ``SUM`` [batch, 1], ``DOUBLE``.

    Two requests of different widths cannot be concatenated into one batch.
    """
    return helper.make_graph(
        [
            helper.make_node("ReduceSum", ["INPUT", "axes"], ["SUM"], keepdims=1),
            helper.make_node("Add", ["INPUT", "INPUT"], ["DOUBLE"]),
        ],
        "dynamic_width",
        [helper.make_tensor_value_info("INPUT", TensorProto.FLOAT, ["batch", "width"])],
        [
            helper.make_tensor_value_info("SUM", TensorProto.FLOAT, ["batch", 1]),
            helper.make_tensor_value_info("DOUBLE", TensorProto.FLOAT, ["batch", "width"]),
        ],
        initializer=[numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")],
    )


def gather_graph(table: int = 4) -> onnx.GraphProto:
    """``OUTPUT`` = a fixed table looked up at ``INDEX`` (INT64 [batch, 1]).

    An index outside ``[-table, table)`` makes ONNX Runtime fail at run time: a real
    way to reach the server's "unexpected error" path. Warmup (index 0) succeeds.
    """
    values = np.arange(table, dtype=np.float32) * 10
    return helper.make_graph(
        [helper.make_node("Gather", ["TABLE", "INDEX"], ["OUTPUT"], axis=0)],
        "gather",
        [helper.make_tensor_value_info("INDEX", TensorProto.INT64, ["batch", 1])],
        [helper.make_tensor_value_info("OUTPUT", TensorProto.FLOAT, ["batch", 1])],
        initializer=[numpy_helper.from_array(values, "TABLE")],
    )
