"""``FeatureSpec``: the raw columns a client sends and how they become the model's matrix.

A spec is an ordered list of raw columns. Each is *numeric* (sent as FP32) or
*categorical* (sent as BYTES) and carries its transforms; every column produces one
or more float32 features, side by side in column order, so the matrix width ``F``
and every feature's name follow from the spec alone (``feature_names``).

The JSON document (``"schema": "osprey.feature_spec/1"``; native/README.md has the
full reference)::

    {"schema": "osprey.feature_spec/1",
     "columns": [
      {"name": "amount", "kind": "numeric", "personal": false,
       "impute": {"strategy": "median", "value": 12.5},   # constant | mean | median
       "clip": {"lo": 0, "hi": 10000},                    # either bound may be null
       "log1p": true,                                     # sign(x) * log1p(|x|)
       "standardize": {"mean": 2.1, "std": 1.3},          # (x - mean) / std
       "bucketize": {"quantiles": 4, "edges": [-0.6, 0.1, 0.7], "output": "one_hot"}},
      {"name": "merchant", "kind": "categorical", "personal": false, "max_bytes": 256,
       "vocabulary": {"max_size": 100, "min_count": 5, "values": ["a", "b"],
                      "output": "one_hot"}},
      {"name": "card_id", "kind": "categorical", "personal": true, "max_bytes": 256,
       "hash": {"buckets": 64, "seed": 7, "output": "one_hot"}}]}

Numeric transforms run in one fixed order: impute → clip → log1p → standardize →
bucketize (each optional). Learned parameters (``impute.value`` for mean/median,
``standardize.mean``/``std``, ``bucketize.edges`` when ``quantiles`` is set,
``vocabulary.values``) may be null in a *template*; ``fit`` fills them, and a spec is
*fitted* when none is missing. ``personal`` marks columns the audit log stores as
keyed hashes. Every document is validated on load: errors are ``FeatureSpecError``
naming the column and the dotted field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .feature_columns import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MIN_COUNT,
    DEFAULT_VOCABULARY_SIZE,
    IMPUTE_STRATEGIES,
    MAX_BUCKETS,
    MAX_BYTES_LIMIT,
    MAX_SEED,
    OUTPUTS,
    Bucketize,
    CategoricalColumn,
    Clip,
    Column,
    HashBuckets,
    Impute,
    NumericColumn,
    Standardize,
    Vocabulary,
    check_columns,
    unfitted_numeric,
)
from .feature_errors import FeatureSpecError
from .json_document import Fields, describe, dump, parse

if TYPE_CHECKING:
    from .reference_profile import ReferenceProfile

__all__ = [
    "SCHEMA", "Bucketize", "CategoricalColumn", "Clip", "Column", "FeatureSpec", "HashBuckets",
    "Impute", "NumericColumn", "Standardize", "Vocabulary",
]

SCHEMA = "osprey.feature_spec/1"

@dataclass(frozen=True)
class FeatureSpec:
    """The ordered raw columns and their transforms; validated on construction."""

    columns: tuple[Column, ...]
    schema: ClassVar[str] = SCHEMA
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(self.columns))
        check_columns(self.columns)
        object.__setattr__(self, "_index", {c.name: i for i, c in enumerate(self.columns)})

    # -- what the spec says -------------------------------------------------------
    @property
    def column_names(self) -> tuple[str, ...]:
        """The raw columns a client sends, in order."""
        return tuple(c.name for c in self.columns)

    @property
    def personal_columns(self) -> tuple[str, ...]:
        """Columns the audit log must store as keyed hashes."""
        return tuple(c.name for c in self.columns if c.personal)

    def column(self, name: str) -> Column:
        """The column called ``name`` (KeyError when there is none)."""
        return self.columns[self._index[name]]

    @property
    def is_fitted(self) -> bool:
        """Are all learned parameters present (the spec can be compiled)?"""
        return all(c.is_fitted for c in self.columns)

    def unfitted(self) -> tuple[str, str] | None:
        """The first (column, field) still waiting to be learned, or None."""
        for c in self.columns:
            if isinstance(c, NumericColumn):
                missing = unfitted_numeric(c)
                if missing is not None:
                    return c.name, missing
            elif not c.is_fitted:
                return c.name, "vocabulary.values"
        return None

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The names of the matrix's F columns, in order (needs a fitted spec)."""
        return tuple(name for c in self.columns for name in c.feature_names())

    @property
    def n_features(self) -> int:
        """F, the width of the transformed matrix."""
        return len(self.feature_names)

    # -- learning -----------------------------------------------------------------
    def fit(self, frame: Mapping[str, Any]) -> FeatureSpec:
        """A copy with every learned parameter fitted on ``frame`` (see ``native.feature_fit``)."""
        from .feature_fit import fit_spec

        return fit_spec(self, frame)

    def reference_profile(
        self,
        frame: Mapping[str, Any],
        scores: Sequence[float] | np.ndarray | None = None,
        **options: int,
    ) -> ReferenceProfile:
        """The drift reference of ``frame`` (and ``scores``) under this fitted spec.

        ``options``: ``bins`` (numeric quantile bins, default 10), ``vocabulary_size``
        (hashed columns' profile vocabulary, default 100), ``score_bins`` (default 20);
        see ``native.feature_fit.fit_profile``.
        """
        from .feature_fit import fit_profile

        return fit_profile(self, frame, scores, **options)

    # -- JSON ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The JSON document as Python objects."""
        return {"schema": SCHEMA, "columns": [_column_to_dict(c) for c in self.columns]}

    def to_json(self) -> str:
        """The JSON document (strict JSON; ``from_json`` reads it back equal)."""
        return dump(self.to_dict())

    @classmethod
    def from_json(cls, text: str | bytes) -> FeatureSpec:
        """Parse and validate a JSON document; ``FeatureSpecError`` says what is wrong."""
        return cls.from_dict(parse(text, FeatureSpecError))

    @classmethod
    def from_dict(cls, document: object) -> FeatureSpec:
        """Validate a parsed JSON document."""
        top = Fields(document, error=FeatureSpecError, column=None, prefix="",
                     required=("schema", "columns"))
        schema = top.string("schema")
        if schema != SCHEMA:
            top.fail("schema", f"unsupported schema {schema!r} (this build reads {SCHEMA!r})")
        columns = top.raw("columns")
        if not isinstance(columns, list):
            top.fail("columns", "must be an array of column objects")
        return cls(tuple(_column_from_dict(c, i) for i, c in enumerate(columns)))


