"""The model behind ``osprey demo``: a fraud scorer trained on the ULB credit-card table.

Time windows (seconds since the first transaction)::

    [start, train_end - validation)        fit         (threshold-selection model)
    [train_end - validation, train_end)    validation  (threshold = best F1 here)
    [start, train_end)                     train       (the served model, refit)
    [train_end, eval_end)                  evaluation  (reported metrics only)

Defaults: train on hours 0-36 with hours 30-36 as the validation slice, evaluate on
hours 36-48. The threshold is chosen on the validation slice with a model that has
not seen it, then the same family and parameters are refit on the whole training
window; the evaluation slice is never used for any choice.

Features: a ``FeatureSpec`` (``trainer.fraud_features``) is fitted on the raw rows of
the training window, and every slice is turned into the model's matrix by the same
compiled transform the server runs on requests; the model is trained on, evaluated
on and exported for that matrix (ONNX input ``features`` FP32 [N, F]). The version
folder carries ``feature_spec.json`` and ``reference_profile.json`` (the training
window's raw-column bins and the served model's training score histogram), so the
server exposes the raw columns (``V1``..``V28``, ``Amount``: one FP32 [N, 1] tensor
each) and measures drift against the training window. The threshold-selection model
uses the same spec (its medians, mean and std come from the whole training window,
validation slice included: label-free input statistics, never the evaluation slice).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from native.feature_errors import DocumentError
from native.feature_spec import FeatureSpec
from native.reference_profile import ReferenceProfile

from .datasets import CreditCardData, load_creditcard
from .families import DEFAULT_FAMILY, describe, make_estimator
from .fraud_features import (
    TRANSFORM_IMPLEMENTATION,
    FraudFeatures,
    compile_plan,
    fit_fraud_features,
)
from .metrics import ThresholdMetrics, at_threshold, auprc, best_f1_threshold, roc_auc
from .model_repository import (
    CONFIG_FILE,
    FEATURE_SPEC_FILE,
    MODEL_FILE,
    REFERENCE_PROFILE_FILE,
    verified_evaluation,
    write_json_atomic,
    write_model_repository,
)
from .onnx_export import ScorerSignature, export_scorer, ort_score

__all__ = [
    "FraudEvaluation",
    "TrainedFraudModel",
    "ensure_demo_model",
    "serving_config",
    "train_fraud_model",
    "write_model_repository",
]

log = logging.getLogger("osprey.trainer")

HOUR = 3600.0
TRAIN_END_S = 36 * HOUR
VALIDATION_S = 6 * HOUR
PARITY_TOLERANCE = 1e-4
SIGNATURE = ScorerSignature(input="features", score="fraud_score", decision="fraud_decision")
DEMO_MODEL = "fraud"
DEMO_VERSION = 1

_SERVING_DEFAULTS: dict[str, Any] = {
    "max_batch_size": 1024,
    "max_queue_delay_us": 0,
    "max_queue_size": 4096,
    "max_request_rows": 1048576,
    "instance_count": 1,
    "intra_op_threads": 1,
    "execution_providers": ["cuda", "cpu"],
    "warmup_batch_sizes": [1, 64],
    "version_policy": {"latest": 1},
}


def serving_config(threshold: float) -> dict[str, Any]:
    """The demo model's ``config.json``: serving settings, score output and decision."""
    return {
        **_SERVING_DEFAULTS,
        "execution_providers": list(_SERVING_DEFAULTS["execution_providers"]),
        "warmup_batch_sizes": list(_SERVING_DEFAULTS["warmup_batch_sizes"]),
        "version_policy": dict(_SERVING_DEFAULTS["version_policy"]),
        "score_output": SIGNATURE.score,
        "decision": {"output": SIGNATURE.decision, "threshold": float(threshold)},
    }


