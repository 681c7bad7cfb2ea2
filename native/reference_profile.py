"""``ReferenceProfile``: the training distribution that drift is measured against.

One entry per raw column of the spec (same names, same order) with its bins and
the training counts in them, plus the score histogram when scores were given.
Values are binned *raw*, before imputation or any other transform, and each kind
has a fixed layout with special bins first:

numeric (edges e[0] < ... < e[m-1], m >= 2; m + 2 bins)::

    0        missing      NaN
    1        below        x < e[0]            (-inf lands here)
    1 + k    interior k   e[k-1] <= x < e[k]  for k = 1..m-2
    m        interior m-1 e[m-2] <= x <= e[m-1] (the last one is closed)
    m + 1    above        x > e[m-1]          (+inf lands here)

categorical (vocabulary v[0..V-1] of non-empty values; V + 2 bins)::

    0        empty        the empty string (a client's "no value")
    1        oov          any other value not in the vocabulary
    2 + i    v[i]         exactly the bytes of v[i]

``ordered_bins`` gives the (start, stop) range of bins that lie on an axis (for a KS
distance on the binned CDF): numeric bins 1..m+1; categorical bins have none.

The score histogram uses the numeric layout; its edges are fixed,
``linspace(0, 1, score_bins + 1)``, so histograms of two model versions are directly
comparable (a rollout compares the candidate's scores with the stable version's).

JSON (``"schema": "osprey.reference_profile/1"``)::

    {"schema": "osprey.reference_profile/1", "rows": 1000,
     "features": [{"name": "amount", "kind": "numeric", "edges": [0.5, 3, 9.25],
                   "counts": [3, 0, 498, 499, 0]},
                  {"name": "merchant", "kind": "categorical", "vocabulary": ["a", "b"],
                   "counts": [10, 40, 600, 350]}],
     "score": {"edges": [0, 0.05, ..., 1], "counts": [...]}}

Validation on load raises ``ReferenceProfileError`` naming the feature and field:
unknown keys, wrong types, too few or unsorted edges, counts of the wrong length,
negative counts, counts that do not add up to ``rows``, duplicate vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from .feature_errors import ReferenceProfileError
from .json_document import Fields, describe, dump, parse

SCHEMA = "osprey.reference_profile/1"

NUMERIC_MISSING = 0
NUMERIC_BELOW = 1
CATEGORICAL_EMPTY = 0
CATEGORICAL_OOV = 1
SPECIAL_BINS = 2  # both layouts: two special bins before the regular ones (+1 above)
DEFAULT_BINS = 10
DEFAULT_SCORE_BINS = 20
DEFAULT_PROFILE_VOCABULARY = 100


def score_edges(bins: int = DEFAULT_SCORE_BINS) -> tuple[float, ...]:
    """The fixed score-histogram edges: ``bins`` equal bins on [0, 1]."""
    if bins < 1:
        raise ValueError(f"score bins must be >= 1, got {bins}")
    return tuple(float(e) for e in np.linspace(0.0, 1.0, bins + 1))


def _fmt(x: float) -> str:
    return f"{x:.6g}"


@dataclass(frozen=True)
class NumericReference:
    """Bins of a numeric column (layout in the module docstring)."""

    name: str
    edges: tuple[float, ...]
    counts: tuple[int, ...]
    kind: ClassVar[str] = "numeric"

    def __post_init__(self) -> None:
        object.__setattr__(self, "edges", tuple(float(e) for e in self.edges))
        object.__setattr__(self, "counts", tuple(int(c) for c in self.counts))

    @property
    def n_bins(self) -> int:
        """m + 2 for m edges."""
        return len(self.edges) + 2

    @property
    def ordered_bins(self) -> tuple[int, int]:
        """(start, stop) of the bins on the value axis: below..above, not missing."""
        return NUMERIC_BELOW, self.n_bins

    def bin_labels(self) -> list[str]:
        """Human-readable names of the bins, in bin order."""
        e = self.edges
        inner = [f"[{_fmt(e[k - 1])}, {_fmt(e[k])})" for k in range(1, len(e) - 1)]
        inner.append(f"[{_fmt(e[-2])}, {_fmt(e[-1])}]")
        return ["missing", f"< {_fmt(e[0])}", *inner, f"> {_fmt(e[-1])}"]


@dataclass(frozen=True)
class CategoricalReference:
    """Bins of a categorical column (layout in the module docstring)."""

    name: str
    vocabulary: tuple[bytes, ...]
    counts: tuple[int, ...]
    kind: ClassVar[str] = "categorical"

    def __post_init__(self) -> None:
        values = tuple(v.encode() if isinstance(v, str) else bytes(v) for v in self.vocabulary)
        object.__setattr__(self, "vocabulary", values)
        object.__setattr__(self, "counts", tuple(int(c) for c in self.counts))

    @property
    def n_bins(self) -> int:
        """V + 2 for V vocabulary values."""
        return len(self.vocabulary) + 2

    @property
    def ordered_bins(self) -> None:
        """Categories have no order (a KS distance does not apply)."""
        return None

    def bin_labels(self) -> list[str]:
        """Human-readable names of the bins, in bin order."""
        words = [f"={v.decode('utf-8')}" for v in self.vocabulary]
        return ["empty", "out-of-vocabulary", *words]


@dataclass(frozen=True)
class ScoreReference:
    """The score histogram: numeric layout over fixed edges on [0, 1]."""

    edges: tuple[float, ...]
    counts: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "edges", tuple(float(e) for e in self.edges))
        object.__setattr__(self, "counts", tuple(int(c) for c in self.counts))

    @property
    def n_bins(self) -> int:
        """m + 2 for m edges."""
        return len(self.edges) + 2

    @property
    def ordered_bins(self) -> tuple[int, int]:
        """(start, stop) of the bins on the score axis: below..above, not missing."""
        return NUMERIC_BELOW, self.n_bins


Feature = NumericReference | CategoricalReference


@dataclass(frozen=True)
class ReferenceProfile:
    """Per raw column, bins and training counts; optionally the score histogram."""

    rows: int
    features: tuple[Feature, ...]
    score: ScoreReference | None = None
    schema: ClassVar[str] = SCHEMA

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features))
        _check_profile(self)

    @property
    def names(self) -> tuple[str, ...]:
        """Feature (raw column) names, in order."""
        return tuple(f.name for f in self.features)

    @property
    def bin_offsets(self) -> npt.NDArray[np.int64]:
        """[C + 1] offsets of each feature's bins in one flat counts array."""
        sizes = [f.n_bins for f in self.features]
        return np.concatenate(([0], np.cumsum(sizes, dtype=np.int64))).astype(np.int64)

    def flat_counts(self) -> npt.NDArray[np.int64]:
        """All features' counts concatenated, in the layout ``transform`` fills."""
        parts = [np.asarray(f.counts, dtype=np.int64) for f in self.features]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    # -- JSON ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The JSON document as Python objects."""
        features: list[dict[str, Any]] = []
        for f in self.features:
            if isinstance(f, NumericReference):
                features.append({"name": f.name, "kind": f.kind, "edges": list(f.edges),
                                 "counts": list(f.counts)})
            else:
                features.append({"name": f.name, "kind": f.kind,
                                 "vocabulary": [v.decode("utf-8") for v in f.vocabulary],
                                 "counts": list(f.counts)})
        score = None
        if self.score is not None:
            score = {"edges": list(self.score.edges), "counts": list(self.score.counts)}
        return {"schema": SCHEMA, "rows": self.rows, "features": features, "score": score}

    def to_json(self) -> str:
        """The JSON document (strict JSON; ``from_json`` reads it back equal)."""
        return dump(self.to_dict())

    @classmethod
    def from_json(cls, text: str | bytes) -> ReferenceProfile:
        """Parse and validate; ``ReferenceProfileError`` says what is wrong."""
        return cls.from_dict(parse(text, ReferenceProfileError))

    @classmethod
    def from_dict(cls, document: object) -> ReferenceProfile:
        """Validate a parsed JSON document."""
        top = Fields(document, error=ReferenceProfileError, column=None, prefix="",
                     required=("schema", "rows", "features"), optional=("score",))
        schema = top.string("schema")
        if schema != SCHEMA:
            top.fail("schema", f"unsupported schema {schema!r} (this build reads {SCHEMA!r})")
        rows = top.integer("rows", minimum=0)
        items = top.raw("features")
        if not isinstance(items, list):
            top.fail("features", "must be an array of feature objects")
        features = [_feature_from_dict(item, i) for i, item in enumerate(items)]
        score = None
        if top.has("score"):
            g = top.child("score", required=("edges", "counts"))
            edges = g.numbers("edges")
            if edges is None:
                g.fail("score.edges", "must be an array of numbers, got null")
            score = ScoreReference(tuple(edges), tuple(g.integers("counts")))
        return cls(rows=rows, features=tuple(features), score=score)  # type: ignore[arg-type]