# -- JSON, column by column -------------------------------------------------------
def _column_to_dict(c: Column) -> dict[str, Any]:
    out: dict[str, Any] = {"name": c.name, "kind": c.kind, "personal": c.personal}
    if isinstance(c, NumericColumn):
        if c.impute is not None:
            out["impute"] = {"strategy": c.impute.strategy, "value": c.impute.value}
        if c.clip is not None:
            out["clip"] = {"lo": c.clip.lo, "hi": c.clip.hi}
        out["log1p"] = c.log1p
        if c.standardize is not None:
            out["standardize"] = {"mean": c.standardize.mean, "std": c.standardize.std}
        if c.bucketize is not None:
            b = c.bucketize
            edges = list(b.edges) if b.edges is not None else None
            out["bucketize"] = {"quantiles": b.quantiles, "edges": edges, "output": b.output}
        return out
    out["max_bytes"] = c.max_bytes
    e = c.encode
    if isinstance(e, Vocabulary):
        values = [v.decode("utf-8") for v in e.values] if e.values is not None else None
        out["vocabulary"] = {"max_size": e.max_size, "min_count": e.min_count,
                             "values": values, "output": e.output}
    else:
        out["hash"] = {"buckets": e.buckets, "seed": e.seed, "output": e.output}
    return out


_COMMON = ("name", "kind")
_NUMERIC_KEYS = ("personal", "impute", "clip", "log1p", "standardize", "bucketize")
_CATEGORICAL_KEYS = ("personal", "max_bytes", "vocabulary", "hash")