@dataclass(frozen=True)
class FraudEvaluation:
    """Everything ``evaluation.json`` records except the model name, version and sha256."""

    model_family: str
    model_params: dict[str, Any]
    raw_columns: list[str]
    feature_names: list[str]
    feature_transform: str
    train_window_s: list[float]
    validation_window_s: list[float]
    eval_window_s: list[float]
    train_rows: int
    train_fraud: int
    validation_rows: int
    validation_fraud: int
    eval_rows: int
    eval_fraud: int
    auprc: float
    roc_auc: float
    threshold: float
    threshold_rule: str
    precision_at_threshold: float
    recall_at_threshold: float
    f1_at_threshold: float
    eval_alerts: int
    validation_auprc: float
    validation_precision: float
    validation_recall: float
    validation_f1: float
    ort_vs_sklearn_max_abs_diff: float
    ort_vs_sklearn_decision_mismatches: int
    parity_rows: int
    onnx_opset: dict[str, int]
    fit_seconds: float
    seed: int
    trained_at: str
    library_versions: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainedFraudModel:
    """The fitted estimator, its ONNX export, the decision threshold and the evaluation.

    ``feature_spec`` turns the raw columns into the estimator's (and the ONNX
    ``features`` input's) matrix; ``reference_profile`` is the training window's drift
    reference with the score histogram of the served model on it.
    """

    estimator: Any
    onnx_bytes: bytes
    threshold: float
    report: FraudEvaluation
    feature_spec: FeatureSpec
    reference_profile: ReferenceProfile

    @property
    def feature_names(self) -> list[str]:
        """Column order of the ``features`` matrix (the spec's output features)."""
        return list(self.report.feature_names)

    @property
    def raw_columns(self) -> list[str]:
        """The raw columns a client sends, in the spec's order."""
        return list(self.report.raw_columns)

    @property
    def feature_spec_bytes(self) -> bytes:
        """``feature_spec.json`` as written into the version folder."""
        return spec_document(self.feature_spec)

    def matrix(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The model's matrix [N, F] of raw rows [N, C] (``raw_columns`` order)."""
        plan = compile_plan(self.feature_spec, self.reference_profile)
        return FraudFeatures(self.feature_spec, tuple(self.raw_columns), plan).matrix(features)

    def feature_files(self) -> dict[str, bytes]:
        """The version folder's feature documents."""
        return {
            FEATURE_SPEC_FILE: self.feature_spec_bytes,
            REFERENCE_PROFILE_FILE: (self.reference_profile.to_json() + "\n").encode(),
        }

    def evaluation(self) -> dict[str, Any]:
        """JSON-able metrics and lineage for ``evaluation.json``."""
        return asdict(self.report)

    def serving_config(self) -> dict[str, Any]:
        """The model folder's ``config.json``."""
        return serving_config(self.threshold)


def spec_document(spec: FeatureSpec) -> bytes:
    """The bytes of ``feature_spec.json`` (whose sha256 the ONNX metadata records)."""
    return (spec.to_json() + "\n").encode()


@dataclass(frozen=True)
class _Slice:
    features: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int8]
    window: tuple[float, float]
    name: str

    @property
    def rows(self) -> int:
        return int(self.labels.shape[0])

    @property
    def frauds(self) -> int:
        return int(np.count_nonzero(self.labels))

    def transformed(self, features: FraudFeatures) -> _Slice:
        """The slice with its raw rows replaced by the model's matrix."""
        return _Slice(features.matrix(self.features), self.labels, self.window, self.name)


def _slice(data: CreditCardData, start: float, end: float, name: str) -> _Slice:
    mask = (data.time_s >= start) & (data.time_s < end)
    part = _Slice(data.features[mask], data.labels[mask], (start, end), name)
    if part.frauds == 0 or part.frauds == part.rows:
        raise ValueError(
            f"the {name} window [{start:g} s, {end:g} s) needs both classes; it has "
            f"{part.rows} rows, {part.frauds} fraud"
        )
    return part


def _library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in ("numpy", "scikit-learn", "skl2onnx", "onnx", "onnxruntime", "onnxruntime-gpu"):
        try:
            versions[dist] = package_version(dist)
        except PackageNotFoundError:
            continue
    return versions


