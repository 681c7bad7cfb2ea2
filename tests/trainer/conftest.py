"""Fixtures: the synthetic data set and one small model trained on it per session."""

from __future__ import annotations

import pytest

from trainer.datasets import CreditCardData
from trainer.fraud_demo import TrainedFraudModel, train_fraud_model

from .synthetic import FAST_PARAMS, make_synthetic


@pytest.fixture(scope="session")
def synthetic() -> CreditCardData:
    return make_synthetic()


@pytest.fixture(scope="session")
def trained(synthetic: CreditCardData) -> TrainedFraudModel:
    return train_fraud_model(synthetic, params=FAST_PARAMS)
