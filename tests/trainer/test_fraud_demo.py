"""Training, windows, ONNX export and ORT parity on synthetic data."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from trainer.datasets import CreditCardData
from trainer.fraud_demo import PARITY_TOLERANCE, TrainedFraudModel, train_fraud_model
from trainer.onnx_export import ort_score

from .synthetic import FAST_PARAMS, make_synthetic

HOUR = 3600.0


def dims(value_info: onnx.ValueInfoProto) -> list[str | int]:
    shape = value_info.type.tensor_type.shape.dim
    return [d.dim_param or d.dim_value for d in shape]


def test_windows_and_counts(trained: TrainedFraudModel, synthetic: CreditCardData) -> None:
    r = trained.report
    assert r.train_window_s == [0.0, 36 * HOUR]
    assert r.validation_window_s == [30 * HOUR, 36 * HOUR]
    assert r.eval_window_s == [36 * HOUR, 48 * HOUR]
    train = synthetic.time_s < 36 * HOUR
    assert r.train_rows == int(train.sum()) and r.eval_rows == int((~train).sum())
    assert r.train_fraud == int(synthetic.labels[train].sum())
    assert r.eval_fraud == int(synthetic.labels[~train].sum())
    validation = (synthetic.time_s >= 30 * HOUR) & train
    assert r.validation_rows == int(validation.sum())
    assert r.raw_columns == synthetic.feature_names == trained.raw_columns
    # every raw column emits one VALUE feature, named like the column
    assert r.feature_names == synthetic.feature_names == trained.feature_names
    assert r.model_family == "HistGradientBoostingClassifier"
    assert r.model_params["max_iter"] == FAST_PARAMS["max_iter"]
    assert r.model_params["random_state"] == 0


def test_quality_and_threshold(trained: TrainedFraudModel) -> None:
    r = trained.report
    assert r.auprc > 0.5 and r.roc_auc > 0.85  # the synthetic rule is learnable
    assert 0.0 < trained.threshold < 1.0
    assert trained.threshold == float(np.float32(trained.threshold)) == r.threshold
    assert 0.0 < r.precision_at_threshold <= 1.0 and 0.0 < r.recall_at_threshold <= 1.0


def test_onnx_signature(trained: TrainedFraudModel) -> None:
    model = onnx.load_from_string(trained.onnx_bytes)
    onnx.checker.check_model(model, full_check=True)
    g = model.graph
    assert [i.name for i in g.input] == ["features"]
    assert g.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert dims(g.input[0]) == ["batch", 29]
    assert [o.name for o in g.output] == ["fraud_score", "fraud_decision"]
    assert g.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert g.output[1].type.tensor_type.elem_type == TensorProto.BOOL
    assert dims(g.output[0]) == dims(g.output[1]) == ["batch", 1]
    baked = [
        numpy_helper.to_array(i) for i in g.initializer if i.name == "fraud_decision__threshold"
    ]
    assert len(baked) == 1 and baked[0].dtype == np.float32
    assert float(baked[0]) == trained.threshold
    assert len({op.domain for op in model.opset_import}) == len(model.opset_import)
    props = {p.key: p.value for p in model.metadata_props}
    assert props["feature_names"].split(",") == trained.feature_names
    assert props["raw_columns"].split(",") == trained.raw_columns
    assert props["feature_spec_sha256"] == hashlib.sha256(trained.feature_spec_bytes).hexdigest()
    assert float(props["threshold"]) == trained.threshold


def test_ort_matches_sklearn(trained: TrainedFraudModel, synthetic: CreditCardData) -> None:
    raw = synthetic.features.copy()
    raw[::97, 5] = np.nan  # imputed by the spec
    features = trained.matrix(raw)
    assert not np.isnan(features).any()
    features[::89, 7] = np.nan  # a NaN reaching the model takes the same branch in both
    expected = trained.estimator.predict_proba(features)[:, 1]
    scores, decisions = ort_score(trained.onnx_bytes, features)
    assert scores.shape == decisions.shape == (synthetic.rows,)
    assert float(np.max(np.abs(scores - expected))) < PARITY_TOLERANCE
    np.testing.assert_array_equal(decisions, scores >= np.float32(trained.threshold))
    # one row at a time (batch 1) gives the same answers, up to float32 summation order
    one, _ = ort_score(trained.onnx_bytes, features[:1])
    assert one[0] == pytest.approx(float(scores[0]), abs=1e-6)
    r = trained.report
    assert r.ort_vs_sklearn_max_abs_diff < PARITY_TOLERANCE
    assert r.ort_vs_sklearn_decision_mismatches == 0
    assert r.parity_rows == r.eval_rows


def test_logistic_regression_family_exports() -> None:
    data = make_synthetic(rows=3000, seed=3)
    model = train_fraud_model(data, family="logistic_regression")
    assert model.report.model_family == "StandardScaler+LogisticRegression"
    assert model.report.ort_vs_sklearn_max_abs_diff < PARITY_TOLERANCE
    matrix = model.matrix(data.features)
    scores, _ = ort_score(model.onnx_bytes, matrix)
    expected = model.estimator.predict_proba(matrix)[:, 1]
    assert float(np.max(np.abs(scores - expected))) < PARITY_TOLERANCE


def test_custom_windows(synthetic: CreditCardData) -> None:
    model = train_fraud_model(
        synthetic,
        train_end_s=24 * HOUR,
        validation_s=8 * HOUR,
        eval_end_s=40 * HOUR,
        params=FAST_PARAMS,
    )
    r = model.report
    assert r.train_window_s == [0.0, 24 * HOUR]
    assert r.validation_window_s == [16 * HOUR, 24 * HOUR]
    assert r.eval_window_s == [24 * HOUR, 40 * HOUR]
    in_eval = (synthetic.time_s >= 24 * HOUR) & (synthetic.time_s < 40 * HOUR)
    assert r.eval_rows == int(in_eval.sum())


def test_window_without_fraud_is_an_error(synthetic: CreditCardData) -> None:
    labels = synthetic.labels.copy()
    labels[synthetic.time_s >= 36 * HOUR] = 0
    data = CreditCardData(synthetic.time_s, synthetic.features, labels, synthetic.feature_names)
    with pytest.raises(ValueError, match="evaluation window"):
        train_fraud_model(data, params=FAST_PARAMS)
    with pytest.raises(ValueError, match="validation_s"):
        train_fraud_model(synthetic, validation_s=40 * HOUR)


def test_unknown_family(synthetic: CreditCardData) -> None:
    with pytest.raises(ValueError, match="unknown model family"):
        train_fraud_model(synthetic, family="svm")
