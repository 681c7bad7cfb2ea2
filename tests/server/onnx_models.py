"""Small ONNX models written into Triton-style repositories for the server tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17

# KServe datatype -> ONNX element type, for the identity models.
ONNX_TYPES = {
    "BOOL": TensorProto.BOOL,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}


def _save(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def write_model(
    repo: Path, name: str, graph: onnx.GraphProto, config: dict[str, Any] | None, version: int = 1
) -> Path:
    """Write ``<repo>/<name>/<version>/model.onnx`` and, if given, its config.json."""
    path = repo / name / str(version) / "model.onnx"
    _save(graph, path)
    if config is not None:
        (repo / name / "config.json").write_text(json.dumps(config))
    return path


def add_sub_graph(width: int = 16, batch: bool = True) -> onnx.GraphProto:
    """OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1 (Triton's 'simple')."""
    dims: list[Any] = ["batch", width] if batch else [width]
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, dims) for n in ("INPUT0", "INPUT1")]
    outs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, dims) for n in ("OUTPUT0", "OUTPUT1")
    ]
    nodes = [
        helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
        helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"]),
    ]
    return helper.make_graph(nodes, "add_sub", ins, outs)


def identity_graph(datatype: str, width: int = 4) -> onnx.GraphProto:
    """OUTPUT = INPUT for one datatype, shape [batch, width]."""
    t = ONNX_TYPES[datatype]
    return helper.make_graph(
        [helper.make_node("Identity", ["INPUT"], ["OUTPUT"])],
        f"identity_{datatype.lower()}",
        [helper.make_tensor_value_info("INPUT", t, ["batch", width])],
        [helper.make_tensor_value_info("OUTPUT", t, ["batch", width])],
    )


def slow_graph(matmuls: int = 12, size: int = 384) -> onnx.GraphProto:
    """OUTPUT = INPUT, after ``matmuls`` [size x size] products that depend on the input.

    The chain cannot be constant-folded, so each execution costs a fixed, noticeable
    time whatever the batch size: handy for filling queues and passing deadlines.
    """
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((size, size)) / size).astype(np.float32)
    nodes = [
        helper.make_node("ReduceMean", ["INPUT"], ["m"], keepdims=0),
        helper.make_node("Mul", ["m", "W"], ["h0"]),
    ]
    for i in range(matmuls):
        nodes.append(helper.make_node("MatMul", [f"h{i}", "W"], [f"h{i + 1}"]))
    nodes += [
        helper.make_node("ReduceSum", [f"h{matmuls}"], ["s"], keepdims=0),
        helper.make_node("Mul", ["s", "zero"], ["z"]),
        helper.make_node("Add", ["INPUT", "z"], ["OUTPUT"]),
    ]
    return helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("INPUT", TensorProto.FLOAT, ["batch", 1])],
        [helper.make_tensor_value_info("OUTPUT", TensorProto.FLOAT, ["batch", 1])],
        initializer=[
            numpy_helper.from_array(w, "W"),
            numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
        ],
    )


def mlp_graph(features: int = 32, hidden: int = 64, seed: int = 0) -> onnx.GraphProto:
    """A two-layer MLP: [batch, features] FP32 -> probability [batch, 1]."""
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((features, hidden)) / np.sqrt(features)).astype(np.float32)
    b1 = rng.standard_normal(hidden).astype(np.float32) * 0.1
    w2 = (rng.standard_normal((hidden, 1)) / np.sqrt(hidden)).astype(np.float32)
    nodes = [
        helper.make_node("Gemm", ["INPUT", "W1", "B1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "W2"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["PROBABILITY"]),
    ]
    return helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("INPUT", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("PROBABILITY", TensorProto.FLOAT, ["batch", 1])],
        initializer=[
            numpy_helper.from_array(w1, "W1"),
            numpy_helper.from_array(b1, "B1"),
            numpy_helper.from_array(w2, "W2"),
        ],
    )


def offset_graph(offset: float) -> onnx.GraphProto:
    """OUTPUT = INPUT + offset, FP32 [batch, 1]: tells model versions apart by their answer."""
    return helper.make_graph(
        [helper.make_node("Add", ["INPUT", "OFFSET"], ["OUTPUT"])],
        "offset",
        [helper.make_tensor_value_info("INPUT", TensorProto.FLOAT, ["batch", 1])],
        [helper.make_tensor_value_info("OUTPUT", TensorProto.FLOAT, ["batch", 1])],
        initializer=[numpy_helper.from_array(np.array([offset], dtype=np.float32), "OFFSET")],
    )


def identity_bf16_graph(width: int = 4) -> onnx.GraphProto:
    """OUTPUT = INPUT in bfloat16, shape [batch, width] (kept out of ONNX_TYPES on purpose:
    the shared repository must not hold it)."""
    t = TensorProto.BFLOAT16
    return helper.make_graph(
        [helper.make_node("Identity", ["INPUT"], ["OUTPUT"])],
        "identity_bf16",
        [helper.make_tensor_value_info("INPUT", t, ["batch", width])],
        [helper.make_tensor_value_info("OUTPUT", t, ["batch", width])],
    )


def features_graph(width: int, seed: int = 0) -> onnx.GraphProto:
    """A model on a feature spec's matrix: INPUT FP32 [batch, width] ->
    FEATURES = INPUT (the matrix itself, to check the transform) and
    SCORE = Sigmoid(INPUT @ W + B) [batch, 1] with fixed weights."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((width, 1)) / np.sqrt(width)).astype(np.float32)
    b = np.array([0.1], dtype=np.float32)
    nodes = [
        helper.make_node("Identity", ["INPUT"], ["FEATURES"]),
        helper.make_node("MatMul", ["INPUT", "W"], ["logit"]),
        helper.make_node("Add", ["logit", "B"], ["shifted"]),
        helper.make_node("Sigmoid", ["shifted"], ["SCORE"]),
    ]
    return helper.make_graph(
        nodes,
        "features",
        [helper.make_tensor_value_info("INPUT", TensorProto.FLOAT, ["batch", width])],
        [
            helper.make_tensor_value_info("FEATURES", TensorProto.FLOAT, ["batch", width]),
            helper.make_tensor_value_info("SCORE", TensorProto.FLOAT, ["batch", 1]),
        ],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
