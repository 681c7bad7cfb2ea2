"""Threshold rule and metrics."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.metrics import at_threshold, auprc, best_f1_threshold, float32_at_most


def test_best_f1_threshold_separable() -> None:
    labels = np.array([0, 0, 0, 1, 1], np.int8)
    scores = np.array([0.1, 0.2, 0.3, 0.7, 0.9])
    best = best_f1_threshold(labels, scores)
    assert best.f1 == 1.0 and best.precision == 1.0 and best.recall == 1.0
    # ties go to the highest threshold that still reaches the best F1: the lowest positive
    assert best.threshold == pytest.approx(0.7, abs=1e-7) and best.threshold <= 0.7


def test_best_f1_threshold_trades_precision_for_recall() -> None:
    labels = np.array([0, 1, 0, 1, 1, 0], np.int8)
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.8, 0.9])
    best = best_f1_threshold(labels, scores)
    assert best.threshold <= 0.2 and best.f1 == pytest.approx(2 * 0.6 * 1 / 1.6)


def test_threshold_is_float32_and_keeps_the_chosen_score() -> None:
    value = 0.1  # not a float32
    low = float32_at_most(value)
    assert low <= value and float(np.float32(low)) == low
    assert np.float32(value) >= np.float32(low)
    assert float32_at_most(0.5) == 0.5


def test_at_threshold_counts() -> None:
    m = at_threshold(np.array([1, 1, 0, 0]), np.array([0.9, 0.2, 0.8, 0.1]), 0.5)
    assert (m.true_positives, m.false_positives, m.false_negatives) == (1, 1, 1)
    assert m.precision == 0.5 and m.recall == 0.5 and m.f1 == 0.5


def test_metrics_need_both_classes() -> None:
    with pytest.raises(ValueError, match="both classes"):
        auprc(np.zeros(4, np.int8), np.arange(4.0))
