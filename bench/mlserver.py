"""MLServer (Seldon, 1.7.1) serving the benchmark MLP as a scikit-learn model: a peer to Osprey.

    bash bench/mlserver_setup.sh        # or: make mlserver (a venv of its own, .venv-mlserver)

The model is the very function of ``bench.models.mlp_model()`` (30 FP32 features → 64 ReLU
→ 1 sigmoid), rebuilt as a fitted ``sklearn.neural_network.MLPClassifier`` from the ONNX
initializers and saved with joblib by the MLServer venv's own python (the pickle must be
loaded by the scikit-learn that wrote it). MLServer's ``mlserver_sklearn.SKLearnModel``
serves it with ``predict_fn`` = ``predict_proba``, so a request that names no output gets:

* request: one input, any name (MLServer decodes the single input as a NumPy array
  whatever it is called; ``INPUT_NAME`` keeps Osprey's), ``FP32``, shape ``[rows, 30]``,
  raw contents as tritonclient sends them;
* answer: output ``predict_proba`` (``OUTPUT_NAME``), ``FP32``, shape ``[rows, 2]``:
  column 0 is 1 - p, column 1 (``PROBABILITY_COLUMN``) is the ONNX model's PROBABILITY.

MLServer logs the ports it was configured with, not the ones it bound, so the ports are
chosen free here and written into settings.json; readiness is polled over gRPC
(``ModelReady``). Adaptive batching groups *requests* (``max_batch_size`` counts requests,
not rows), waiting up to ``max_batch_time`` seconds; ``parallel_workers`` 0 runs inference
in the server's own event loop, N > 0 in N worker processes fed over IPC (their CPU is
counted by ``MLServerProcess.cpu_seconds``).

Unary only: MLServer's ``ModelStreamInfer`` answers with ``ModelInferResponse`` messages,
not Triton's ``ModelStreamInferResponse``, so tritonclient reads field 1 (``model_name``)
as ``error_message`` and reports the error "mlp"; it also answers only the first request
of a stream (``MLModel.predict_stream``), and adaptive batching does not apply to it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from onnx import numpy_helper
from tritonclient.utils import InferenceServerException

from .machine import tree_cpu_seconds
from .models import MLP_NAME, mlp_model
from .server_process import REPO_ROOT, BenchServer, ServerFailed

MLSERVER_VERSION = "1.7.1"
SETUP_COMMAND = "bash bench/mlserver_setup.sh (or: make mlserver)"
DEFAULT_VENV = REPO_ROOT / ".venv-mlserver"
MODEL_NAME = MLP_NAME
INPUT_NAME = "INPUT"
OUTPUT_NAME = "predict_proba"
PROBABILITY_COLUMN = 1
HOST = "127.0.0.1"

# Run by the MLServer venv's python: argv[1] the weights (.npz), argv[2] the joblib to write.
_BUILD_SCRIPT = """
import sys
import joblib
import numpy as np
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import LabelBinarizer