def _feature_from_dict(value: object, position: int) -> Feature:
    where = f"features[{position}]"
    if not isinstance(value, dict):
        raise ReferenceProfileError(f"must be an object, got {describe(value)}", field=where)
    name = value.get("name")
    if not isinstance(name, str):
        raise ReferenceProfileError(f"must be a string, got {describe(name)}",
                                    field=f"{where}.name")
    kind = value.get("kind")
    if kind == "numeric":
        f = Fields(value, error=ReferenceProfileError, column=name, prefix="",
                   required=("name", "kind", "edges", "counts"))
        return NumericReference(name, tuple(f.numbers("edges") or ()),
                                tuple(f.integers("counts")))
    if kind == "categorical":
        f = Fields(value, error=ReferenceProfileError, column=name, prefix="",
                   required=("name", "kind", "vocabulary", "counts"))
        words = f.strings("vocabulary")
        if words is None:
            f.fail("vocabulary", "must be an array of strings, got null")
        return CategoricalReference(name, tuple(s.encode("utf-8") for s in words),
                                    tuple(f.integers("counts")))
    raise ReferenceProfileError(f"must be 'numeric' or 'categorical', got {kind!r}",
                                column=name, field="kind")


# -- semantic checks ---------------------------------------------------------------
def _fail(column: str | None, field: str, message: str) -> None:
    raise ReferenceProfileError(message, column=column, field=field)


