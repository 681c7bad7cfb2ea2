"""The NumPy twin of ``native._transform``: raw columns → float32 matrix + drift counts.

This module and ``native.transform_plan`` are the specification the Cython kernel
must match: matrices bit for bit (log1p within 1 ulp; NaNs compare equal whatever
their payload), counts exactly, errors of the same class with the same message.

``transform(plan, columns, rows)`` takes, per raw column of the plan:

* numeric: a ``float32`` ndarray of shape [rows] or [rows, 1] (KServe FP32; any
  other dtype is refused, so training and serving see the same rounding);
* categorical: the raw KServe BYTES buffer (``bytes``, ``bytearray``, ``memoryview``
  or a 1-D ``uint8`` ndarray): ``rows`` elements, each a 4-byte little-endian
  length and that many bytes.

Per row of a numeric column the value ``x`` is widened to float64 and

1. counted into its sketch bin (raw, before anything else; ``transform_plan``);
2. impute → clip → log1p → standardize, each when the plan's ``ops`` bit is set,
   all in float64;
3. encoded: VALUE writes ``(float32)x`` (round to nearest); BUCKET computes the
   bucket ``#edges <= x`` (x is never NaN there: bucketize requires impute).

Per element of a categorical column: its hash (``native.feature_hash``, from the
column's ``hash_init``) is looked up in the column's entries (hash, then bytes); the
element is counted (empty → 0, found → ``lut_bin``, else 1) and encoded (VOCAB: the
entry's ``lut_slot`` or ``oov_slot``; HASH: ``hash % hash_buckets``).

Encoded slots are written one-hot (1.0 at ``out_offset + slot``, zeros elsewhere in
the column's width) or as the index ``(float32)slot``.

Errors (all ``ColumnError``, checked for every column before anything is written,
so on error neither the matrix nor the counts change): columns missing from the
batch (spec order), then columns the spec lacks (batch order), then per column in
spec order: container/dtype, shape, then element by element the BYTES framing
(truncated prefix, length past the end, longer than ``max_bytes``), then the
element count (fewer elements than rows, or bytes left over).

The implementation is vectorised: no Python loop per element except walking the
BYTES length prefixes (which depend on each other); hashing and byte comparison
loop over byte positions.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .feature_errors import (
    ColumnTypeError,
    MalformedBytes,
    MissingColumn,
    RowCountMismatch,
    UnknownColumn,
    ValueTooLong,
)
from .feature_hash import equal_elements, hash_elements
from .transform_plan import (
    ENC_BUCKET,
    ENC_HASH,
    ENC_VALUE,
    ENC_VOCAB,
    OP_CLIP_HI,
    OP_CLIP_LO,
    OP_IMPUTE,
    OP_LOG1P,
    OP_STANDARDIZE,
    P_CLIP_HI,
    P_CLIP_LO,
    P_IMPUTE,
    P_MEAN,
    P_STD,
    TransformPlan,
    compile_plan,
)

__all__ = ["compile_plan", "count", "count_scores", "numeric_bins", "split_bytes", "transform"]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

_LENGTH = struct.Struct("<I")
_BUFFER_TYPES = (bytes, bytearray, memoryview)
NUMERIC_EXPECTED = "a float32 array of shape [N] or [N, 1]"
CATEGORICAL_EXPECTED = "a BYTES buffer (bytes, bytearray, memoryview or 1-D uint8 array)"


@dataclass(frozen=True)
class BytesElements:
    """A parsed BYTES column: element i is ``data[starts[i] : starts[i] + lengths[i]]``."""

    data: npt.NDArray[np.uint8]
    starts: I64
    lengths: I64


Parsed = F64 | BytesElements


def describe_input(value: object) -> str:
    """How an input is named in ``ColumnTypeError`` messages."""
    if isinstance(value, np.ndarray):
        return f"an array of dtype {value.dtype} and shape {list(value.shape)}"
    return type(value).__name__


def split_bytes(column: str, buffer: object, rows: int, max_bytes: int) -> BytesElements:
    """Walk the length prefixes of a BYTES buffer holding exactly ``rows`` elements."""
    if isinstance(buffer, np.ndarray):
        if buffer.dtype != np.uint8 or buffer.ndim != 1 or not buffer.flags.c_contiguous:
            raise ColumnTypeError(column, CATEGORICAL_EXPECTED, describe_input(buffer))
    elif not isinstance(buffer, _BUFFER_TYPES):
        raise ColumnTypeError(column, CATEGORICAL_EXPECTED, describe_input(buffer))
    elif isinstance(buffer, memoryview) and (buffer.itemsize != 1 or not buffer.c_contiguous):
        raise ColumnTypeError(column, CATEGORICAL_EXPECTED, "a memoryview that is not bytes")
    data = np.frombuffer(buffer, dtype=np.uint8)
    raw = data.data
    end = data.shape[0]
    starts = np.empty(rows, dtype=np.int64)
    lengths = np.empty(rows, dtype=np.int64)
    pos = 0
    for i in range(rows):
        if pos == end:
            raise RowCountMismatch(column, rows, f"{i} BYTES elements")
        if pos + 4 > end:
            raise MalformedBytes(column, i, f"has a truncated length prefix (needs 4 bytes at "
                                            f"offset {pos}, buffer is {end} bytes)")
        (length,) = _LENGTH.unpack_from(raw, pos)
        pos += 4
        if length > end - pos:
            raise MalformedBytes(column, i, f"declares {length} bytes at offset {pos} but only "
                                            f"{end - pos} remain")
        if length > max_bytes:
            raise ValueTooLong(column, i, length, max_bytes)
        starts[i] = pos
        lengths[i] = length
        pos += length
    if pos != end:
        raise RowCountMismatch(column, rows, f"more than {rows} BYTES elements "
                                             f"({end - pos} bytes left over)")
    return BytesElements(data, starts, lengths)


def _numeric_input(column: str, value: object, rows: int) -> F64:
    if not isinstance(value, np.ndarray) or value.dtype != np.float32:
        raise ColumnTypeError(column, NUMERIC_EXPECTED, describe_input(value))
    if value.ndim not in (1, 2) or (value.ndim == 2 and value.shape[1] != 1):
        raise ColumnTypeError(column, NUMERIC_EXPECTED, describe_input(value))
    if value.shape[0] != rows:
        raise RowCountMismatch(column, rows, f"{value.shape[0]} rows")
    return value.reshape(rows).astype(np.float64)


def read_batch(plan: TransformPlan, columns: Mapping[str, object], rows: int) -> list[Parsed]:
    """Check the batch against the plan and parse it; ``ColumnError`` on the first fault."""
    if isinstance(rows, bool) or not isinstance(rows, int | np.integer) or rows < 0:
        raise ValueError(f"rows must be an integer >= 0, got {rows!r}")
    rows = int(rows)
    for name in plan.column_names:
        if name not in columns:
            raise MissingColumn(name)
    known = set(plan.column_names)
    for name in columns:
        if name not in known:
            raise UnknownColumn(str(name))
    parsed: list[Parsed] = []
    for c, name in enumerate(plan.column_names):
        if plan.categorical[c]:
            parsed.append(split_bytes(name, columns[name], rows, int(plan.max_bytes[c])))
        else:
            parsed.append(_numeric_input(name, columns[name], rows))
    return parsed


def numeric_bins(x: F64, edges: F64) -> I64:
    """Sketch bin of every value (numeric layout of ``native.reference_profile``)."""
    m = edges.shape[0]
    k = np.searchsorted(edges, x, side="right")
    k[x == edges[m - 1]] = m - 1
    bins = (1 + k).astype(np.int64)
    bins[np.isnan(x)] = 0
    return bins


def apply_numeric_ops(x: F64, ops: int, params: F64 | list[float]) -> F64:
    """impute → clip → log1p → standardize on float64 values, as the op bits say."""
    p = params
    y = x.copy()
    if ops & OP_IMPUTE:
        y[np.isnan(y)] = p[P_IMPUTE]
    if ops & OP_CLIP_LO:
        y[y < p[P_CLIP_LO]] = p[P_CLIP_LO]
    if ops & OP_CLIP_HI:
        y[y > p[P_CLIP_HI]] = p[P_CLIP_HI]
    if ops & OP_LOG1P:
        y = np.copysign(np.log1p(np.abs(y)), y)
    if ops & OP_STANDARDIZE:
        y = (y - p[P_MEAN]) / p[P_STD]
    return y


def numeric_values(plan: TransformPlan, c: int, x: F64) -> F64:
    """Column ``c``'s numeric steps on float64 values ``x``."""
    return apply_numeric_ops(x, int(plan.ops[c]), plan.params[c])