weights = np.load(sys.argv[1])
w1, b1, w2, b2 = (weights[name] for name in ("W1", "B1", "W2", "B2"))
model = MLPClassifier(hidden_layer_sizes=(w1.shape[1],), activation="relu")
# What fit() would leave on a binary classifier: predict_proba(x)[:, 1] is
# sigmoid(relu(x @ W1 + B1) @ W2 + B2), in float32 like the weights.
model.coefs_ = [w1, w2]
model.intercepts_ = [b1, b2]
model.n_layers_ = 3
model.n_outputs_ = 1
model.out_activation_ = "logistic"
model.classes_ = np.array([0, 1])
model._label_binarizer = LabelBinarizer().fit(model.classes_)
model.n_features_in_ = w1.shape[0]
model.n_iter_ = 0
joblib.dump(model, sys.argv[2])
"""


class MLServerMissing(RuntimeError):
    """The MLServer venv is not there (run the setup script)."""


@dataclass(frozen=True)
class Configuration:
    """One way to run MLServer: worker processes and adaptive batching."""

    name: str
    parallel_workers: int
    adaptive_batching: bool


CONFIGURATIONS = [
    Configuration(f"mlserver-w{workers}-{'batch' if batching else 'nobatch'}", workers, batching)
    for workers in (0, 1, 2)
    for batching in (True, False)
]


def venv() -> Path:
    """The MLServer venv ($MLSERVER_VENV, default .venv-mlserver), checked to hold mlserver."""
    path = Path(os.environ.get("MLSERVER_VENV") or DEFAULT_VENV)
    if not path.is_absolute():
        path = REPO_ROOT / path
    if not (path / "bin" / "mlserver").is_file():
        raise MLServerMissing(f"no MLServer in {path}: run {SETUP_COMMAND}")
    return path


def python() -> Path:
    return venv() / "bin" / "python"


def command(repo: Path) -> list[str]:
    """The command line that serves the repository ``write_mlserver_repository`` made."""
    return [str(venv() / "bin" / "mlserver"), "start", str(repo)]


def write_sklearn_mlp(folder: Path) -> Path:
    """``<folder>/model.joblib``: bench.models.mlp_model() as a fitted MLPClassifier."""
    weights = {t.name: numpy_helper.to_array(t) for t in mlp_model().graph.initializer}
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "model.joblib"
    with tempfile.TemporaryDirectory() as tmp:
        npz = Path(tmp) / "weights.npz"
        np.savez(npz, W1=weights["W1"], B1=weights["B1"], W2=weights["W2"], B2=weights["B2"])
        run = subprocess.run([str(python()), "-c", _BUILD_SCRIPT, str(npz), str(out)],
                             capture_output=True, text=True, timeout=120)
    if run.returncode != 0:
        raise RuntimeError(f"building {out} failed ({run.returncode}):\n{run.stderr}")
    return out


def free_port() -> int:
    """A port nothing listens on now (MLServer binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def write_mlserver_repository(
    root: Path,
    *,
    parallel_workers: int,
    adaptive_batching: bool,
    max_batch_size: int = 1024,
    max_batch_time_s: float = 0.0005,
) -> Path:
    """``<root>/settings.json`` and ``<root>/mlp/{model-settings.json,model.joblib}``; returns
    ``root``. Ports are free ones on 127.0.0.1 (``grpc_address`` reads them back); metrics
    are served on a port of their own, as MLServer does by default."""
    root.mkdir(parents=True, exist_ok=True)
    model_dir = root / MODEL_NAME
    joblib_path = write_sklearn_mlp(model_dir)
    settings = {
        "debug": False,  # True (the default) adds an access-log interceptor and DEBUG logs
        "host": HOST,
        "http_port": free_port(),
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "metrics_dir": str(root / ".metrics"),
        "environments_dir": str(root / ".envs"),
        "model_repository_root": str(root),
        "parallel_workers": parallel_workers,
        "logging_settings": {
            "version": 1,
            "disable_existing_loggers": False,
            "loggers": {name: {"level": "WARNING"} for name in (
                "mlserver", "uvicorn", "uvicorn.access", "uvicorn.error")},
        },
    }
    model_settings: dict[str, object] = {
        "name": MODEL_NAME,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": str(joblib_path), "extra": {"predict_fn": OUTPUT_NAME}},
    }
    if adaptive_batching:
        model_settings["max_batch_size"] = max_batch_size
        model_settings["max_batch_time"] = max_batch_time_s
    (root / "settings.json").write_text(json.dumps(settings, indent=2))
    (model_dir / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
    return root


def grpc_address(repo: Path) -> str:
    """``host:port`` of the gRPC endpoint written into ``<repo>/settings.json``."""
    settings = json.loads((repo / "settings.json").read_text())
    return f"{settings['host']}:{settings['grpc_port']}"


class MLServerProcess(BenchServer):
    """``mlserver start <repo>`` with the bench harness's files, pinning prefix and stop."""

    def __init__(self, repo: Path, workdir: Path, prefix: list[str]) -> None:
        super().__init__(repo, workdir, prefix, "WARNING", command=command(repo))
        self.repo = repo

    def wait_ready(self, timeout: float = 120.0) -> str:
        """Block until model ``mlp`` answers ModelReady; returns the gRPC address."""
        address = grpc_address(self.repo)
        deadline = time.monotonic() + timeout
        with grpcclient.InferenceServerClient(address) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise ServerFailed(
                        f"mlserver exited with {self.proc.returncode} before it was ready:\n"
                        f"{self.stderr_tail()}\n{self.stdout_path.read_text()[-4000:]}"
                    )
                try:
                    if client.is_model_ready(MODEL_NAME):
                        self.url = address
                        return address
                except InferenceServerException:
                    pass
                time.sleep(0.1)
        raise ServerFailed(f"mlserver not ready after {timeout:.0f}s:\n{self.stderr_tail()}")

    def cpu_seconds(self) -> float:
        """CPU time of the server and its live descendants (the parallel inference workers
        run in child processes); NaN once the server is gone."""
        try:
            return tree_cpu_seconds(self.proc.pid)
        except (OSError, ValueError, IndexError):
            return float("nan")
