"""Learning a ``FeatureSpec`` and its ``ReferenceProfile`` from a training frame.

A frame maps column names to arrays of one length N (columns the spec does not
name, such as the label, are ignored). Numeric columns may have any real dtype and
are rounded to float32 first, exactly as a client sends them, then widened to
float64. Categorical columns hold ``bytes`` or ``str`` (UTF-8 encoded); ``None`` and
float NaN (pandas' missing value) become the empty string, which is what a client
without a value sends in a BYTES tensor. A categorical value longer than the
column's ``max_bytes`` is refused here as serving would refuse it.

``fit_spec`` learns each numeric column stage by stage, each stage on the output of
the previous ones (as the transform applies them):

* impute mean/median: over the finite values of the raw column;
* standardize: mean and population std (ddof=0) over the finite values after
  impute/clip/log1p; a std of 0 (constant column) becomes 1, as scikit-learn does;
* bucketize quantiles q: the distinct values among the j/q quantiles (j = 1..q-1,
  NumPy's default linear interpolation) of the finite transformed values;
* vocabulary: values seen at least ``min_count`` times, most frequent first, ties
  by byte order, at most ``max_size``; values that are not UTF-8 are never learned.

``fit_profile`` bins the raw columns for drift:

* numeric: the distinct values among the quantiles 0, 1/B, ..., 1 (B = ``bins``)
  of the finite raw values, so the training minimum and maximum are the outer
  edges (nothing in training falls below or above); a constant column gets
  [c, nextafter(c, +inf)];
* categorical: the spec's vocabulary without the empty string (vocabulary
  columns), or the ``vocabulary_size`` most frequent non-empty UTF-8 values
  (hashed columns);
* counts: the training frame counted by the NumPy twin itself (``count``), so
  reference and live counts share one definition;
* scores: ``score_bins`` equal bins on [0, 1] (``reference_profile.score_edges``).
"""

from __future__ import annotations

import math
import struct
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt

from .feature_errors import FitError
from .feature_spec import (
    CategoricalColumn,
    Column,
    FeatureSpec,
    HashBuckets,
    NumericColumn,
    Standardize,
    Vocabulary,
)
from .reference_profile import (
    DEFAULT_BINS,
    DEFAULT_PROFILE_VOCABULARY,
    DEFAULT_SCORE_BINS,
    CategoricalReference,
    NumericReference,
    ReferenceProfile,
    ScoreReference,
    score_edges,
)
from .transform_plan import compile_plan, numeric_ops
from .transform_py import apply_numeric_ops, count, count_scores

F64 = npt.NDArray[np.float64]
_LENGTH = struct.Struct("<I")


# -- reading a frame ---------------------------------------------------------------
def frame_rows(spec: FeatureSpec, frame: Mapping[str, Any]) -> int:
    """N, after checking every spec column is present with N >= 1 rows."""
    rows: int | None = None
    for name in spec.column_names:
        if name not in frame:
            raise FitError("missing from the training frame", column=name)
        n = len(frame[name])
        if rows is not None and n != rows:
            raise FitError(f"has {n} rows, other columns have {rows}", column=name)
        rows = n
    if not rows:
        raise FitError("the training frame has no rows")
    return rows


def numeric_column(name: str, values: Any) -> F64:
    """A numeric training column as float64 [N], rounded through float32."""
    array = np.asarray(values)
    if array.dtype.kind not in "biuf":
        raise FitError(f"numeric values must be real numbers, got dtype {array.dtype}",
                       column=name)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise FitError(f"must be one-dimensional, got shape {list(array.shape)}", column=name)
    return array.astype(np.float32).astype(np.float64)


def categorical_column(name: str, values: Any, max_bytes: int) -> list[bytes]:
    """A categorical training column as raw bytes, one per row."""
    array = np.asarray(values, dtype=object) if not isinstance(values, np.ndarray) else values
    out: list[bytes] = []
    for i, v in enumerate(array.reshape(-1).tolist()):
        if isinstance(v, bytes):
            data = v
        elif isinstance(v, str):
            data = v.encode("utf-8")
        elif v is None or (isinstance(v, float) and math.isnan(v)):
            data = b""
        elif isinstance(v, bytearray | memoryview):
            data = bytes(v)
        else:
            raise FitError(f"row {i}: categorical values must be str or bytes, got "
                           f"{type(v).__name__}", column=name)
        if len(data) > max_bytes:
            raise FitError(f"row {i} is {len(data)} bytes, longer than max_bytes {max_bytes}",
                           column=name, field="max_bytes")
        out.append(data)
    return out


def encode_bytes(values: Sequence[bytes]) -> bytes:
    """Values as one KServe BYTES buffer (4-byte little-endian length, then the bytes)."""
    return b"".join(_LENGTH.pack(len(v)) + v for v in values)


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def top_values(values: Sequence[bytes], *, max_size: int, min_count: int,
               keep_empty: bool) -> tuple[bytes, ...]:
    """Most frequent UTF-8 values (ties by bytes) seen >= min_count times, at most max_size."""
    counted = Counter(values)
    ranked = sorted(counted.items(), key=lambda item: (-item[1], item[0]))
    chosen = [v for v, n in ranked
              if n >= min_count and (keep_empty or v) and _is_utf8(v)]
    return tuple(chosen[:max_size])