def _column_from_dict(value: object, position: int) -> Column:
    where = f"columns[{position}]"
    if not isinstance(value, dict):
        raise FeatureSpecError(f"must be an object, got {describe(value)}", field=where)
    name = value.get("name")
    if not isinstance(name, str):
        raise FeatureSpecError(f"must be a string, got {describe(name)}", field=f"{where}.name")
    kind = value.get("kind")
    if kind not in ("numeric", "categorical"):
        raise FeatureSpecError(f"must be 'numeric' or 'categorical', got {kind!r}",
                               column=name, field="kind")
    if kind == "numeric":
        return _numeric_from_dict(Fields(value, error=FeatureSpecError, column=name, prefix="",
                                         required=_COMMON, optional=_NUMERIC_KEYS))
    return _categorical_from_dict(Fields(value, error=FeatureSpecError, column=name, prefix="",
                                         required=_COMMON, optional=_CATEGORICAL_KEYS))


def _numeric_from_dict(f: Fields) -> NumericColumn:
    impute = clip = standardize = bucketize = None
    if f.has("impute"):
        g = f.child("impute", required=("strategy",), optional=("value",))
        strategy = g.string("strategy", choices=IMPUTE_STRATEGIES)
        impute = Impute(strategy, g.number("value"))  # type: ignore[arg-type]
    if f.has("clip"):
        g = f.child("clip", optional=("lo", "hi"))
        clip = Clip(g.number("lo"), g.number("hi"))
    if f.has("standardize"):
        g = f.child("standardize", optional=("mean", "std"))
        standardize = Standardize(g.number("mean"), g.number("std"))
    if f.has("bucketize"):
        g = f.child("bucketize", optional=("edges", "quantiles", "output"))
        edges = g.numbers("edges")
        bucketize = Bucketize(
            edges=tuple(edges) if edges is not None else None,
            quantiles=g.integer("quantiles", minimum=2, maximum=MAX_BUCKETS),
            output=g.string("output", "one_hot", OUTPUTS),  # type: ignore[arg-type]
        )
    return NumericColumn(
        name=f.string("name"), personal=f.boolean("personal", False), impute=impute,
        clip=clip, log1p=f.boolean("log1p", False), standardize=standardize,
        bucketize=bucketize,
    )


def _categorical_from_dict(f: Fields) -> CategoricalColumn:
    has_vocab, has_hash = f.has("vocabulary"), f.has("hash")
    if has_vocab == has_hash:
        f.fail(None, "a categorical column needs exactly one of 'vocabulary' and 'hash'")
    encode: Vocabulary | HashBuckets
    if has_vocab:
        g = f.child("vocabulary", optional=("values", "max_size", "min_count", "output"))
        values = g.strings("values")
        encode = Vocabulary(
            values=tuple(v.encode("utf-8") for v in values) if values is not None else None,
            max_size=g.integer("max_size", DEFAULT_VOCABULARY_SIZE, minimum=1),  # type: ignore[arg-type]
            min_count=g.integer("min_count", DEFAULT_MIN_COUNT, minimum=1),  # type: ignore[arg-type]
            output=g.string("output", "one_hot", OUTPUTS),  # type: ignore[arg-type]
        )
    else:
        g = f.child("hash", required=("buckets",), optional=("seed", "output"))
        encode = HashBuckets(
            buckets=g.integer("buckets", minimum=1, maximum=MAX_BUCKETS),  # type: ignore[arg-type]
            seed=g.integer("seed", 0, minimum=0, maximum=MAX_SEED),  # type: ignore[arg-type]
            output=g.string("output", "one_hot", OUTPUTS),  # type: ignore[arg-type]
        )
    return CategoricalColumn(
        name=f.string("name"), encode=encode, personal=f.boolean("personal", False),
        max_bytes=f.integer("max_bytes", DEFAULT_MAX_BYTES, minimum=1,  # type: ignore[arg-type]
                            maximum=MAX_BYTES_LIMIT),
    )
