"""Synthetic credit-card-shaped data with a fixed seed, for fast trainer tests."""

from __future__ import annotations

import numpy as np

from trainer.datasets import FEATURE_NAMES, CreditCardData

HOURS = 48
ROWS = 6000
# small and fast: the synthetic tests check plumbing, not model quality
FAST_PARAMS = {"max_iter": 40}


def make_synthetic(rows: int = ROWS, seed: int = 7) -> CreditCardData:
    """48 h of transactions, 29 features like the ULB table, ~4% fraud from a known rule."""
    rng = np.random.default_rng(seed)
    time_s = np.sort(rng.uniform(0, HOURS * 3600, rows))
    features = rng.standard_normal((rows, len(FEATURE_NAMES))).astype(np.float32)
    features[:, -1] = rng.lognormal(3.0, 1.2, rows).astype(np.float32)  # Amount
    logit = -4.2 + 2.0 * features[:, 0] - 1.5 * features[:, 3] + 0.8 * features[:, 1] ** 2
    labels = (rng.uniform(size=rows) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    return CreditCardData(time_s, features, labels, list(FEATURE_NAMES))