# -- fitting the spec ----------------------------------------------------------------
def fit_spec(spec: FeatureSpec, frame: Mapping[str, Any]) -> FeatureSpec:
    """A copy of ``spec`` with every learned parameter fitted on ``frame``."""
    frame_rows(spec, frame)
    columns: list[Column] = []
    for c in spec.columns:
        if isinstance(c, NumericColumn):
            columns.append(_fit_numeric(c, numeric_column(c.name, frame[c.name])))
        else:
            values = categorical_column(c.name, frame[c.name], c.max_bytes)
            columns.append(_fit_categorical(c, values))
    return FeatureSpec(tuple(columns))


def _finite(c: NumericColumn, y: F64, field: str, what: str) -> F64:
    finite = y[np.isfinite(y)]
    if finite.size == 0:
        raise FitError(f"no finite values to learn {what} from", column=c.name, field=field)
    return finite


def _apply(c: NumericColumn, x: F64) -> F64:
    ops, params = numeric_ops(c)
    return apply_numeric_ops(x, ops, params)


def _fit_numeric(c: NumericColumn, x: F64) -> NumericColumn:
    if c.impute is not None and c.impute.strategy != "constant":
        finite = _finite(c, x, "impute.value", f"the {c.impute.strategy}")
        value = np.mean(finite) if c.impute.strategy == "mean" else np.median(finite)
        c = replace(c, impute=replace(c.impute, value=float(value)))
    standardize, bucketize = c.standardize, c.bucketize
    c = replace(c, standardize=None, bucketize=None)
    if standardize is not None:
        finite = _finite(c, _apply(c, x), "standardize", "the mean and std")
        mean, std = float(np.mean(finite)), float(np.std(finite))
        if not math.isfinite(mean) or not math.isfinite(std):
            raise FitError(f"mean {mean} / std {std} overflow; clip or log1p the column first",
                           column=c.name, field="standardize")
        c = replace(c, standardize=Standardize(mean, std if std > 0 else 1.0))
    if bucketize is not None and bucketize.quantiles is not None:
        finite = _finite(c, _apply(c, x), "bucketize.edges", "the quantile edges")
        q = bucketize.quantiles
        edges = np.unique(np.quantile(finite, np.arange(1, q) / q))
        bucketize = replace(bucketize, edges=tuple(float(e) for e in edges))
    return replace(c, bucketize=bucketize)


def _fit_categorical(c: CategoricalColumn, values: list[bytes]) -> CategoricalColumn:
    e = c.encode
    if isinstance(e, HashBuckets):
        return c
    learned = top_values(values, max_size=e.max_size, min_count=e.min_count, keep_empty=True)
    if not learned:
        raise FitError(f"no UTF-8 value is seen at least min_count={e.min_count} times; the "
                       "vocabulary would be empty", column=c.name, field="vocabulary.values")
    return replace(c, encode=replace(e, values=learned))


# -- the reference profile -------------------------------------------------------------
def fit_profile(
    spec: FeatureSpec,
    frame: Mapping[str, Any],
    scores: Sequence[float] | np.ndarray | None = None,
    *,
    bins: int = DEFAULT_BINS,
    vocabulary_size: int = DEFAULT_PROFILE_VOCABULARY,
    score_bins: int = DEFAULT_SCORE_BINS,
) -> ReferenceProfile:
    """The drift reference of ``frame`` under the fitted ``spec`` (rules in the module doc)."""
    if bins < 1 or vocabulary_size < 0 or score_bins < 1:
        raise FitError(f"bins ({bins}) and score_bins ({score_bins}) must be >= 1 and "
                       f"vocabulary_size ({vocabulary_size}) >= 0")
    missing = spec.unfitted()
    if missing is not None:
        raise FitError("the spec is not fitted (run FeatureSpec.fit first)", column=missing[0],
                       field=missing[1])
    rows = frame_rows(spec, frame)
    features: list[NumericReference | CategoricalReference] = []
    batch: dict[str, object] = {}
    for c in spec.columns:
        if isinstance(c, NumericColumn):
            x = numeric_column(c.name, frame[c.name])
            features.append(NumericReference(c.name, _profile_edges(c.name, x, bins), ()))
            batch[c.name] = x.astype(np.float32)
            continue
        values = categorical_column(c.name, frame[c.name], c.max_bytes)
        if isinstance(c.encode, Vocabulary):
            words = tuple(v for v in c.encode.values or () if v)
        else:
            words = top_values(values, max_size=vocabulary_size, min_count=1, keep_empty=False)
        features.append(CategoricalReference(c.name, words, ()))
        batch[c.name] = encode_bytes(values)
    empty = ReferenceProfile(0, tuple(replace(f, counts=(0,) * f.n_bins) for f in features))
    plan = compile_plan(spec, empty)
    counts = count(plan, batch, rows)
    counted = tuple(
        replace(f, counts=tuple(counts[plan.bin_ptr[i]:plan.bin_ptr[i + 1]].tolist()))
        for i, f in enumerate(features)
    )
    return ReferenceProfile(rows, counted, _score_reference(scores, rows, score_bins))


def _profile_edges(name: str, x: F64, bins: int) -> tuple[float, ...]:
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        raise FitError("no finite values to place the profile's bin edges", column=name)
    edges = np.unique(np.quantile(finite, np.linspace(0.0, 1.0, bins + 1)))
    if edges.size == 1:
        edges = np.array([edges[0], np.nextafter(edges[0], np.inf)])
    return tuple(float(e) for e in edges)


def _score_reference(scores: Sequence[float] | np.ndarray | None, rows: int,
                     score_bins: int) -> ScoreReference | None:
    if scores is None:
        return None
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    if values.shape[0] != rows:
        raise FitError(f"{values.shape[0]} scores for {rows} rows", field="scores")
    edges = score_edges(score_bins)
    return ScoreReference(edges, tuple(count_scores(edges, values).tolist()))
