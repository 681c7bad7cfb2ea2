"""The models the serving benchmark drives, written into a Triton-style repository.

The default model is a small plain-ONNX MLP (30 FP32 features → 64 hidden ReLU →
1 sigmoid output), generated with a fixed seed so every run serves the same bytes.
The demo fraud model is added when its artifact exists.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
MLP_NAME = "mlp"
FRAUD_NAME = "fraud"


def serving_config(max_queue_size: int) -> dict[str, Any]:
    """The ``config.json`` every benchmarked model gets (see server/model_config.py)."""
    return {
        "max_batch_size": 1024,
        "max_queue_delay_us": 0,
        "max_queue_size": max_queue_size,
        "max_request_rows": 1 << 20,
        "instance_count": 1,
        "intra_op_threads": 1,
        "execution_providers": ["cpu"],
        "warmup_batch_sizes": [1, 256],
    }


def mlp_model(features: int = 30, hidden: int = 64, seed: int = 0) -> onnx.ModelProto:
    """INPUT [batch, features] FP32 → PROBABILITY [batch, 1] = sigmoid(relu(x·W1+b1)·W2+b2)."""
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((features, hidden)) / np.sqrt(features)).astype(np.float32)
    b1 = (rng.standard_normal(hidden) * 0.1).astype(np.float32)
    w2 = (rng.standard_normal((hidden, 1)) / np.sqrt(hidden)).astype(np.float32)
    b2 = np.array([0.05], dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["INPUT", "W1", "B1"], ["hidden"]),
            helper.make_node("Relu", ["hidden"], ["activated"]),
            helper.make_node("Gemm", ["activated", "W2", "B2"], ["logit"]),
            helper.make_node("Sigmoid", ["logit"], ["PROBABILITY"]),
        ],
        "bench_mlp",
        [helper.make_tensor_value_info("INPUT", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("PROBABILITY", TensorProto.FLOAT, ["batch", 1])],
        initializer=[
            numpy_helper.from_array(w1, "W1"),
            numpy_helper.from_array(b1, "B1"),
            numpy_helper.from_array(w2, "W2"),
            numpy_helper.from_array(b2, "B2"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_decided_mlp(repo: Path) -> Path:
    """The MLP as model ``mlp`` of ``repo``, with a declared score (PROBABILITY) and
    decision (>= 0.5), so that the audit log records a decision per row: what the audit
    and comparison benchmarks serve. Returns the ONNX file."""
    onnx_path = repo / MLP_NAME / "1" / "model.onnx"
    onnx_path.parent.mkdir(parents=True)
    onnx.save(mlp_model(), str(onnx_path))
    config = {**serving_config(1024), "score_output": "PROBABILITY",
              "decision": {"threshold": 0.5}}
    (repo / MLP_NAME / "config.json").write_text(json.dumps(config))
    return onnx_path


@dataclass(frozen=True)
class BenchModel:
    """One model of the benchmark repository: its served name and ONNX file."""

    name: str
    onnx_path: Path


def find_fraud_model(explicit: Path | None) -> Path | None:
    """The demo fraud model: ``explicit``, else ``$OSPREY_HOME`` or ``~/.osprey``, if present."""
    if explicit is not None:
        if not explicit.is_file():
            raise FileNotFoundError(f"--fraud-model {explicit}: no such file")
        return explicit
    home = Path(os.environ.get("OSPREY_HOME") or Path.home() / ".osprey")
    candidate = home / "models" / FRAUD_NAME / "1" / "model.onnx"
    return candidate if candidate.is_file() else None


def write_repository(
    root: Path, fraud_model: Path | None, max_queue_size: int
) -> list[BenchModel]:
    """Write ``<root>/<model>/1/model.onnx`` + ``config.json`` for every benchmarked model."""
    config = json.dumps(serving_config(max_queue_size), indent=2)
    models: list[BenchModel] = []
    mlp_path = root / MLP_NAME / "1" / "model.onnx"
    mlp_path.parent.mkdir(parents=True)
    onnx.save(mlp_model(), str(mlp_path))
    (root / MLP_NAME / "config.json").write_text(config)
    models.append(BenchModel(MLP_NAME, mlp_path))
    if fraud_model is not None:
        fraud_path = root / FRAUD_NAME / "1" / "model.onnx"
        fraud_path.parent.mkdir(parents=True)
        shutil.copyfile(fraud_model, fraud_path)
        (root / FRAUD_NAME / "config.json").write_text(config)
        models.append(BenchModel(FRAUD_NAME, fraud_path))
    return models
