"""``osprey demo`` end to end on the real ULB data: train once, serve, score, reuse."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from sklearn.metrics import average_precision_score
from tritonclient.utils import InferenceServerException

from native.feature_spec import FeatureSpec
from trainer.datasets import load_creditcard

from .process import READY, REPO_ROOT

pytestmark = pytest.mark.slow


def _start_demo(home: Path) -> tuple[subprocess.Popen[str], int, list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "demo", "--home", str(home),
         "--grpc-port", "0", "--metrics-port", "0"],
        cwd=REPO_ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    for line in proc.stdout:
        lines.append(line)
        match = READY.search(line)
        if match:
            return proc, int(match.group("grpc")), lines
    proc.wait(10)
    raise AssertionError("demo exited before it was ready:\n" + "".join(lines))


def _stop(proc: subprocess.Popen[str]) -> int:
    proc.terminate()
    try:
        return proc.wait(60)
    finally:
        if proc.stdout is not None:
            proc.stdout.close()


def test_demo_trains_serves_and_reuses(tmp_path: Path) -> None:
    data = load_creditcard()
    held_out = data.time_s >= 36 * 3600
    raw = data.features[held_out]
    labels = data.labels[held_out]

    proc, port, lines = _start_demo(tmp_path)
    try:
        version_dir = tmp_path / "models/fraud/1"
        evaluation = json.loads((version_dir / "evaluation.json").read_text())
        assert evaluation["auprc"] >= 0.6
        spec = FeatureSpec.from_json((version_dir / "feature_spec.json").read_bytes())
        assert spec.column_names == tuple(data.feature_names)  # V1..V28, Amount
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        # the version has a spec: its inputs are the raw columns, one [-1, 1] FP32 each
        metadata = client.get_model_metadata("fraud")
        assert [(i.name, i.datatype, list(i.shape)) for i in metadata.inputs] == [
            (name, "FP32", [-1, 1]) for name in spec.column_names
        ]
        tensors = []
        for name in spec.column_names:
            column = np.ascontiguousarray(raw[:, [data.feature_names.index(name)]])
            tensors.append(grpcclient.InferInput(name, list(column.shape), "FP32"))
            tensors[-1].set_data_from_numpy(column)
        # ~92k rows in one request: transformed, split into 1024-row batches, reassembled.
        result = client.infer("fraud", tensors, client_timeout=120)
        scores = result.as_numpy("fraud_score")
        decisions = result.as_numpy("fraud_decision")
        assert scores.shape == (len(labels), 1) and decisions.dtype == np.bool_
        served_auprc = average_precision_score(labels, scores[:, 0])
        # 1024-row batches may differ from the evaluation run by an ulp per score.
        assert served_auprc == pytest.approx(evaluation["auprc"], abs=1e-4)
        np.testing.assert_array_equal(decisions[:, 0], scores[:, 0] >= evaluation["threshold"])
        # control RPCs need the admin token the demo generated (and named, never printed)
        token_file = tmp_path / "admin.token"
        assert token_file.stat().st_mode & 0o777 == 0o600
        token = token_file.read_text().strip()
        assert any(str(token_file) in line for line in lines), "".join(lines)
        with pytest.raises(InferenceServerException) as err:
            client.unload_model("fraud")
        assert err.value.status() == "StatusCode.UNAUTHENTICATED"
        client.load_model("fraud", headers={"authorization": "Bearer " + token})
    finally:
        assert _stop(proc) == 0
    assert not any(token in line for line in lines)

    proc, _, lines = _start_demo(tmp_path)
    assert _stop(proc) == 0
    assert any("reusing demo model" in line for line in lines), "".join(lines)
