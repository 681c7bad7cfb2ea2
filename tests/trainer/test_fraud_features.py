"""The demo's feature spec: what it is, where it is fitted, and that training's transform is
the serving transform (the NumPy twin is the specification)."""

from __future__ import annotations

import numpy as np
import pytest

import native.transform_py as twin
from native.feature_spec import FeatureSpec, NumericColumn
from native.reference_profile import ReferenceProfile
from native.transform_py import compile_plan
from trainer.datasets import FEATURE_NAMES, CreditCardData
from trainer.fraud_demo import TrainedFraudModel, train_fraud_model
from trainer.fraud_features import (
    AMOUNT,
    AMOUNT_CLIP_QUANTILE,
    TRANSFORM_IMPLEMENTATION,
    fit_fraud_features,
    raw_frame,
)
from trainer.metrics import auprc
from trainer.onnx_export import ort_score

from .synthetic import FAST_PARAMS

HOUR = 3600.0


def train_rows(data: CreditCardData) -> np.ndarray:
    return data.features[data.time_s < 36 * HOUR]


def hostile_rows(data: CreditCardData) -> np.ndarray:
    """Synthetic rows plus what a client may send: NaN, ±inf, negative and huge values."""
    rows = data.features.copy()
    amount = FEATURE_NAMES.index(AMOUNT)
    rows[::11, 3] = np.nan
    rows[0:50, amount] = -250.0  # disjoint row blocks per kind of Amount
    rows[50:100, amount] = 3.0e38
    rows[100:150, amount] = np.inf
    rows[150:200, amount] = -np.inf
    rows[200:250, amount] = np.nan
    rows[5::31, 0] = np.inf
    rows[6::37, 1] = -np.inf
    rows[7::41, 2] = 1e-42  # subnormal
    return rows


def test_the_spec(trained: TrainedFraudModel, synthetic: CreditCardData) -> None:
    spec = trained.feature_spec
    assert spec.column_names == FEATURE_NAMES and spec.feature_names == FEATURE_NAMES
    assert spec.n_features == 29 and spec.is_fitted and spec.personal_columns == ()
    train = train_rows(synthetic).astype(np.float64)
    for i, name in enumerate(FEATURE_NAMES):
        c = spec.column(name)
        assert isinstance(c, NumericColumn) and c.bucketize is None
        assert c.impute is not None and c.impute.strategy == "median"
        assert c.impute.value == float(np.median(train[:, i])), name
        if name != AMOUNT:
            assert c.clip is None and not c.log1p and c.standardize is None, name
            continue
        assert c.clip is not None and c.log1p and c.standardize is not None
        hi = float(np.quantile(train[:, i], AMOUNT_CLIP_QUANTILE))
        assert (c.clip.lo, c.clip.hi) == (0.0, hi)
        scaled = np.log1p(np.clip(train[:, i], 0.0, hi))
        assert c.standardize.mean == pytest.approx(float(scaled.mean()), rel=1e-12)
        assert c.standardize.std == pytest.approx(float(scaled.std()), rel=1e-12)
    assert trained.report.feature_transform == TRANSFORM_IMPLEMENTATION


def test_spec_is_fitted_on_the_training_window_only(synthetic: CreditCardData) -> None:
    changed = synthetic.features.copy()
    later = synthetic.time_s >= 36 * HOUR
    changed[later] = changed[later] * 100 + 7  # the evaluation window looks nothing alike
    other = CreditCardData(synthetic.time_s, changed, synthetic.labels, synthetic.feature_names)
    a = fit_fraud_features(train_rows(synthetic), FEATURE_NAMES).spec
    b = fit_fraud_features(train_rows(other), FEATURE_NAMES).spec
    assert a == b
    full = fit_fraud_features(changed, FEATURE_NAMES).spec
    assert full != a


def test_training_transform_equals_the_twin(
    trained: TrainedFraudModel, synthetic: CreditCardData
) -> None:
    """The matrix training used == what the twin makes from the written documents."""
    spec = FeatureSpec.from_json(trained.feature_files()["feature_spec.json"])
    profile = ReferenceProfile.from_json(trained.feature_files()["reference_profile.json"])
    assert spec == trained.feature_spec and profile == trained.reference_profile
    plan = compile_plan(spec, profile)
    for rows in (synthetic.features, hostile_rows(synthetic), synthetic.features[:1],
                 synthetic.features[:0]):
        used = trained.matrix(rows)
        expected, _ = twin.transform(plan, raw_frame(rows, FEATURE_NAMES), rows.shape[0])
        assert used.dtype == np.float32 and used.shape == (rows.shape[0], 29)
        # bit for bit, except log1p (Amount) within 1 ulp: the kernel's contract
        amount = FEATURE_NAMES.index(AMOUNT)
        others = [i for i in range(29) if i != amount]
        np.testing.assert_array_equal(used[:, others], expected[:, others])
        np.testing.assert_array_max_ulp(used[:, amount], expected[:, amount], maxulp=1)


