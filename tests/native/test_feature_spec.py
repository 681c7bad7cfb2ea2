"""FeatureSpec and ReferenceProfile: JSON round trips, validation errors, fitting."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import numpy as np
import pytest

from native.feature_errors import FeatureSpecError, FitError, PlanError, ReferenceProfileError
from native.feature_fit import encode_bytes
from native.feature_spec import (
    Bucketize,
    CategoricalColumn,
    Clip,
    FeatureSpec,
    HashBuckets,
    Impute,
    NumericColumn,
    Standardize,
    Vocabulary,
)
from native.reference_profile import (
    CategoricalReference,
    NumericReference,
    ReferenceProfile,
    ScoreReference,
    score_edges,
)
from native.transform_py import compile_plan, count, transform

FITTED: dict[str, Any] = {
    "schema": "osprey.feature_spec/1",
    "columns": [
        {"name": "amount", "kind": "numeric", "personal": False,
         "impute": {"strategy": "median", "value": 12.5}, "clip": {"lo": 0, "hi": 1000},
         "log1p": True, "standardize": {"mean": 2.0, "std": 1.5},
         "bucketize": {"quantiles": 4, "edges": [-1.0, 0.0, 1.0], "output": "one_hot"}},
        {"name": "age", "kind": "numeric"},
        {"name": "merchant", "kind": "categorical", "max_bytes": 16,
         "vocabulary": {"values": ["a", "b", ""], "max_size": 10, "min_count": 1,
                        "output": "one_hot"}},
        {"name": "card", "kind": "categorical", "personal": True,
         "hash": {"buckets": 8, "seed": 7, "output": "index"}},
    ],
}

PROFILE: dict[str, Any] = {
    "schema": "osprey.reference_profile/1",
    "rows": 4,
    "features": [
        {"name": "amount", "kind": "numeric", "edges": [0, 1, 2], "counts": [1, 0, 1, 1, 1]},
        {"name": "age", "kind": "numeric", "edges": [18, 40], "counts": [0, 1, 3, 0]},
        {"name": "merchant", "kind": "categorical", "vocabulary": ["a", "b"],
         "counts": [1, 1, 1, 1]},
        {"name": "card", "kind": "categorical", "vocabulary": [], "counts": [0, 4]},
    ],
    "score": {"edges": [0, 0.5, 1], "counts": [0, 0, 2, 2, 0]},
}

DELETE = object()


def mutated(doc: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    target: Any = out
    for key in path[:-1]:
        target = target[key]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return out


# -- round trips ------------------------------------------------------------------------
def test_spec_round_trip() -> None:
    spec = FeatureSpec.from_dict(FITTED)
    assert spec.is_fitted
    again = FeatureSpec.from_json(spec.to_json())
    assert again == spec
    assert again.to_json() == spec.to_json()
    assert json.loads(spec.to_json())["columns"][1] == {
        "name": "age", "kind": "numeric", "personal": False, "log1p": False}


def test_template_round_trip_and_unfitted_fields() -> None:
    doc = mutated(FITTED, ("columns", 0, "impute", "value"), None)
    doc = mutated(doc, ("columns", 2, "vocabulary", "values"), None)
    spec = FeatureSpec.from_dict(doc)
    assert not spec.is_fitted
    assert spec.unfitted() == ("amount", "impute.value")
    assert FeatureSpec.from_json(spec.to_json()) == spec
    with pytest.raises(PlanError, match=r"column 'amount', field 'impute.value'"):
        compile_plan(spec, ReferenceProfile.from_dict(PROFILE))


def test_feature_names_and_width() -> None:
    spec = FeatureSpec.from_dict(FITTED)
    assert spec.feature_names == (
        "amount:bucket=0", "amount:bucket=1", "amount:bucket=2", "amount:bucket=3", "age",
        "merchant=a", "merchant=b", "merchant=", "merchant:oov", "card:hash",
    )
    assert spec.n_features == 10
    assert spec.column_names == ("amount", "age", "merchant", "card")
    assert spec.personal_columns == ("card",)
    assert spec.column("card").personal


def test_profile_round_trip_and_layout() -> None:
    profile = ReferenceProfile.from_dict(PROFILE)
    assert ReferenceProfile.from_json(profile.to_json()) == profile
    assert profile.bin_offsets.tolist() == [0, 5, 9, 13, 15]
    assert profile.flat_counts().tolist() == [1, 0, 1, 1, 1, 0, 1, 3, 0, 1, 1, 1, 1, 0, 4]
    amount = profile.features[0]
    assert amount.bin_labels() == ["missing", "< 0", "[0, 1)", "[1, 2]", "> 2"]
    assert profile.features[2].bin_labels() == ["empty", "out-of-vocabulary", "=a", "=b"]
    assert amount.ordered_bins == (1, 5) and profile.features[2].ordered_bins is None
    assert profile.score is not None and profile.score.ordered_bins == (1, 5)


def test_score_edges_are_fixed() -> None:
    edges = score_edges(20)
    assert len(edges) == 21 and edges[0] == 0.0 and edges[-1] == 1.0
    assert edges[1] == 0.05


# -- spec validation: every error names its column and field ------------------------
SPEC_ERRORS = [
    (("schema",), "osprey.feature_spec/2", None, "schema", "unsupported schema"),
    (("version",), 1, None, "version", "unknown key"),
    (("columns",), DELETE, None, "columns", "is required"),
    (("columns",), {}, None, "columns", "must be an array"),
    (("columns",), [], None, "columns", "at least one column"),
    (("columns", 1), 5, None, "columns[1]", "must be an object, got a number"),
    (("columns", 1, "name"), 3, None, "columns[1].name", "must be a string"),
    (("columns", 1, "name"), "a b", "a b", "name", "must start with a letter"),
    (("columns", 1, "name"), "amount", "amount", "name", "duplicate column name"),
    (("columns", 1, "kind"), "text", "age", "kind", "'numeric' or 'categorical'"),
    (("columns", 1, "max_bytes"), 5, "age", "max_bytes", "unknown key"),
    (("columns", 1, "personal"), "yes", "age", "personal", "must be true or false"),
    (("columns", 1, "log1p"), 1, "age", "log1p", "must be true or false"),
    (("columns", 0, "impute", "how"), 1, "amount", "impute.how", "unknown key"),
    (("columns", 0, "impute", "strategy"), "mode", "amount", "impute.strategy",
     "must be one of constant, mean, median"),
    (("columns", 0, "impute", "strategy"), DELETE, "amount", "impute.strategy", "is required"),
    (("columns", 0, "impute"), {"strategy": "constant"}, "amount", "impute.value",
     "is required for strategy 'constant'"),
    (("columns", 0, "impute", "value"), "x", "amount", "impute.value", "must be a number"),
    (("columns", 0, "impute", "value"), True, "amount", "impute.value", "got a boolean"),
    (("columns", 0, "clip"), {}, "amount", "clip", "needs 'lo', 'hi' or both"),
    (("columns", 0, "clip"), {"lo": 5, "hi": 1}, "amount", "clip", "greater than hi"),
    (("columns", 0, "clip"), [0, 1], "amount", "clip", "must be an object, got an array"),
    (("columns", 0, "standardize", "std"), 0, "amount", "standardize.std", "must be > 0"),
    (("columns", 0, "standardize", "std"), -1.0, "amount", "standardize.std", "must be > 0"),
    (("columns", 0, "standardize", "std"), None, "amount", "standardize", "needs both"),
    (("columns", 0, "bucketize", "edges"), [1.0, 0.0], "amount", "bucketize.edges[1]",
     "strictly increasing"),
    (("columns", 0, "bucketize", "edges"), [0.0, 0.0], "amount", "bucketize.edges[1]",
     "strictly increasing"),
    (("columns", 0, "bucketize", "edges"), [], "amount", "bucketize.edges", "at least one edge"),
    (("columns", 0, "bucketize", "edges"), [True], "amount", "bucketize.edges[0]",
     "must be a number"),
    (("columns", 0, "bucketize", "edges"), "0,1", "amount", "bucketize.edges",
     "must be an array of numbers"),
    (("columns", 0, "bucketize"), {"output": "index"}, "amount", "bucketize",
     "needs fixed 'edges' or 'quantiles'"),
    (("columns", 0, "bucketize", "quantiles"), 1, "amount", "bucketize.quantiles", ">= 2"),
    (("columns", 0, "bucketize", "quantiles"), 2.0, "amount", "bucketize.quantiles",
     "must be an integer"),
    (("columns", 0, "bucketize", "output"), "onehot", "amount", "bucketize.output",
     "must be one of one_hot, index"),
    (("columns", 0, "impute"), DELETE, "amount", "bucketize", "needs 'impute'"),
    (("columns", 2, "hash"), {"buckets": 4}, "merchant", None, "exactly one of"),
    (("columns", 2, "vocabulary"), DELETE, "merchant", None, "exactly one of"),
    (("columns", 2, "vocabulary", "values"), [], "merchant", "vocabulary.values",
     "must not be empty"),
    (("columns", 2, "vocabulary", "values"), ["a", "a"], "merchant", "vocabulary.values[1]",
     "duplicate value 'a'"),
    (("columns", 2, "vocabulary", "values"), ["a", "x" * 17], "merchant",
     "vocabulary.values[1]", "is 17 bytes, longer than max_bytes 16"),
    (("columns", 2, "vocabulary", "values"), [1], "merchant", "vocabulary.values[0]",
     "must be a string"),
    (("columns", 2, "vocabulary", "max_size"), 2, "merchant", "vocabulary.values",
     "holds 3 values, more than max_size 2"),
    (("columns", 2, "vocabulary", "min_count"), 0, "merchant", "vocabulary.min_count", ">= 1"),
    (("columns", 2, "vocabulary", "colour"), 0, "merchant", "vocabulary.colour", "unknown key"),
    (("columns", 2, "max_bytes"), 0, "merchant", "max_bytes", ">= 1 and <= 65536"),
    (("columns", 2, "impute"), {"strategy": "mean"}, "merchant", "impute", "unknown key"),
    (("columns", 3, "hash", "buckets"), 0, "card", "hash.buckets", ">= 1"),
    (("columns", 3, "hash", "buckets"), DELETE, "card", "hash.buckets", "is required"),
    (("columns", 3, "hash", "seed"), -1, "card", "hash.seed", ">= 0"),
    (("columns", 3, "hash", "seed"), 2**64, "card", "hash.seed", "<= 18446744073709551615"),
    (("columns", 3, "hash", "seed"), 1.0, "card", "hash.seed", "must be an integer"),
]


@pytest.mark.parametrize(("path", "value", "column", "field", "message"), SPEC_ERRORS)
def test_spec_validation(path: tuple[Any, ...], value: Any, column: str | None,
                         field: str | None, message: str) -> None:
    with pytest.raises(FeatureSpecError) as info:
        FeatureSpec.from_dict(mutated(FITTED, path, value))
    err = info.value
    assert (err.column, err.field) == (column, field), str(err)
    assert message in str(err)
    if column is not None:
        assert f"column {column!r}" in str(err)
    if field is not None:
        assert f"field {field!r}" in str(err)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"schema": "osprey.feature_spec/1", "columns": [}', "not valid JSON"),
        ('{"schema": "a", "schema": "b", "columns": []}', "duplicate key 'schema'"),
        ('{"schema": "osprey.feature_spec/1", "columns": [{"name": "x", "kind": "numeric",'
         ' "clip": {"lo": NaN}}]}', "NaN is not JSON"),
        (b'\xff{}', "not valid UTF-8"),
        ("[]", "must be an object, got an array"),
    ],
)
def test_spec_json_errors(text: str | bytes, message: str) -> None:
    with pytest.raises(FeatureSpecError, match=message):
        FeatureSpec.from_json(text)


def test_spec_built_in_python_is_validated() -> None:
    with pytest.raises(FeatureSpecError, match=r"column 'x', field 'standardize.std'"):
        FeatureSpec((NumericColumn("x", standardize=Standardize(0.0, 0.0)),))
    with pytest.raises(FeatureSpecError, match=r"column 'x', field 'clip.lo': must be finite"):
        FeatureSpec((NumericColumn("x", clip=Clip(lo=math.nan)),))
    with pytest.raises(FeatureSpecError, match=r"values\[0\]': is not valid UTF-8"):
        FeatureSpec((CategoricalColumn("c", Vocabulary(values=(b"\xff",))),))
    spec = FeatureSpec((CategoricalColumn("c", Vocabulary(values=("a", b"b"))),))
    assert spec.columns[0].encode.values == (b"a", b"b")  # type: ignore[union-attr]


# -- profile validation -------------------------------------------------------------
PROFILE_ERRORS = [
    (("schema",), "osprey.reference_profile/9", None, "schema", "unsupported schema"),
    (("rows",), -1, None, "rows", ">= 0"),
    (("rows",), 5, "amount", "counts", "add up to 4, but the profile has 5 rows"),
    (("extra",), 1, None, "extra", "unknown key"),
    (("features",), [], None, "features", "at least one feature"),
    (("features", 0, "edges"), [0], "amount", "edges", "at least 2 edges"),
    (("features", 0, "edges"), [0, 2, 1], "amount", "edges[2]", "strictly increasing"),
    (("features", 0, "edges"), [0, 1, "2"], "amount", "edges[2]", "must be a number"),
    (("features", 0, "counts"), [1, 0, 1, 1], "amount", "counts", "needs 5 bins"),
    (("features", 0, "counts"), [1, 0, 3, 1, -1], "amount", "counts[4]", ">= 0"),
    (("features", 0, "counts"), [1, 0, 1, 1, 1.0], "amount", "counts[4]", "must be an integer"),
    (("features", 0, "bins"), 3, "amount", "bins", "unknown key"),
    (("features", 1, "name"), "amount", "amount", "name", "duplicate feature name"),
    (("features", 1, "kind"), "text", "age", "kind", "'numeric' or 'categorical'"),
    (("features", 1, "name"), None, None, "features[1].name", "must be a string"),
    (("features", 2, "vocabulary"), ["a", "a"], "merchant", "vocabulary[1]", "duplicate value"),
    (("features", 2, "vocabulary"), ["a", ""], "merchant", "vocabulary[1]", "its own bin"),
    (("features", 2, "vocabulary"), None, "merchant", "vocabulary", "must be an array"),
    (("features", 2, "counts"), [1, 1, 2], "merchant", "counts", "needs 4 bins"),
    (("score", "edges"), [0, 0], None, "score.edges[1]", "strictly increasing"),
    (("score", "counts"), [0, 0, 2, 1, 0], None, "score.counts", "add up to 3"),
    (("score", "bins"), 20, None, "score.bins", "unknown key"),
]


@pytest.mark.parametrize(("path", "value", "column", "field", "message"), PROFILE_ERRORS)
def test_profile_validation(path: tuple[Any, ...], value: Any, column: str | None,
                            field: str | None, message: str) -> None:
    with pytest.raises(ReferenceProfileError) as info:
        ReferenceProfile.from_dict(mutated(PROFILE, path, value))
    err = info.value
    assert (err.column, err.field) == (column, field), str(err)
    assert message in str(err)


def test_profile_without_score() -> None:
    profile = ReferenceProfile.from_dict(mutated(PROFILE, ("score",), None))
    assert profile.score is None
    assert ReferenceProfile.from_json(profile.to_json()) == profile


def test_plan_refuses_a_profile_of_other_columns() -> None:
    spec = FeatureSpec.from_dict(FITTED)
    swapped = mutated(PROFILE, ("features", 1, "name"), "years")
    with pytest.raises(PlanError, match=r"column 'age': the profile's feature #1 is 'years'"):
        compile_plan(spec, ReferenceProfile.from_dict(swapped))
    kinds = mutated(PROFILE, ("features", 3),
                    {"name": "card", "kind": "numeric", "edges": [0, 1], "counts": [0, 0, 4, 0]})
    with pytest.raises(PlanError, match="spec says categorical but the profile says numeric"):
        compile_plan(spec, ReferenceProfile.from_dict(kinds))


# -- fitting, checked by hand ---------------------------------------------------------
def test_fit_mean_impute_then_standardize_is_exact() -> None:
    spec = FeatureSpec((NumericColumn("x", impute=Impute("mean"), standardize=Standardize()),))
    fitted = spec.fit({"x": np.array([1.0, 2.0, np.nan, 5.0])})
    column = fitted.columns[0]
    assert isinstance(column, NumericColumn)
    assert column.impute == Impute("mean", 8 / 3)
    # imputed [1, 2, 8/3, 5]: mean 8/3, population variance (25 + 4 + 0 + 49) / 36
    assert column.standardize is not None
    assert column.standardize.mean == pytest.approx(8 / 3, abs=1e-15)
    assert column.standardize.std == pytest.approx(math.sqrt(78 / 36), abs=1e-15)
    profile = fitted.reference_profile({"x": np.array([1.0, 2.0, np.nan, 5.0])})
    plan = compile_plan(fitted, profile)
    x = np.array([1.0, np.nan, 5.0, -1.0], dtype=np.float32)
    matrix, counts = transform(plan, {"x": x}, 4)
    mean, std = column.standardize.mean, column.standardize.std
    expected = np.array([(1 - mean) / std, (8 / 3 - mean) / std, (5 - mean) / std,
                         (-1 - mean) / std], dtype=np.float32)
    np.testing.assert_array_equal(matrix[:, 0], expected)
    assert matrix[1, 0] == pytest.approx(0.0, abs=1e-6)
    # profile edges from [1, 2, 5] (deciles), the row NaN is "missing"; -1 is "below"
    assert counts[0] == 1 and counts[1] == 1 and counts[-1] == 0 and counts.sum() == 4


def test_fit_median_clip_log1p_and_quantile_edges() -> None:
    spec = FeatureSpec((
        NumericColumn("m", impute=Impute("median")),
        NumericColumn("c", impute=Impute("constant", -2.0), clip=Clip(lo=-1.0), log1p=True),
        NumericColumn("q", impute=Impute("constant", 0.0), bucketize=Bucketize(quantiles=4)),
    ))
    frame = {
        "m": np.array([1, np.nan, 3, 10, np.inf, 2]),  # median of the finite 1, 3, 10, 2
        "c": np.array([np.nan, -5, 0, 3, 2, 1]),
        "q": np.arange(1, 7, dtype=np.int64),
    }
    fitted = spec.fit(frame)
    m, c, q = fitted.columns
    assert isinstance(m, NumericColumn) and m.impute == Impute("median", 2.5)
    assert isinstance(c, NumericColumn) and c.impute == Impute("constant", -2.0)
    assert isinstance(q, NumericColumn) and q.bucketize is not None
    assert q.bucketize.edges == (2.25, 3.5, 4.75)  # linear quantiles of 1..6 at 1/4, 2/4, 3/4

    profile = fitted.reference_profile(frame)
    plan = compile_plan(fitted, profile)
    batch = {
        "m": np.array([np.nan, 7], dtype=np.float32),
        "c": np.array([np.nan, 3], dtype=np.float32),
        "q": np.array([2.25, 100], dtype=np.float32),
    }
    matrix, _ = transform(plan, batch, 2)
    assert matrix[:, 0].tolist() == [2.5, 7.0]
    # NaN → -2 → clipped to -1 → -log1p(1); 3 → log1p(3)
    assert matrix[:, 1].tolist() == [np.float32(-math.log1p(1.0)), np.float32(math.log1p(3.0))]
    assert matrix[:, 2:].tolist() == [[0, 1, 0, 0], [0, 0, 0, 1]]


def test_fit_constant_column() -> None:
    spec = FeatureSpec((NumericColumn("k", standardize=Standardize()),))
    fitted = spec.fit({"k": np.full(5, 3.0)})
    assert fitted.columns[0].standardize == Standardize(3.0, 1.0)  # type: ignore[union-attr]
    profile = fitted.reference_profile({"k": np.full(5, 3.0)})
    feature = profile.features[0]
    assert isinstance(feature, NumericReference)
    assert feature.edges == (3.0, float(np.nextafter(3.0, np.inf)))
    assert feature.counts == (0, 0, 5, 0)


def test_fit_vocabulary_top_k_min_count_and_order() -> None:
    values = ["b"] * 4 + ["a"] * 4 + ["c"] * 3 + [""] * 3 + ["d"] * 1 + [None, math.nan]
    values += [b"\xff\xfe"] * 9  # the most frequent, but not UTF-8: never learned
    spec = FeatureSpec((CategoricalColumn("v", Vocabulary(max_size=4, min_count=2)),))
    fitted = spec.fit({"v": np.array(values, dtype=object)})
    # a and b tie at 4 (byte order), "" counts 3 + None + NaN = 5, c 3; d is below min_count
    assert fitted.columns[0].encode.values == (b"", b"a", b"b", b"c")  # type: ignore[union-attr]
    fitted2 = FeatureSpec((CategoricalColumn("v", Vocabulary(max_size=2, min_count=4)),)).fit(
        {"v": values})
    assert fitted2.columns[0].encode.values == (b"", b"a")  # type: ignore[union-attr]


def test_profile_vocabulary_and_special_bins() -> None:
    spec = FeatureSpec((
        CategoricalColumn("v", Vocabulary(min_count=1)),
        CategoricalColumn("h", HashBuckets(4, seed=1)),
    ))
    frame = {"v": ["x", "y", "x", "", "x"], "h": ["p", "q", "p", "", "\u00e9"]}
    fitted = spec.fit(frame)
    assert fitted.columns[0].encode.values == (b"x", b"", b"y")  # type: ignore[union-attr]
    profile = fitted.reference_profile(frame, vocabulary_size=2)
    v, h = profile.features
    assert isinstance(v, CategoricalReference) and isinstance(h, CategoricalReference)
    assert v.vocabulary == (b"x", b"y") and v.counts == (1, 0, 3, 1)
    assert h.vocabulary == (b"p", b"q") and h.counts == (1, 1, 2, 1)  # é is out-of-vocabulary
    plan = compile_plan(fitted, profile)
    batch = {"v": encode_bytes([b"", b"zz", b"y", b"\xff"]),
             "h": encode_bytes([b"q", b"", b"new", b"p"])}
    counts = count(plan, batch, 4)
    assert counts.tolist() == [1, 2, 0, 1, 1, 1, 1, 1]  # v: empty, oov, x, y; h: empty, oov, p, q


def test_profile_scores() -> None:
    spec = FeatureSpec((NumericColumn("x"),))
    scores = [0.0, 0.04, 0.05, 0.5, 1.0, np.nan, 1.5, -0.1]
    profile = spec.reference_profile({"x": np.arange(8.0)}, scores)
    assert profile.score is not None
    assert profile.score.edges == score_edges(20)
    counts = profile.score.counts
    assert (counts[0], counts[1], counts[-1]) == (1, 1, 1)  # NaN, below 0, above 1
    assert counts[2] == 2 and counts[3] == 1  # [0, .05) holds 0 and .04; .05 opens bin 3
    assert counts[12] == 1 and counts[21] == 1  # 0.5 opens [.5, .55); 1.0 closes the last bin
    assert sum(counts) == 8
    assert isinstance(profile.score, ScoreReference)


@pytest.mark.parametrize(
    ("frame", "message", "column", "field"),
    [
        ({"x": [1.0]}, "missing from the training frame", "c", None),
        ({"x": [1.0, 2.0], "c": ["a"]}, "has 1 rows, other columns have 2", "c", None),
        ({"x": [], "c": []}, "no rows", None, None),
        ({"x": [np.nan, np.inf], "c": ["a", "a"]}, "no finite values to learn the mean",
         "x", "impute.value"),
        ({"x": ["1", "2"], "c": ["a", "a"]}, "must be real numbers", "x", None),
        ({"x": [1.0, 2.0], "c": ["a", "b"]}, "vocabulary would be empty", "c",
         "vocabulary.values"),
        ({"x": [1.0, 2.0], "c": ["a", 3]}, "row 1: categorical values must be str or bytes",
         "c", None),
        ({"x": [1.0, 2.0], "c": ["a", "x" * 9]}, "row 1 is 9 bytes, longer than max_bytes 8",
         "c", "max_bytes"),
    ],
)
def test_fit_errors(frame: dict[str, Any], message: str, column: str | None,
                    field: str | None) -> None:
    spec = FeatureSpec((
        NumericColumn("x", impute=Impute("mean")),
        CategoricalColumn("c", Vocabulary(min_count=2), max_bytes=8),
    ))
    with pytest.raises(FitError) as info:
        spec.fit(frame)
    assert message in str(info.value)
    assert (info.value.column, info.value.field) == (column, field)


def test_profile_errors() -> None:
    spec = FeatureSpec((NumericColumn("x", impute=Impute("mean")),))
    with pytest.raises(FitError, match="spec is not fitted"):
        spec.reference_profile({"x": [1.0]})
    fitted = spec.fit({"x": [1.0, 2.0]})
    with pytest.raises(FitError, match="3 scores for 2 rows"):
        fitted.reference_profile({"x": [1.0, 2.0]}, [0.1, 0.2, 0.3])
    with pytest.raises(FitError, match="no finite values to place"):
        fitted.reference_profile({"x": [np.nan, np.nan]})


def test_refit_relearns_parameters() -> None:
    spec = FeatureSpec((NumericColumn("x", impute=Impute("mean"), standardize=Standardize()),))
    once = spec.fit({"x": [0.0, 2.0]})
    twice = once.fit({"x": [10.0, 20.0, 30.0]})
    assert twice.columns[0].impute == Impute("mean", 20.0)  # type: ignore[union-attr]
    assert twice.columns[0].standardize.mean == 20.0  # type: ignore[union-attr]