def lookup(plan: TransformPlan, c: int, elements: BytesElements,
           hashes: npt.NDArray[np.uint64]) -> tuple[I64, I64]:
    """(rows found, their entry index) in column ``c``'s lookup table."""
    lo, hi = int(plan.lut_ptr[c]), int(plan.lut_ptr[c + 1])
    table = plan.lut_hash[lo:hi]
    pos = np.searchsorted(table, hashes)
    candidate = np.flatnonzero(pos < hi - lo)
    candidate = candidate[table[pos[candidate]] == hashes[candidate]]
    entry = lo + pos[candidate]
    key_starts = plan.key_ptr[entry]
    key_lengths = plan.key_ptr[entry + 1] - key_starts
    same = equal_elements(elements.data, elements.starts[candidate], elements.lengths[candidate],
                          plan.keys, key_starts, key_lengths)
    return candidate[same].astype(np.int64), entry[same].astype(np.int64)


def _add_counts(plan: TransformPlan, c: int, bins: I64, counts: I64) -> None:
    lo, hi = int(plan.bin_ptr[c]), int(plan.bin_ptr[c + 1])
    counts[lo:hi] += np.bincount(bins, minlength=hi - lo)


def _write(plan: TransformPlan, c: int, slot: I64, out: F32) -> None:
    offset = int(plan.out_offset[c])
    if plan.one_hot[c]:
        out[np.arange(slot.shape[0]), offset + slot] = 1.0
    else:
        out[:, offset] = slot


