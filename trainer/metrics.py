"""Ranking and threshold metrics for a binary scorer, and the threshold rule."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score


@dataclass(frozen=True)
class ThresholdMetrics:
    """Confusion-derived metrics of ``score >= threshold``."""

    threshold: float
    precision: float
    recall: float
    f1: float
    true_positives: int
    false_positives: int
    false_negatives: int


def _check(labels: npt.NDArray[np.integer], scores: npt.NDArray[np.floating]) -> None:
    if labels.shape != scores.shape or labels.ndim != 1:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} must be 1-D, equal")
    positives = int(np.count_nonzero(labels))
    if positives == 0 or positives == labels.shape[0]:
        raise ValueError(
            f"metrics need both classes; got {positives} positives in {labels.shape[0]} rows"
        )


def auprc(labels: npt.NDArray[np.integer], scores: npt.NDArray[np.floating]) -> float:
    """Area under the precision-recall curve (average precision)."""
    _check(labels, scores)
    return float(average_precision_score(labels, scores))


def roc_auc(labels: npt.NDArray[np.integer], scores: npt.NDArray[np.floating]) -> float:
    """Area under the ROC curve."""
    _check(labels, scores)
    return float(roc_auc_score(labels, scores))


def at_threshold(
    labels: npt.NDArray[np.integer], scores: npt.NDArray[np.floating], threshold: float
) -> ThresholdMetrics:
    """Precision, recall and F1 of flagging ``scores >= threshold``."""
    flagged = scores >= threshold
    positive = labels != 0
    tp = int(np.count_nonzero(flagged & positive))
    fp = int(np.count_nonzero(flagged & ~positive))
    fn = int(np.count_nonzero(~flagged & positive))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return ThresholdMetrics(threshold, precision, recall, f1, tp, fp, fn)


def best_f1_threshold(
    labels: npt.NDArray[np.integer], scores: npt.NDArray[np.floating]
) -> ThresholdMetrics:
    """The threshold (an observed score, rounded down to float32) that maximises F1.

    Ties go to the highest threshold (fewest alerts). Meant for a validation slice,
    never for the slice the model is evaluated on.
    """
    _check(labels, scores)
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    # precision/recall have one more entry than thresholds (the (1, 0) end point)
    p, r = precision[:-1], recall[:-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    best = float(f1.max())
    index = int(np.flatnonzero(f1 >= best)[-1])
    return at_threshold(labels, scores, float32_at_most(float(thresholds[index])))


def float32_at_most(value: float) -> float:
    """The largest float32 not above ``value`` (as a Python float).

    A threshold chosen as an observed score keeps flagging that score after it is
    rounded to the float32 the ONNX graph compares in.
    """
    rounded = np.float32(value)
    if float(rounded) > value:
        rounded = np.nextafter(rounded, np.float32(-np.inf))
    return float(rounded)
