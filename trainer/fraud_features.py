"""The demo model's feature spec: the raw ULB columns a client sends → the model's matrix.

The served model is fed by the server's compiled feature transform, so the trainer
builds its training and evaluation matrices with the *same* transform (the Cython
kernel ``native.transform``, or its NumPy twin ``native.transform_py`` where the
selector is not there) from the same spec the version folder carries. Training and
serving therefore see identical float32 matrices, and the spec's reference profile
is the drift baseline of the training window.

The spec (one FP32 column per raw feature, each producing one model feature)::

    V1..V28   impute median                    PCA components, centred already
    Amount    impute median → clip [0, hi] → signed log1p → standardize

``hi`` is the ``AMOUNT_CLIP_QUANTILE`` quantile of the training window's amounts
(about 3,100 on the ULB table): an amount is never negative, and a huge or +inf
amount lands where the largest training amounts are instead of far outside the
range the model saw. log1p and standardize do not change what a tree model can
learn (it splits on order) but keep the matrix well scaled for the linear family
and for anyone reading it. No column is personal data.

The medians, mean and std are learned by ``FeatureSpec.fit`` on the training
window only (label-free input statistics); the evaluation window is never seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from native.feature_spec import Clip, FeatureSpec, Impute, NumericColumn, Standardize
from native.reference_profile import ReferenceProfile

try:  # the selector (Cython kernel or twin, honouring OSPREY_NO_EXTENSIONS)
    from native.transform import EXTENSION_LOADED, TransformPlan, compile_plan, transform
except ImportError:  # a tree without the selector: the twin is the specification
    from native.transform_plan import TransformPlan, compile_plan
    from native.transform_py import transform

    EXTENSION_LOADED = False

__all__ = [
    "AMOUNT",
    "AMOUNT_CLIP_QUANTILE",
    "TRANSFORM_IMPLEMENTATION",
    "FraudFeatures",
    "fit_fraud_features",
    "raw_frame",
    "spec_template",
]

F32 = npt.NDArray[np.float32]

AMOUNT = "Amount"
AMOUNT_CLIP_QUANTILE = 0.999
TRANSFORM_IMPLEMENTATION = (
    "native._transform (Cython)" if EXTENSION_LOADED else "native.transform_py (NumPy twin)"
)


def spec_template(columns: Sequence[str], amount_hi: float) -> FeatureSpec:
    """The unfitted spec: median impute everywhere; ``Amount`` also clipped, log1p'd, scaled."""
    specs = []
    for name in columns:
        if name == AMOUNT:
            specs.append(NumericColumn(
                name, impute=Impute("median"), clip=Clip(0.0, float(amount_hi)), log1p=True,
                standardize=Standardize(),
            ))
        else:
            specs.append(NumericColumn(name, impute=Impute("median")))
    return FeatureSpec(tuple(specs))


def raw_frame(features: F32, columns: Sequence[str]) -> dict[str, F32]:
    """A [N, C] float32 block as the per-column FP32 arrays a client sends."""
    if features.ndim != 2 or features.shape[1] != len(columns):
        raise ValueError(f"features must be [N, {len(columns)}], got {list(features.shape)}")
    return {
        name: np.ascontiguousarray(features[:, i], dtype=np.float32)
        for i, name in enumerate(columns)
    }


@dataclass(frozen=True)
class FraudFeatures:
    """A fitted spec and its compiled plan; ``matrix`` is the transform the server runs."""

    spec: FeatureSpec
    columns: tuple[str, ...]
    plan: TransformPlan

    def matrix(self, features: F32) -> F32:
        """The model's float32 matrix [N, F] of raw rows [N, C] (``columns`` order)."""
        frame = raw_frame(features, self.columns)
        out, _ = transform(self.plan, frame, features.shape[0], sketch=False)
        return out

    def reference_profile(self, features: F32, scores: npt.ArrayLike) -> ReferenceProfile:
        """The drift reference of the raw training rows and the model's training scores."""
        return self.spec.reference_profile(
            raw_frame(features, self.columns), scores=np.asarray(scores)
        )


def fit_fraud_features(features: F32, columns: Sequence[str]) -> FraudFeatures:
    """Fit the demo spec on the raw training rows ``features`` [N, C] (``columns`` order)."""
    names = tuple(columns)
    if AMOUNT not in names:
        raise ValueError(f"no {AMOUNT!r} column among {list(names)}")
    frame = raw_frame(features, names)
    amounts = frame[AMOUNT].astype(np.float64)
    finite = amounts[np.isfinite(amounts)]
    if finite.size == 0:
        raise ValueError(f"no finite {AMOUNT!r} values to place the clip bound")
    amount_hi = max(float(np.quantile(finite, AMOUNT_CLIP_QUANTILE)), 0.0)
    spec = spec_template(names, amount_hi).fit(frame)
    # The plan's matrix does not depend on the profile's counts; the score histogram
    # is added once the model has scores (``FraudFeatures.reference_profile``).
    plan = compile_plan(spec, spec.reference_profile(frame))
    return FraudFeatures(spec, names, plan)
