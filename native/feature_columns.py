"""The columns of a feature spec: their transforms, feature names and validation.

``native.feature_spec`` assembles them into a ``FeatureSpec`` and reads and writes
the JSON; the semantics of each transform are documented there and in
native/README.md. ``check_columns`` is the one place a column is validated, for
documents and for specs built in Python alike: ``FeatureSpecError`` names the
column and the dotted field.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import ClassVar, Literal, get_args

from .feature_errors import FeatureSpecError

Output = Literal["one_hot", "index"]
ImputeStrategy = Literal["constant", "mean", "median"]
OUTPUTS: tuple[str, ...] = get_args(Output)
IMPUTE_STRATEGIES: tuple[str, ...] = get_args(ImputeStrategy)

NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,127}")
DEFAULT_MAX_BYTES = 256
MAX_BYTES_LIMIT = 65536
DEFAULT_VOCABULARY_SIZE = 100
DEFAULT_MIN_COUNT = 5
MAX_BUCKETS = 1 << 24
MAX_SEED = (1 << 64) - 1


@dataclass(frozen=True)
class Impute:
    """Replace NaN by ``value`` (given for ``constant``, learned for mean/median)."""

    strategy: ImputeStrategy
    value: float | None = None


@dataclass(frozen=True)
class Clip:
    """Bound values to [lo, hi]; a missing bound is no bound. NaN stays NaN."""

    lo: float | None = None
    hi: float | None = None


@dataclass(frozen=True)
class Standardize:
    """``(x - mean) / std``, both learned (population std; a constant column gets 1)."""

    mean: float | None = None
    std: float | None = None


@dataclass(frozen=True)
class Bucketize:
    """Bucket ``k`` = number of edges <= x (k in [0, len(edges)]).

    ``edges`` are fixed, or learned when ``quantiles`` (q >= 2) is set: the distinct
    values among the j/q quantiles, j = 1..q-1, of the transformed training column.
    ``output`` is ``one_hot`` (len(edges) + 1 features) or ``index`` (one feature).
    """

    edges: tuple[float, ...] | None = None
    quantiles: int | None = None
    output: Output = "one_hot"

    def __post_init__(self) -> None:
        if self.edges is not None:
            object.__setattr__(self, "edges", tuple(float(e) for e in self.edges))


@dataclass(frozen=True)
class Vocabulary:
    """One-hot (or index) by vocabulary, with one out-of-vocabulary slot after it.

    Learned by ``fit``: the values seen at least ``min_count`` times, most frequent
    first (ties by byte order), at most ``max_size`` of them; values that are not
    UTF-8 are never learned (they are out of vocabulary).
    """

    values: tuple[bytes, ...] | None = None
    max_size: int = DEFAULT_VOCABULARY_SIZE
    min_count: int = DEFAULT_MIN_COUNT
    output: Output = "one_hot"

    def __post_init__(self) -> None:
        if self.values is not None:
            values = tuple(v.encode() if isinstance(v, str) else bytes(v) for v in self.values)
            object.__setattr__(self, "values", values)


@dataclass(frozen=True)
class HashBuckets:
    """Slot = ``osprey-fnv1a64-mix(value, seed) % buckets`` (see ``native.feature_hash``)."""

    buckets: int
    seed: int = 0
    output: Output = "one_hot"


@dataclass(frozen=True)
class NumericColumn:
    """A FP32 column: impute → clip → log1p → standardize → bucketize, each optional."""

    name: str
    personal: bool = False
    impute: Impute | None = None
    clip: Clip | None = None
    log1p: bool = False
    standardize: Standardize | None = None
    bucketize: Bucketize | None = None
    kind: ClassVar[str] = "numeric"

    @property
    def is_fitted(self) -> bool:
        """Are all learned parameters present?"""
        return unfitted_numeric(self) is None

    def feature_names(self) -> list[str]:
        """The names of this column's features (needs fitted bucket edges)."""
        b = self.bucketize
        if b is None:
            return [self.name]
        if b.output == "index":
            return [f"{self.name}:bucket"]
        if b.edges is None:
            raise FeatureSpecError("not fitted: the one-hot width needs the edges",
                                   column=self.name, field="bucketize.edges")
        return [f"{self.name}:bucket={k}" for k in range(len(b.edges) + 1)]