def _check_edges(column: str | None, prefix: str, edges: Sequence[float]) -> None:
    if len(edges) < 2:
        _fail(column, f"{prefix}edges", f"needs at least 2 edges, got {len(edges)}")
    for i, e in enumerate(edges):
        if not math.isfinite(e):
            _fail(column, f"{prefix}edges[{i}]", f"must be finite, got {e}")
        if i and not edges[i - 1] < e:
            _fail(column, f"{prefix}edges[{i}]",
                  f"edges must be strictly increasing ({edges[i - 1]} then {e})")


def _check_counts(column: str | None, prefix: str, counts: Sequence[int], n_bins: int,
                  rows: int) -> None:
    if len(counts) != n_bins:
        _fail(column, f"{prefix}counts", f"needs {n_bins} bins for this layout, got {len(counts)}")
    for i, c in enumerate(counts):
        if c < 0:
            _fail(column, f"{prefix}counts[{i}]", f"must be >= 0, got {c}")
    if sum(counts) != rows:
        _fail(column, f"{prefix}counts",
              f"add up to {sum(counts)}, but the profile has {rows} rows")


def _check_profile(p: ReferenceProfile) -> None:
    if isinstance(p.rows, bool) or not isinstance(p.rows, int) or p.rows < 0:
        _fail(None, "rows", f"must be an integer >= 0, got {p.rows!r}")
    if not p.features:
        _fail(None, "features", "a profile needs at least one feature")
    seen: set[str] = set()
    for f in p.features:
        if f.name in seen:
            _fail(f.name, "name", "duplicate feature name")
        seen.add(f.name)
        if isinstance(f, NumericReference):
            _check_edges(f.name, "", f.edges)
        else:
            words: set[bytes] = set()
            for i, v in enumerate(f.vocabulary):
                where = f"vocabulary[{i}]"
                if not v:
                    _fail(f.name, where, "the empty string has its own bin; it is not vocabulary")
                try:
                    v.decode("utf-8")
                except UnicodeDecodeError:
                    _fail(f.name, where, "is not valid UTF-8")
                if v in words:
                    _fail(f.name, where, f"duplicate value {v.decode('utf-8')!r}")
                words.add(v)
        _check_counts(f.name, "", f.counts, f.n_bins, p.rows)
    if p.score is not None:
        _check_edges(None, "score.", p.score.edges)
        _check_counts(None, "score.", p.score.counts, p.score.n_bins, p.rows)
