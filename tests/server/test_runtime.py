"""ONNX Runtime sessions: provider choice, IO binding and signatures (in process)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from server.errors import ModelLoadError
from server.model_config import ModelSettings
from server.runtime import OnnxModel, choose_provider

from .onnx_models import add_sub_graph, mlp_graph, write_model


def test_choose_provider_prefers_cuda_when_offered() -> None:
    both = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_provider(("cuda", "cpu"), both) == "CUDAExecutionProvider"
    assert choose_provider(("cpu", "cuda"), both) == "CPUExecutionProvider"
    assert choose_provider(("cuda", "cpu"), ["CPUExecutionProvider"]) == "CPUExecutionProvider"
    assert choose_provider(("cuda",), ["CPUExecutionProvider"]) == "CPUExecutionProvider"


def test_io_binding_path_matches_plain_run(tmp_path: Path) -> None:
    """The CUDA path binds inputs/outputs; on CPU the same code must give equal answers."""
    path = write_model(tmp_path, "mlp", mlp_graph(), None)
    settings = ModelSettings(instance_count=2)
    plain = OnnxModel("mlp", 1, path, settings, io_binding=False)
    bound = OnnxModel("mlp", 1, path, settings, io_binding=True)
    feeds = {"INPUT": np.random.default_rng(1).standard_normal((64, 32)).astype(np.float32)}
    for instance in (0, 1):
        (want,) = plain.run(instance, feeds)
        (got,) = bound.run(instance, feeds)
        np.testing.assert_array_equal(got, want)
    assert plain.provider == "CPUExecutionProvider"


def test_signature_from_graph(tmp_path: Path) -> None:
    model = OnnxModel("add_sub", 1, write_model(tmp_path, "m", add_sub_graph(16), None),
                      ModelSettings())
    assert [(s.name, s.datatype.name, s.shape) for s in model.inputs] == [
        ("INPUT0", "FP32", (-1, 16)), ("INPUT1", "FP32", (-1, 16))
    ]
    assert model.output_names == ["OUTPUT0", "OUTPUT1"]
    assert len(model.sessions) == 1


def test_batching_needs_a_dynamic_first_dimension(tmp_path: Path) -> None:
    path = write_model(tmp_path, "m", add_sub_graph(16, batch=False), None)
    with pytest.raises(ModelLoadError, match="max_batch_size is 256 but tensor 'INPUT0' has "
                       r"shape \[16\] without a dynamic first"):
        OnnxModel("m", 1, path, ModelSettings())
    OnnxModel("m", 1, path, ModelSettings(max_batch_size=0)).warmup()


def test_score_output_must_exist(tmp_path: Path) -> None:
    path = write_model(tmp_path, "m", add_sub_graph(16), None)
    with pytest.raises(ModelLoadError, match="score_output 'nope' is not an output"):
        OnnxModel("m", 1, path, ModelSettings(score_output="nope"))


def test_missing_or_corrupt_artifact(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        OnnxModel("m", 1, tmp_path / "absent.onnx", ModelSettings())
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="model 'm' version 1: ONNX Runtime cannot load"):
        OnnxModel("m", 1, bad, ModelSettings())