@dataclass(frozen=True)
class CategoricalColumn:
    """A BYTES column, encoded by ``Vocabulary`` or ``HashBuckets``.

    Values are compared as raw bytes. Values longer than ``max_bytes`` are refused
    at transform time (``ValueTooLong``).
    """

    name: str
    encode: Vocabulary | HashBuckets
    personal: bool = False
    max_bytes: int = DEFAULT_MAX_BYTES
    kind: ClassVar[str] = "categorical"

    @property
    def is_fitted(self) -> bool:
        """Are all learned parameters present?"""
        return not isinstance(self.encode, Vocabulary) or self.encode.values is not None

    def feature_names(self) -> list[str]:
        """The names of this column's features (needs a fitted vocabulary)."""
        e = self.encode
        if isinstance(e, HashBuckets):
            if e.output == "index":
                return [f"{self.name}:hash"]
            return [f"{self.name}:hash={k}" for k in range(e.buckets)]
        if e.output == "index":
            return [f"{self.name}:index"]
        if e.values is None:
            raise FeatureSpecError("not fitted: the one-hot width needs the vocabulary",
                                   column=self.name, field="vocabulary.values")
        words = [f"{self.name}={v.decode('utf-8')}" for v in e.values]
        return [*words, f"{self.name}:oov"]


Column = NumericColumn | CategoricalColumn



# -- semantic checks (also for specs built in Python) ------------------------------
def check_columns(columns: tuple[Column, ...]) -> None:
    """Validate the columns of a spec (names, then each column's transforms)."""
    if not columns:
        raise FeatureSpecError("a feature spec needs at least one column", field="columns")
    seen: set[str] = set()
    for c in columns:
        if not isinstance(c, NumericColumn | CategoricalColumn):
            raise FeatureSpecError(f"not a column: {c!r}", field="columns")
        if not isinstance(c.name, str) or not NAME_PATTERN.fullmatch(c.name):
            raise FeatureSpecError(
                "must start with a letter or '_' and hold only letters, digits, '_', '.', "
                "'-' (at most 128)", column=str(c.name), field="name")
        if c.name in seen:
            raise FeatureSpecError("duplicate column name", column=c.name, field="name")
        seen.add(c.name)
        if not isinstance(c.personal, bool):
            raise FeatureSpecError("must be a boolean", column=c.name, field="personal")
        if isinstance(c, NumericColumn):
            _check_numeric(c)
        else:
            _check_categorical(c)


def _fail(c: Column, field: str, message: str) -> None:
    raise FeatureSpecError(message, column=c.name, field=field)


def _finite(c: Column, field: str, value: float | None) -> None:
    if value is not None and not math.isfinite(value):
        _fail(c, field, f"must be finite, got {value}")


def _check_numeric(c: NumericColumn) -> None:
    if c.impute is not None:
        if c.impute.strategy not in IMPUTE_STRATEGIES:
            _fail(c, "impute.strategy", f"must be one of {', '.join(IMPUTE_STRATEGIES)}")
        _finite(c, "impute.value", c.impute.value)
        if c.impute.strategy == "constant" and c.impute.value is None:
            _fail(c, "impute.value", "is required for strategy 'constant'")
    if c.clip is not None:
        lo, hi = c.clip.lo, c.clip.hi
        _finite(c, "clip.lo", lo)
        _finite(c, "clip.hi", hi)
        if lo is None and hi is None:
            _fail(c, "clip", "needs 'lo', 'hi' or both")
        if lo is not None and hi is not None and lo > hi:
            _fail(c, "clip", f"lo {lo} is greater than hi {hi}")
    if c.standardize is not None:
        mean, std = c.standardize.mean, c.standardize.std
        if (mean is None) != (std is None):
            _fail(c, "standardize", "needs both 'mean' and 'std' (or neither, before fit)")
        _finite(c, "standardize.mean", mean)
        _finite(c, "standardize.std", std)
        if std is not None and not std > 0:
            _fail(c, "standardize.std", f"must be > 0, got {std}")
    if c.bucketize is not None:
        _check_bucketize(c, c.bucketize)


