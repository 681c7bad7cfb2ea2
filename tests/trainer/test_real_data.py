"""The demo model on the real ULB credit-card table (hours 0-36 train, 36-48 evaluate)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import native.transform_py as twin
from native.feature_spec import FeatureSpec
from native.reference_profile import ReferenceProfile
from trainer.datasets import FEATURE_NAMES, creditcard_csv_path, load_creditcard
from trainer.fraud_demo import PARITY_TOLERANCE, train_fraud_model, write_model_repository
from trainer.metrics import auprc
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

    # the serving path from the written version: raw held-out columns, the twin's
    # transform from feature_spec.json + reference_profile.json, the ONNX artifact
    version_dir = write_model_repository(model, tmp_path)
    spec = FeatureSpec.from_json((version_dir / "feature_spec.json").read_bytes())
    profile = ReferenceProfile.from_json((version_dir / "reference_profile.json").read_bytes())
    assert spec.column_names == FEATURE_NAMES and profile.rows == r.train_rows
    assert profile.score is not None and sum(profile.score.counts) == r.train_rows
    plan = twin.compile_plan(spec, profile)
    holdout = data.time_s >= 36 * 3600
    raw = data.features[holdout]
    columns = {name: raw[:, i:i + 1].copy() for i, name in enumerate(spec.column_names)}
    matrix, _ = twin.transform(plan, columns, raw.shape[0])
    used = model.matrix(raw)  # what training used (the Cython kernel where built)
    np.testing.assert_array_max_ulp(matrix, used, maxulp=1)
    scores, decisions = ort_score((version_dir / "model.onnx").read_bytes(), matrix)
    expected = model.estimator.predict_proba(used)[:, 1]
    diff = float(np.max(np.abs(scores - expected)))
    assert diff < PARITY_TOLERANCE
    assert int(np.count_nonzero(decisions != (expected >= model.threshold))) <= 1
    served = auprc(data.labels[holdout], scores.astype(np.float64))
    assert served == pytest.approx(r.auprc, abs=1e-4)
    evaluation = json.loads((version_dir / "evaluation.json").read_text())
    assert evaluation["auprc"] == r.auprc
    assert evaluation["ort_vs_sklearn_max_abs_diff"] < PARITY_TOLERANCE
    assert isinstance(evaluation["feature_spec_sha256"], str)
    print(f"AUPRC {r.auprc:.4f} (served path {served:.4f}), ROC-AUC {r.roc_auc:.4f}, "
          f"precision {r.precision_at_threshold:.3f}, recall {r.recall_at_threshold:.3f}, "
          f"threshold {r.threshold:.4g}, transform {r.feature_transform}")
