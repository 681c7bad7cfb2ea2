"""The demo model on the real ULB credit-card table (hours 0-36 train, 36-48 evaluate)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from trainer.datasets import creditcard_csv_path, load_creditcard
from trainer.fraud_demo import PARITY_TOLERANCE, train_fraud_model, write_model_repository
from trainer.onnx_export import ort_score

pytestmark = pytest.mark.slow


def test_real_data_auprc_and_parity(tmp_path: Path) -> None:
    creditcard_csv_path()  # DatasetNotInstalled names the install command (never a skip)
    data = load_creditcard()
    assert data.rows == 284_807 and data.frauds == 492
    assert data.features.shape == (284_807, 29) and "Time" not in data.feature_names

    model = train_fraud_model(data)
    r = model.report
    assert r.train_window_s == [0.0, 36 * 3600.0] and r.eval_window_s == [36 * 3600.0, 48 * 3600.0]
    assert r.train_rows + r.eval_rows == data.rows
    assert r.train_fraud + r.eval_fraud == data.frauds
    assert r.auprc >= 0.6, f"AUPRC {r.auprc:.4f} on hours 36-48"
    assert r.precision_at_threshold > 0.5 and r.recall_at_threshold > 0.5

    # parity, checked again here from the written artifact on the evaluation rows
    version_dir = write_model_repository(model, tmp_path)
    holdout = data.time_s >= 36 * 3600
    scores, decisions = ort_score((version_dir / "model.onnx").read_bytes(), data.features[holdout])
    expected = model.estimator.predict_proba(data.features[holdout])[:, 1]
    diff = float(np.max(np.abs(scores - expected)))
    assert diff < PARITY_TOLERANCE
    assert int(np.count_nonzero(decisions != (expected >= model.threshold))) <= 1
    evaluation = json.loads((version_dir / "evaluation.json").read_text())
    assert evaluation["auprc"] == r.auprc
    assert evaluation["ort_vs_sklearn_max_abs_diff"] < PARITY_TOLERANCE
