"""MLServer, the benchmark's peer, serves the very function of the bench MLP (bench/mlserver.py).

The scikit-learn artifact is checked against the ONNX model in ONNX Runtime, then the real
``mlserver start`` (parallel_workers 0, adaptive batching off) is asked with tritonclient
over gRPC. MLServer must be installed (``bash bench/mlserver_setup.sh``, which CI runs
before the tests): a missing venv fails here, it is never skipped.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient

from bench import mlserver
from bench.models import mlp_model

FEATURES = 30


@pytest.fixture(scope="module", autouse=True)
def mlserver_installed() -> None:
    try:
        mlserver.venv()
    except mlserver.MLServerMissing as exc:
        pytest.fail(f"MLServer is not installed: {exc}", pytrace=False)


def onnx_probability(x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(mlp_model().SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    (probability,) = session.run(["PROBABILITY"], {"INPUT": x})
    return np.asarray(probability)


def test_sklearn_artifact_computes_the_onnx_model(tmp_path: Path) -> None:
    model = mlserver.write_sklearn_mlp(tmp_path / "mlp")
    x = np.random.default_rng(1).standard_normal((500, FEATURES)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    script = (
        "import sys, joblib, numpy as np\n"
        "model = joblib.load(sys.argv[1])\n"
        "np.save(sys.argv[3], model.predict_proba(np.load(sys.argv[2])))\n"
    )
    out = subprocess.run(
        [str(mlserver.python()), "-c", script, str(model), str(tmp_path / "x.npy"),
         str(tmp_path / "p.npy")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    proba = np.load(tmp_path / "p.npy")
    assert proba.shape == (500, 2) and proba.dtype == np.float32
    expected = onnx_probability(x)
    np.testing.assert_allclose(proba[:, [mlserver.PROBABILITY_COLUMN]], expected,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)


def test_configurations_and_settings(tmp_path: Path) -> None:
    names = [c.name for c in mlserver.CONFIGURATIONS]
    assert len(set(names)) == 6 and "mlserver-w0-batch" in names, names
    repo = mlserver.write_mlserver_repository(tmp_path, parallel_workers=2,
                                              adaptive_batching=True)
    model = json.loads((repo / "mlp" / "model-settings.json").read_text())
    assert (model["max_batch_size"], model["max_batch_time"]) == (1024, 0.0005)
    assert model["parameters"]["extra"]["predict_fn"] == mlserver.OUTPUT_NAME
    assert json.loads((repo / "settings.json").read_text())["parallel_workers"] == 2
    assert mlserver.command(repo)[-2:] == ["start", str(repo)]


def test_mlserver_answers_the_onnx_probability(tmp_path: Path) -> None:
    repo = mlserver.write_mlserver_repository(tmp_path / "repo", parallel_workers=0,
                                              adaptive_batching=False)
    work = tmp_path / "work"
    work.mkdir()
    rng = np.random.default_rng(7)
    batches = [rng.standard_normal((rows, FEATURES)).astype(np.float32)
               for rows in (1, 1, 1, 256, 256)]
    with mlserver.MLServerProcess(repo, work, prefix=[]) as server:
        address = server.wait_ready(timeout=60)
        with grpcclient.InferenceServerClient(address) as client:
            for x in batches:
                infer_input = grpcclient.InferInput(mlserver.INPUT_NAME, list(x.shape), "FP32")
                infer_input.set_data_from_numpy(x)
                result = client.infer(mlserver.MODEL_NAME, [infer_input])
                output = result.get_output(mlserver.OUTPUT_NAME)
                assert output is not None, result.get_response()
                assert output.datatype == "FP32" and list(output.shape) == [len(x), 2]
                proba = result.as_numpy(mlserver.OUTPUT_NAME)
                np.testing.assert_allclose(proba[:, [mlserver.PROBABILITY_COLUMN]],
                                           onnx_probability(x), rtol=1e-5, atol=1e-6)
    assert server.exit_code == 0, server.stderr_tail()