def test_transform_handles_what_clients_send(
    trained: TrainedFraudModel, synthetic: CreditCardData
) -> None:
    rows = hostile_rows(synthetic)
    matrix = trained.matrix(rows)
    assert np.isfinite(matrix[:, FEATURE_NAMES.index(AMOUNT)]).all()  # impute + clip
    v4 = trained.feature_spec.column("V4")
    assert isinstance(v4, NumericColumn) and v4.impute is not None
    assert (matrix[::11, 3] == np.float32(v4.impute.value)).all()
    assert np.isposinf(matrix[5::31, 0]).all() and np.isneginf(matrix[6::37, 1]).all()
    # a negative amount is clipped to 0, a huge or +inf one to the clip bound
    c = trained.feature_spec.column(AMOUNT)
    assert isinstance(c, NumericColumn) and c.clip is not None and c.clip.hi is not None
    assert c.standardize is not None and c.standardize.mean is not None
    assert c.standardize.std is not None
    mean, std = c.standardize.mean, c.standardize.std
    amount = matrix[:, FEATURE_NAMES.index(AMOUNT)]
    assert (amount[0:50] == np.float32((0.0 - mean) / std)).all()
    assert (amount[150:200] == amount[0]).all()
    top = np.float32((np.log1p(c.clip.hi) - mean) / std)
    np.testing.assert_array_max_ulp(amount[50:150], np.full(100, top), maxulp=1)
    assert c.impute is not None and c.impute.value is not None
    median = np.float32((np.log1p(c.impute.value) - mean) / std)
    np.testing.assert_array_max_ulp(amount[200:250], np.full(50, median), maxulp=1)
    scores, _ = ort_score(trained.onnx_bytes, matrix)
    assert np.isfinite(scores).all()


def test_reference_profile(trained: TrainedFraudModel) -> None:
    profile, r = trained.reference_profile, trained.report
    assert profile.rows == r.train_rows
    assert profile.names == FEATURE_NAMES
    for feature in profile.features:
        assert sum(feature.counts) == r.train_rows
        assert feature.counts[0] == 0  # no missing values in training
    assert profile.score is not None
    assert profile.score.edges == tuple(np.linspace(0.0, 1.0, 21).tolist())
    assert sum(profile.score.counts) == r.train_rows
    # the score histogram counts the served model's training scores
    # bins: missing, below 0, the 20 bins of [0, 1], above 1
    counts = profile.score.counts
    assert len(counts) == 23 and counts[0] == counts[1] == counts[-1] == 0
    assert counts[2] > counts[21]  # most transactions score low


def test_score_histogram_is_the_onnx_training_scores(synthetic: CreditCardData) -> None:
    model = train_fraud_model(synthetic, params=FAST_PARAMS)
    train = train_rows(synthetic)
    scores, _ = ort_score(model.onnx_bytes, model.matrix(train))
    assert model.reference_profile.score is not None
    counts = twin.count_scores(model.reference_profile.score.edges, scores)
    assert tuple(counts.tolist()) == model.reference_profile.score.counts


def test_serving_path_reproduces_the_evaluation(
    trained: TrainedFraudModel, synthetic: CreditCardData
) -> None:
    """Raw held-out columns → twin transform from the documents → ONNX = the recorded AUPRC."""
    files = trained.feature_files()
    plan = compile_plan(FeatureSpec.from_json(files["feature_spec.json"]),
                        ReferenceProfile.from_json(files["reference_profile.json"]))
    held_out = synthetic.time_s >= 36 * HOUR
    rows = synthetic.features[held_out]
    columns = {name: rows[:, i:i + 1].copy() for i, name in enumerate(FEATURE_NAMES)}  # [N, 1]
    counts = plan.new_counts()
    matrix, _ = twin.transform(plan, columns, rows.shape[0], counts=counts)
    scores, _ = ort_score(trained.onnx_bytes, matrix)
    assert auprc(synthetic.labels[held_out], scores.astype(np.float64)) == pytest.approx(
        trained.report.auprc, abs=1e-6
    )
    assert int(counts.sum()) == 29 * rows.shape[0]  # the fused sketch saw every value


def test_features_need_an_amount_column(synthetic: CreditCardData) -> None:
    with pytest.raises(ValueError, match="Amount"):
        fit_fraud_features(synthetic.features[:, :28], FEATURE_NAMES[:28])