def _numeric(plan: TransformPlan, c: int, x: F64, out: F32 | None, counts: I64 | None) -> None:
    if counts is not None:
        edges = plan.bin_edges[plan.bin_edge_ptr[c]:plan.bin_edge_ptr[c + 1]]
        _add_counts(plan, c, numeric_bins(x, edges), counts)
    if out is None:
        return
    y = numeric_values(plan, c, x)
    if plan.encoder[c] == ENC_VALUE:
        out[:, int(plan.out_offset[c])] = y
        return
    assert plan.encoder[c] == ENC_BUCKET
    edges = plan.edges[plan.edge_ptr[c]:plan.edge_ptr[c + 1]]
    _write(plan, c, np.searchsorted(edges, y, side="right").astype(np.int64), out)


def _categorical(plan: TransformPlan, c: int, e: BytesElements, out: F32 | None,
                 counts: I64 | None) -> None:
    n = e.starts.shape[0]
    hashes = hash_elements(e.data, e.starts, e.lengths, int(plan.hash_init[c]))
    encoder = int(plan.encoder[c])
    if counts is not None or (out is not None and encoder == ENC_VOCAB):
        found, entry = lookup(plan, c, e, hashes)
    if counts is not None:
        bins = np.ones(n, dtype=np.int64)
        bins[found] = plan.lut_bin[entry]
        bins[e.lengths == 0] = 0
        _add_counts(plan, c, bins, counts)
    if out is None:
        return
    if encoder == ENC_HASH:
        slot = (hashes % plan.hash_buckets[c]).astype(np.int64)
    else:
        assert encoder == ENC_VOCAB
        slot = np.full(n, plan.oov_slot[c], dtype=np.int64)
        slot[found] = plan.lut_slot[entry]
    _write(plan, c, slot, out)


def _check_counts(plan: TransformPlan, counts: I64) -> None:
    if (not isinstance(counts, np.ndarray) or counts.dtype != np.int64
            or counts.shape != (plan.n_bins,) or not counts.flags.c_contiguous
            or not counts.flags.writeable):
        raise ValueError(f"counts must be a writeable int64 array of shape [{plan.n_bins}]")


def transform(
    plan: TransformPlan,
    columns: Mapping[str, object],
    rows: int,
    *,
    counts: I64 | None = None,
    sketch: bool = True,
    out: F32 | None = None,
) -> tuple[F32, I64]:
    """The float32 matrix [rows, F] of a batch, and the drift counts.

    ``counts`` (int64 [plan.n_bins], see ``plan.bin_ptr``) is added into in place, so
    one array accumulates a window; a fresh zeroed one is made when it is None. With
    ``sketch=False`` nothing is counted. ``out`` (float32 [rows, F], C-contiguous) is
    overwritten and returned instead of a new matrix.
    """
    parsed = read_batch(plan, columns, rows)
    if counts is None:
        counts = plan.new_counts()
    _check_counts(plan, counts)
    shape = (int(rows), plan.n_features)
    if out is None:
        out = np.zeros(shape, dtype=np.float32)
    elif (not isinstance(out, np.ndarray) or out.dtype != np.float32 or out.shape != shape
          or not out.flags.c_contiguous or not out.flags.writeable):
        raise ValueError(f"out must be a writeable C-contiguous float32 array of shape "
                         f"{list(shape)}")
    else:
        out.fill(0.0)
    into = counts if sketch else None
    for c, value in enumerate(parsed):
        if isinstance(value, BytesElements):
            _categorical(plan, c, value, out, into)
        else:
            _numeric(plan, c, value, out, into)
    return out, counts


def count_scores(edges: F64 | tuple[float, ...], scores: object,
                 counts: I64 | None = None) -> I64:
    """Score histogram counts (numeric layout), added into ``counts`` when given.

    Scores are taken as float32 (what the model outputs), widened to float64.
    """
    edge_array = np.asarray(edges, dtype=np.float64)
    values = np.asarray(scores, dtype=np.float32).reshape(-1).astype(np.float64)
    n_bins = edge_array.shape[0] + 2
    if counts is None:
        counts = np.zeros(n_bins, dtype=np.int64)
    counts += np.bincount(numeric_bins(values, edge_array), minlength=n_bins)
    return counts


def count(plan: TransformPlan, columns: Mapping[str, object], rows: int,
          counts: I64 | None = None) -> I64:
    """Only the drift counts of a batch (what ``transform`` adds), added into ``counts``."""
    parsed = read_batch(plan, columns, rows)
    if counts is None:
        counts = plan.new_counts()
    _check_counts(plan, counts)
    for c, value in enumerate(parsed):
        if isinstance(value, BytesElements):
            _categorical(plan, c, value, None, counts)
        else:
            _numeric(plan, c, value, None, counts)
    return counts
