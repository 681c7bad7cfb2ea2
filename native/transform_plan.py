"""``compile_plan``: a fitted spec and its profile flattened into plain NumPy arrays.

The plan is what both transform kernels walk: the NumPy twin
(``native.transform_py``) and the Cython kernel (``native._transform``). It holds no
Python object the kernel needs per element; every array is C-contiguous and
read-only (declare ``const`` memoryviews). C is the number of raw columns, E the
number of lookup entries over all categorical columns.

Per column (length C)::

    kind        int32    0 NUMERIC (input float32 [N]), 1 CATEGORICAL (input BYTES)
    ops         int32    numeric op bits, applied in this order when set:
                         1 IMPUTE      x = params[c,0] if isnan(x)
                         2 CLIP_LO     x = params[c,1] if x < params[c,1]
                         4 CLIP_HI     x = params[c,2] if x > params[c,2]
                         8 LOG1P       x = copysign(log1p(fabs(x)), x)
                         16 STANDARDIZE x = (x - params[c,3]) / params[c,4]
                         (categorical: 0)
    params      float64 [C, 5]  IMPUTE value, CLIP lo, CLIP hi, MEAN, STD (0 if unused)
    encoder     int32    0 VALUE   out = (float)x                (numeric)
                         1 BUCKET  slot = #edges <= x            (numeric)
                         2 VOCAB   slot = lookup, else oov_slot  (categorical)
                         3 HASH    slot = hash % hash_buckets    (categorical)
    one_hot     int32    1: out[r, out_offset + slot] = 1 (the rest of the width 0)
                         0: out[r, out_offset] = (float)slot   (VALUE: the value)
    out_offset  int64    first matrix column of this raw column
    out_width   int64    its number of matrix columns (sum = n_features)
    edge_ptr    int64 [C+1]  bucketize edges of column c: edges[edge_ptr[c]:edge_ptr[c+1]]
    edges       float64      strictly increasing per column
    bin_ptr     int64 [C+1]  sketch bins of column c: counts[bin_ptr[c]:bin_ptr[c+1]]
    bin_edge_ptr int64 [C+1] profile edges of numeric column c (none for categorical)
    bin_edges   float64
    max_bytes   int64    categorical: longest value accepted (ValueTooLong beyond)
    hash_init   uint64   categorical: FNV state after seeding (feature_hash.hash_init);
                         the HASH column's seed, or seed 0 for VOCAB columns
    hash_buckets uint64  HASH: number of buckets (else 0)
    oov_slot    int64    VOCAB: len(vocabulary), the out-of-vocabulary slot (else -1)
    lut_ptr     int64 [C+1]  lookup entries of column c: [lut_ptr[c], lut_ptr[c+1])

Per lookup entry (length E; the union of the spec's vocabulary and the profile's
vocabulary of the column, sorted by ``lut_hash`` ascending within each column,
hashes distinct within a column)::

    lut_hash    uint64   feature_hash of the key from the column's hash_init
    lut_slot    int64    VOCAB: the key's one-hot slot (oov_slot if the spec's
                         vocabulary lacks it); HASH: -1 (unused)
    lut_bin     int64    the key's sketch bin within the column: 2 + its index in the
                         profile vocabulary, or 1 (OOV) if the profile lacks it
    key_ptr     int64 [E+1]  key bytes: keys[key_ptr[e]:key_ptr[e+1]]
    keys        uint8

A categorical element is found when an entry has its hash *and* equal bytes
(binary search on lut_hash, then compare lengths and bytes).

Sketch bins (``reference_profile`` has the layouts): numeric, on the raw float32
value widened to float64, with m = bin edges: NaN -> 0; x < e[0] -> 1;
x > e[m-1] -> m + 1; else 1 + k, k = #edges <= x, except x == e[m-1] -> m.
Categorical: length 0 -> 0 (empty); found -> lut_bin; else -> 1 (OOV).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import numpy.typing as npt

from .feature_errors import PlanError
from .feature_hash import hash_bytes, hash_init
from .feature_spec import CategoricalColumn, FeatureSpec, HashBuckets, NumericColumn
from .reference_profile import CategoricalReference, NumericReference, ReferenceProfile

KIND_NUMERIC, KIND_CATEGORICAL = 0, 1
OP_IMPUTE, OP_CLIP_LO, OP_CLIP_HI, OP_LOG1P, OP_STANDARDIZE = 1, 2, 4, 8, 16
P_IMPUTE, P_CLIP_LO, P_CLIP_HI, P_MEAN, P_STD = 0, 1, 2, 3, 4
N_PARAMS = 5
ENC_VALUE, ENC_BUCKET, ENC_VOCAB, ENC_HASH = 0, 1, 2, 3

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class TransformPlan:
    """The compiled transform (layout in the module docstring). Build with ``compile_plan``."""

    column_names: tuple[str, ...]
    categorical: tuple[bool, ...]
    feature_names: tuple[str, ...]
    n_features: int
    n_bins: int
    kind: I32
    ops: I32
    params: F64
    encoder: I32
    one_hot: I32
    out_offset: I64
    out_width: I64
    edge_ptr: I64
    edges: F64
    bin_ptr: I64
    bin_edge_ptr: I64
    bin_edges: F64
    max_bytes: I64
    hash_init: U64
    hash_buckets: U64
    oov_slot: I64
    lut_ptr: I64
    lut_hash: U64
    lut_slot: I64
    lut_bin: I64
    key_ptr: I64
    keys: npt.NDArray[np.uint8]

    @property
    def n_columns(self) -> int:
        """C, the number of raw columns."""
        return len(self.column_names)

    def new_counts(self) -> I64:
        """A zeroed counts array for ``transform(..., counts=...)`` to add into."""
        return np.zeros(self.n_bins, dtype=np.int64)


def _frozen(values: object, dtype: type) -> np.ndarray:
    array: np.ndarray = np.ascontiguousarray(np.asarray(values, dtype=dtype))
    array.flags.writeable = False
    return array


def _ptr(sizes: list[int]) -> I64:
    return np.concatenate(([0], np.cumsum(sizes, dtype=np.int64))).astype(np.int64)


def _check_match(spec: FeatureSpec, profile: ReferenceProfile) -> None:
    missing = spec.unfitted()
    if missing is not None:
        raise PlanError("the spec is not fitted (run FeatureSpec.fit)", column=missing[0],
                        field=missing[1])
    if profile.names != spec.column_names:
        for i, name in enumerate(spec.column_names):
            got = profile.names[i] if i < len(profile.names) else None
            if got != name:
                raise PlanError(f"the profile's feature #{i} is {got!r}; profile and spec "
                                "must list the same columns in the same order", column=name)
        raise PlanError(f"the profile has extra features {profile.names[len(spec.columns):]}")
    for c, f in zip(spec.columns, profile.features, strict=True):
        if c.kind != f.kind:
            raise PlanError(f"the spec says {c.kind} but the profile says {f.kind}", column=c.name,
                            field="kind")


def compile_plan(spec: FeatureSpec, profile: ReferenceProfile) -> TransformPlan:
    """Flatten a fitted ``spec`` and its ``profile`` into a ``TransformPlan``.

    ``PlanError`` when the spec is not fitted, the two disagree on columns or kinds,
    or two lookup keys of a column share a 64-bit hash (change the column's seed).
    """
    _check_match(spec, profile)
    n = len(spec.columns)
    kind = np.zeros(n, np.int32)
    ops = np.zeros(n, np.int32)
    params = np.zeros((n, N_PARAMS), np.float64)
    encoder = np.zeros(n, np.int32)
    one_hot = np.zeros(n, np.int32)
    widths = [len(c.feature_names()) for c in spec.columns]
    max_bytes = np.zeros(n, np.int64)
    h_init = np.zeros(n, np.uint64)
    h_buckets = np.zeros(n, np.uint64)
    oov_slot = np.full(n, -1, np.int64)
    edges: list[list[float]] = []
    bin_edges: list[list[float]] = []
    lut: list[list[tuple[int, int, int, bytes]]] = []

    for i, (c, f) in enumerate(zip(spec.columns, profile.features, strict=True)):
        if isinstance(c, NumericColumn):
            assert isinstance(f, NumericReference)
            kind[i] = KIND_NUMERIC
            ops[i], params[i] = numeric_ops(c)
            b = c.bucketize
            encoder[i] = ENC_VALUE if b is None else ENC_BUCKET
            one_hot[i] = int(b is not None and b.output == "one_hot")
            edges.append(list(b.edges) if b is not None and b.edges is not None else [])
            bin_edges.append(list(f.edges))
            lut.append([])
            continue
        assert isinstance(f, CategoricalReference)
        kind[i] = KIND_CATEGORICAL
        max_bytes[i] = c.max_bytes
        e = c.encode
        one_hot[i] = int(e.output == "one_hot")
        seed = e.seed if isinstance(e, HashBuckets) else 0
        h_init[i] = hash_init(seed)
        if isinstance(e, HashBuckets):
            encoder[i] = ENC_HASH
            h_buckets[i] = e.buckets
            vocabulary: tuple[bytes, ...] = ()
        else:
            encoder[i] = ENC_VOCAB
            vocabulary = e.values or ()
            oov_slot[i] = len(vocabulary)
        edges.append([])
        bin_edges.append([])
        lut.append(_lookup_entries(c, vocabulary, f.vocabulary, seed, int(oov_slot[i])))

    entries = [entry for column in lut for entry in column]
    keys = b"".join(entry[3] for entry in entries)
    return TransformPlan(
        column_names=spec.column_names,
        categorical=tuple(isinstance(c, CategoricalColumn) for c in spec.columns),
        feature_names=spec.feature_names,
        n_features=sum(widths),
        n_bins=sum(f.n_bins for f in profile.features),
        kind=_frozen(kind, np.int32),
        ops=_frozen(ops, np.int32),
        params=_frozen(params, np.float64),
        encoder=_frozen(encoder, np.int32),
        one_hot=_frozen(one_hot, np.int32),
        out_offset=_frozen(_ptr(widths)[:-1], np.int64),
        out_width=_frozen(widths, np.int64),
        edge_ptr=_frozen(_ptr([len(e) for e in edges]), np.int64),
        edges=_frozen([x for e in edges for x in e], np.float64),
        bin_ptr=_frozen(_ptr([f.n_bins for f in profile.features]), np.int64),
        bin_edge_ptr=_frozen(_ptr([len(e) for e in bin_edges]), np.int64),
        bin_edges=_frozen([x for e in bin_edges for x in e], np.float64),
        max_bytes=_frozen(max_bytes, np.int64),
        hash_init=_frozen(h_init, np.uint64),
        hash_buckets=_frozen(h_buckets, np.uint64),
        oov_slot=_frozen(oov_slot, np.int64),
        lut_ptr=_frozen(_ptr([len(column) for column in lut]), np.int64),
        lut_hash=_frozen([entry[0] for entry in entries], np.uint64),
        lut_slot=_frozen([entry[1] for entry in entries], np.int64),
        lut_bin=_frozen([entry[2] for entry in entries], np.int64),
        key_ptr=_frozen(_ptr([len(entry[3]) for entry in entries]), np.int64),
        keys=_frozen(np.frombuffer(keys, dtype=np.uint8), np.uint8),
    )


def numeric_ops(c: NumericColumn) -> tuple[int, list[float]]:
    """The op bits and the five params of a numeric column (learned params must be set)."""
    bits = 0
    p = [0.0] * N_PARAMS
    if c.impute is not None:
        bits |= OP_IMPUTE
        p[P_IMPUTE] = float(c.impute.value)  # type: ignore[arg-type]
    if c.clip is not None and c.clip.lo is not None:
        bits |= OP_CLIP_LO
        p[P_CLIP_LO] = c.clip.lo
    if c.clip is not None and c.clip.hi is not None:
        bits |= OP_CLIP_HI
        p[P_CLIP_HI] = c.clip.hi
    if c.log1p:
        bits |= OP_LOG1P
    if c.standardize is not None:
        bits |= OP_STANDARDIZE
        p[P_MEAN] = float(c.standardize.mean)  # type: ignore[arg-type]
        p[P_STD] = float(c.standardize.std)  # type: ignore[arg-type]
    return bits, p


def _lookup_entries(c: CategoricalColumn, vocabulary: tuple[bytes, ...],
                    profile_vocabulary: tuple[bytes, ...], seed: int,
                    oov: int) -> list[tuple[int, int, int, bytes]]:
    """(hash, slot, bin, key) for the union of both vocabularies, sorted by hash."""
    slots = {v: i for i, v in enumerate(vocabulary)}
    bins = {v: 2 + i for i, v in enumerate(profile_vocabulary)}
    keys = list(vocabulary) + [v for v in profile_vocabulary if v not in slots]
    by_vocabulary = not isinstance(c.encode, HashBuckets)
    entries = sorted(
        (hash_bytes(k, seed), slots.get(k, oov) if by_vocabulary else -1, bins.get(k, 1), k)
        for k in keys
    )
    for a, b in pairwise(entries):
        if a[0] == b[0]:
            raise PlanError(f"values {a[3]!r} and {b[3]!r} share a 64-bit hash under seed "
                            f"{seed}; a lookup needs distinct hashes", column=c.name)
    return entries