def _positive_proba(estimator: Any, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    return np.asarray(estimator.predict_proba(features)[:, 1], dtype=np.float64)


def _fit(estimator: Any, part: _Slice) -> float:
    started = time.perf_counter()
    estimator.fit(part.features, part.labels)
    return time.perf_counter() - started


def train_fraud_model(
    data: CreditCardData,
    *,
    train_end_s: float = TRAIN_END_S,
    validation_s: float = VALIDATION_S,
    eval_end_s: float | None = None,
    family: str = DEFAULT_FAMILY,
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> TrainedFraudModel:
    """Fit, pick the threshold, refit, export to ONNX and check ORT against scikit-learn.

    Training uses rows with ``time_s < train_end_s``; the threshold maximises F1 on
    the last ``validation_s`` seconds of that window (scored by a model fit on the
    rows before it). Evaluation uses ``train_end_s <= time_s < eval_end_s`` (default:
    up to the whole hour after the last transaction). Raises ``ValueError`` if a
    window lacks either class and ``RuntimeError`` if the ONNX scores drift from
    scikit-learn's by more than ``PARITY_TOLERANCE``.
    """
    if not 0 < validation_s < train_end_s:
        raise ValueError(f"need 0 < validation_s ({validation_s}) < train_end_s ({train_end_s})")
    if data.rows == 0:
        raise ValueError("no transactions to train on")
    start = float(math.floor(float(data.time_s.min()) / HOUR) * HOUR)
    end = (
        eval_end_s
        if eval_end_s is not None
        else float((math.floor(float(data.time_s.max()) / HOUR) + 1) * HOUR)
    )
    validation_start = train_end_s - validation_s
    fit_part = _slice(data, start, validation_start, "fit")
    validation = _slice(data, validation_start, train_end_s, "validation")
    raw_train = _slice(data, start, train_end_s, "train")
    holdout = _slice(data, train_end_s, end, "evaluation")

    # One spec, fitted on the training window's raw rows; every slice goes through
    # the same compiled transform the server runs on requests.
    features = fit_fraud_features(raw_train.features, data.feature_names)
    fit_part, validation, train, holdout = (
        part.transformed(features) for part in (fit_part, validation, raw_train, holdout)
    )
    spec = features.spec
    spec_sha256 = hashlib.sha256(spec_document(spec)).hexdigest()
    log.info(
        "feature spec fitted on the training window: %d raw columns -> %d features (%s)",
        len(spec.column_names),
        spec.n_features,
        TRANSFORM_IMPLEMENTATION,
    )
    log.info(
        "training %s: fit %d rows (%d fraud), validation %d (%d), train %d (%d), eval %d (%d)",
        family,
        fit_part.rows,
        fit_part.frauds,
        validation.rows,
        validation.frauds,
        train.rows,
        train.frauds,
        holdout.rows,
        holdout.frauds,
    )

    selector = make_estimator(family, params, seed)
    selector_seconds = _fit(selector, fit_part)
    validation_scores = _positive_proba(selector, validation.features)
    chosen: ThresholdMetrics = best_f1_threshold(validation.labels, validation_scores)
    threshold = chosen.threshold
    log.info(
        "threshold %.6g from validation (precision %.3f, recall %.3f, F1 %.3f)",
        threshold,
        chosen.precision,
        chosen.recall,
        chosen.f1,
    )

    estimator = make_estimator(family, params, seed)
    fit_seconds = _fit(estimator, train)
    eval_scores = _positive_proba(estimator, holdout.features)
    on_eval = at_threshold(holdout.labels, eval_scores, threshold)
    model_family, model_params = describe(estimator)

    onnx_model = export_scorer(
        estimator,
        spec.n_features,
        threshold,
        signature=SIGNATURE,
        metadata={
            "feature_names": ",".join(spec.feature_names),
            "raw_columns": ",".join(spec.column_names),
            "feature_spec_sha256": spec_sha256,
            "model_family": model_family,
        },
    )
    onnx_bytes = onnx_model.SerializeToString()
    ort_scores, ort_decisions = ort_score(onnx_bytes, holdout.features, SIGNATURE)
    max_diff = float(np.max(np.abs(ort_scores.astype(np.float64) - eval_scores)))
    mismatches = int(np.count_nonzero(ort_decisions != (eval_scores >= threshold)))
    if not max_diff <= PARITY_TOLERANCE:
        raise RuntimeError(
            f"ONNX export disagrees with scikit-learn: max |score diff| {max_diff:.3g} on "
            f"{holdout.rows} evaluation rows exceeds {PARITY_TOLERANCE:g}"
        )
    # the drift reference: training window's raw columns and the served model's scores
    train_scores, _ = ort_score(onnx_bytes, train.features, SIGNATURE)
    profile = features.reference_profile(raw_train.features, train_scores)

    report = FraudEvaluation(
        model_family=model_family,
        model_params=model_params,
        raw_columns=list(spec.column_names),
        feature_names=list(spec.feature_names),
        feature_transform=TRANSFORM_IMPLEMENTATION,
        train_window_s=[train.window[0], train.window[1]],
        validation_window_s=[validation.window[0], validation.window[1]],
        eval_window_s=[holdout.window[0], holdout.window[1]],
        train_rows=train.rows,
        train_fraud=train.frauds,
        validation_rows=validation.rows,
        validation_fraud=validation.frauds,
        eval_rows=holdout.rows,
        eval_fraud=holdout.frauds,
        auprc=auprc(holdout.labels, eval_scores),
        roc_auc=roc_auc(holdout.labels, eval_scores),
        threshold=threshold,
        threshold_rule=(
            "max F1 on the validation window, scored by a model fit before it; "
            "the served model is refit on the whole training window"
        ),
        precision_at_threshold=on_eval.precision,
        recall_at_threshold=on_eval.recall,
        f1_at_threshold=on_eval.f1,
        eval_alerts=on_eval.true_positives + on_eval.false_positives,
        validation_auprc=auprc(validation.labels, validation_scores),
        validation_precision=chosen.precision,
        validation_recall=chosen.recall,
        validation_f1=chosen.f1,
        ort_vs_sklearn_max_abs_diff=max_diff,
        ort_vs_sklearn_decision_mismatches=mismatches,
        parity_rows=holdout.rows,
        onnx_opset={op.domain or "ai.onnx": int(op.version) for op in onnx_model.opset_import},
        fit_seconds=round(selector_seconds + fit_seconds, 3),
        seed=seed,
        trained_at=datetime.now(UTC).isoformat(timespec="seconds"),
        library_versions=_library_versions(),
    )
    log.info(
        "evaluation [%g s, %g s): AUPRC %.4f, ROC-AUC %.4f, precision %.3f, recall %.3f at "
        "threshold %.6g; ORT vs scikit-learn max |diff| %.2g, %d decision mismatches; "
        "fit %.1f s",
        holdout.window[0],
        holdout.window[1],
        report.auprc,
        report.roc_auc,
        report.precision_at_threshold,
        report.recall_at_threshold,
        threshold,
        max_diff,
        mismatches,
        report.fit_seconds,
    )
    return TrainedFraudModel(estimator, onnx_bytes, threshold, report, spec, profile)


def _config_matches(config_path: Path, threshold: float) -> bool:
    try:
        current = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return bool(current == serving_config(threshold))


def _feature_documents_problem(version_dir: Path) -> str:
    """Why the version's (sha-verified) feature documents cannot be served, or ""."""
    try:
        spec = FeatureSpec.from_json((version_dir / FEATURE_SPEC_FILE).read_bytes())
        profile = ReferenceProfile.from_json((version_dir / REFERENCE_PROFILE_FILE).read_bytes())
        compile_plan(spec, profile)
    except (OSError, DocumentError) as exc:
        return f"its feature documents do not load: {exc}"
    if profile.score is None:
        return f"{version_dir / REFERENCE_PROFILE_FILE} has no score histogram"
    return ""


def ensure_demo_model(
    home: Path,
    *,
    repo: Path | None = None,
    load: Callable[[], CreditCardData] = load_creditcard,
    train: Callable[[CreditCardData], TrainedFraudModel] = train_fraud_model,
) -> Path:
    """Make sure ``<repo>/fraud/1`` holds a verified demo model; train it if not.

    ``repo`` defaults to ``<home>/models``. An existing version is reused when its
    ``evaluation.json`` records the sha256 of its ``model.onnx``, ``feature_spec.json``
    and ``reference_profile.json`` and the two documents load and compile; otherwise
    (a version from before feature specs included) the data is loaded, the model
    trained and the version (re)written atomically. A missing or stale
    ``config.json`` beside a reused version is rewritten from its evaluation.
    Returns the version folder.
    """
    models = repo if repo is not None else Path(home) / "models"
    version_dir = models / DEMO_MODEL / str(DEMO_VERSION)
    evaluation, reason = verified_evaluation(version_dir, require_features=True)
    if evaluation is not None:
        reason = _feature_documents_problem(version_dir)
        if reason:
            evaluation = None
    if evaluation is not None and isinstance(evaluation.get("threshold"), float | int):
        config_path = version_dir.parent / CONFIG_FILE
        if not _config_matches(config_path, float(evaluation["threshold"])):
            log.info("rewriting %s from %s", config_path, version_dir / "evaluation.json")
            write_json_atomic(config_path, serving_config(float(evaluation["threshold"])))
        log.info(
            "reusing demo model %s (AUPRC %s, sha256 %s, feature spec sha256 %s)",
            version_dir / MODEL_FILE,
            evaluation.get("auprc"),
            evaluation["sha256"],
            evaluation.get("feature_spec_sha256"),
        )
        return version_dir
    if evaluation is not None:
        reason = f"{version_dir / 'evaluation.json'} records no threshold"
    log.info("training the demo model: %s", reason)
    started = time.perf_counter()
    model = train(load())
    written = write_model_repository(model, models, DEMO_MODEL, DEMO_VERSION)
    log.info("demo model ready in %.1f s", time.perf_counter() - started)
    return written