def _check_bucketize(c: NumericColumn, b: Bucketize) -> None:
    if b.output not in OUTPUTS:
        _fail(c, "bucketize.output", f"must be one of {', '.join(OUTPUTS)}")
    if b.quantiles is not None and not 2 <= b.quantiles <= MAX_BUCKETS:
        _fail(c, "bucketize.quantiles", f"must be >= 2 and <= {MAX_BUCKETS}, got {b.quantiles}")
    if b.edges is None and b.quantiles is None:
        _fail(c, "bucketize", "needs fixed 'edges' or 'quantiles' to learn them from")
    if c.impute is None:
        _fail(c, "bucketize", "needs 'impute': a NaN has no bucket")
    if b.edges is not None:
        if not b.edges:
            _fail(c, "bucketize.edges", "must hold at least one edge")
        if len(b.edges) > MAX_BUCKETS:
            _fail(c, "bucketize.edges", f"holds more than {MAX_BUCKETS} edges")
        for i, e in enumerate(b.edges):
            _finite(c, f"bucketize.edges[{i}]", e)
            if i and not b.edges[i - 1] < e:
                _fail(c, f"bucketize.edges[{i}]",
                      f"edges must be strictly increasing ({b.edges[i - 1]} then {e})")


def _check_categorical(c: CategoricalColumn) -> None:
    if not 1 <= c.max_bytes <= MAX_BYTES_LIMIT:
        _fail(c, "max_bytes", f"must be >= 1 and <= {MAX_BYTES_LIMIT}, got {c.max_bytes}")
    e = c.encode
    if isinstance(e, HashBuckets):
        if e.output not in OUTPUTS:
            _fail(c, "hash.output", f"must be one of {', '.join(OUTPUTS)}")
        if not 1 <= e.buckets <= MAX_BUCKETS:
            _fail(c, "hash.buckets", f"must be >= 1 and <= {MAX_BUCKETS}, got {e.buckets}")
        if not 0 <= e.seed <= MAX_SEED:
            _fail(c, "hash.seed", f"must be in [0, 2**64), got {e.seed}")
        return
    if not isinstance(e, Vocabulary):
        _fail(c, "encode", f"must be a Vocabulary or HashBuckets, got {e!r}")
    if e.output not in OUTPUTS:
        _fail(c, "vocabulary.output", f"must be one of {', '.join(OUTPUTS)}")
    if e.max_size < 1:
        _fail(c, "vocabulary.max_size", f"must be >= 1, got {e.max_size}")
    if e.min_count < 1:
        _fail(c, "vocabulary.min_count", f"must be >= 1, got {e.min_count}")
    if e.values is None:
        return
    if not e.values:
        _fail(c, "vocabulary.values", "must not be empty (the column would carry nothing)")
    if len(e.values) > e.max_size:
        _fail(c, "vocabulary.values", f"holds {len(e.values)} values, more than max_size "
                                      f"{e.max_size}")
    seen: set[bytes] = set()
    for i, v in enumerate(e.values):
        where = f"vocabulary.values[{i}]"
        try:
            v.decode("utf-8")
        except UnicodeDecodeError:
            _fail(c, where, "is not valid UTF-8")
        if len(v) > c.max_bytes:
            _fail(c, where, f"is {len(v)} bytes, longer than max_bytes {c.max_bytes}")
        if v in seen:
            _fail(c, where, f"duplicate value {v.decode('utf-8')!r}")
        seen.add(v)


def unfitted_numeric(c: NumericColumn) -> str | None:
    """The first learned field of ``c`` still missing, or None."""
    if c.impute is not None and c.impute.value is None:
        return "impute.value"
    if c.standardize is not None and c.standardize.mean is None:
        return "standardize.mean"
    if c.bucketize is not None and c.bucketize.edges is None:
        return "bucketize.edges"
    return None
