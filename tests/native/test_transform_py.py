"""The NumPy transform twin against a naive per-row reference, and its edge cases.

``naive_transform`` below is the specification written the slow way (one Python
loop per row, scalar hash, ``bisect``); the twin must equal it bit for bit and the
Cython kernel must equal the twin.
"""

from __future__ import annotations

import bisect
import math
import struct
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from native.feature_errors import (
    ColumnError,
    ColumnTypeError,
    MalformedBytes,
    MissingColumn,
    RowCountMismatch,
    UnknownColumn,
    ValueTooLong,
)
from native.feature_fit import encode_bytes
from native.feature_hash import FNV_OFFSET_BASIS, hash_bytes, hash_elements, hash_init, mix64
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
from native.reference_profile import CategoricalReference, NumericReference, ReferenceProfile
from native.transform_plan import TransformPlan
from native.transform_py import compile_plan, count, count_scores, split_bytes, transform


# -- the naive reference ----------------------------------------------------------------
def naive_bin(x: float, edges: tuple[float, ...]) -> int:
    if math.isnan(x):
        return 0
    if x < edges[0]:
        return 1
    if x > edges[-1]:
        return len(edges) + 1
    if x == edges[-1]:
        return len(edges)
    return 1 + bisect.bisect_right(edges, x)


def naive_numeric(c: NumericColumn, x: float) -> float:
    y = x
    if c.impute is not None and math.isnan(y):
        y = c.impute.value  # type: ignore[assignment]
    if c.clip is not None and c.clip.lo is not None and y < c.clip.lo:
        y = c.clip.lo
    if c.clip is not None and c.clip.hi is not None and y > c.clip.hi:
        y = c.clip.hi
    if c.log1p:
        y = math.copysign(float(np.log1p(np.array([abs(y)]))[0]), y)
    if c.standardize is not None:
        y = (y - c.standardize.mean) / c.standardize.std  # type: ignore[operator]
    return y


def naive_elements(buf: bytes, rows: int) -> list[bytes]:
    out, pos = [], 0
    for _ in range(rows):
        (n,) = struct.unpack_from("<I", buf, pos)
        out.append(buf[pos + 4 : pos + 4 + n])
        pos += 4 + n
    assert pos == len(buf)
    return out


def naive_transform(spec: FeatureSpec, profile: ReferenceProfile, columns: dict[str, Any],
                    rows: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    out = np.zeros((rows, spec.n_features), dtype=np.float32)
    counts = np.zeros(int(profile.bin_offsets[-1]), dtype=np.int64)
    offset = 0
    for i, (c, f) in enumerate(zip(spec.columns, profile.features, strict=True)):
        base = int(profile.bin_offsets[i])
        if isinstance(c, NumericColumn):
            assert isinstance(f, NumericReference)
            for r, raw in enumerate(columns[c.name].reshape(-1).tolist()):
                counts[base + naive_bin(raw, f.edges)] += 1
                y = naive_numeric(c, raw)
                if c.bucketize is None:
                    out[r, offset] = np.float32(y)
                    continue
                assert c.bucketize.edges is not None
                k = bisect.bisect_right(c.bucketize.edges, y)
                if c.bucketize.output == "one_hot":
                    out[r, offset + k] = 1.0
                else:
                    out[r, offset] = k
        else:
            assert isinstance(f, CategoricalReference)
            e = c.encode
            for r, value in enumerate(naive_elements(bytes(columns[c.name]), rows)):
                if not value:
                    b = 0
                else:
                    b = 2 + f.vocabulary.index(value) if value in f.vocabulary else 1
                counts[base + b] += 1
                if isinstance(e, HashBuckets):
                    slot = hash_bytes(value, e.seed) % e.buckets
                else:
                    assert e.values is not None
                    slot = e.values.index(value) if value in e.values else len(e.values)
                if e.output == "one_hot":
                    out[r, offset + slot] = 1.0
                else:
                    out[r, offset] = slot
        offset += len(c.feature_names())
    return out, counts


# -- a small fixed spec for the edge cases ------------------------------------------------
SPEC = FeatureSpec((
    NumericColumn("amount", impute=Impute("constant", 5.0), clip=Clip(0.0, 100.0), log1p=True,
                  standardize=Standardize(1.0, 2.0)),
    NumericColumn("age", impute=Impute("median", 40.0),
                  bucketize=Bucketize(edges=(18.0, 65.0), output="one_hot")),
    NumericColumn("raw"),
    CategoricalColumn("merchant", Vocabulary(values=(b"a", b"b", b"")), max_bytes=8),
    CategoricalColumn("card", HashBuckets(16, seed=7, output="index"), personal=True),
))
PROFILE = ReferenceProfile(0, (
    NumericReference("amount", (0.0, 10.0, 100.0), (0,) * 5),
    NumericReference("age", (18.0, 30.0, 65.0), (0,) * 5),
    NumericReference("raw", (-1.0, 1.0), (0,) * 4),
    CategoricalReference("merchant", (b"a", b"c"), (0,) * 4),
    CategoricalReference("card", (b"x",), (0,) * 3),
))


@pytest.fixture(scope="module")
def plan() -> TransformPlan:
    return compile_plan(SPEC, PROFILE)


def f32(*values: float) -> npt.NDArray[np.float32]:
    return np.array(values, dtype=np.float32)


def batch(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "amount": f32(np.nan, -3.0, 1e9, 3.0),
        "age": f32(np.nan, 17.0, 65.0, np.inf),
        "raw": f32(-np.inf, 1.0, np.nan, 0.5),
        "merchant": encode_bytes([b"", b"c", b"zz", b"\xff"]),
        "card": encode_bytes([b"x", b"", b"y", "\u00e9".encode()]),
    }
    base.update(over)
    return base


def test_plan_layout(plan: TransformPlan) -> None:
    assert plan.n_features == 1 + 3 + 1 + 4 + 1
    assert plan.out_offset.tolist() == [0, 1, 4, 5, 9]
    assert plan.out_width.tolist() == [1, 3, 1, 4, 1]
    assert plan.bin_ptr.tolist() == [0, 5, 10, 14, 18, 21]
    assert plan.edge_ptr.tolist() == [0, 0, 2, 2, 2, 2]
    assert plan.edges.tolist() == [18.0, 65.0]
    assert plan.ops.tolist() == [1 | 2 | 4 | 8 | 16, 1, 0, 0, 0]
    assert plan.encoder.tolist() == [0, 1, 0, 2, 3]
    assert plan.one_hot.tolist() == [0, 1, 0, 1, 0]
    assert plan.params[0].tolist() == [5.0, 0.0, 100.0, 1.0, 2.0]
    assert plan.hash_init.tolist() == [0, 0, 0, hash_init(0), hash_init(7)]
    assert plan.hash_buckets.tolist() == [0, 0, 0, 0, 16]
    assert plan.oov_slot.tolist() == [-1, -1, -1, 3, -1]
    # merchant: spec vocabulary a, b, "" plus the profile's c; card: the profile's x
    assert plan.lut_ptr.tolist() == [0, 0, 0, 0, 4, 5]
    merchant = {bytes(plan.keys[plan.key_ptr[e]:plan.key_ptr[e + 1]]):
                (int(plan.lut_slot[e]), int(plan.lut_bin[e])) for e in range(4)}
    assert merchant == {b"a": (0, 2), b"b": (1, 1), b"": (2, 1), b"c": (3, 3)}
    assert plan.lut_hash[:4].tolist() == sorted(hash_bytes(k) for k in merchant)
    assert (plan.lut_slot[4], plan.lut_bin[4]) == (-1, 2)
    for array in (plan.ops, plan.params, plan.lut_hash, plan.keys):
        assert not array.flags.writeable and array.flags.c_contiguous


def test_special_bins_and_values(plan: TransformPlan) -> None:
    matrix, counts = transform(plan, batch(), 4)
    # amount: NaN → missing; -3 → below; 1e9 → above; 3 → [0, 10)
    assert counts[0:5].tolist() == [1, 1, 1, 0, 1]
    # age: NaN, 17 below, 65 == last edge → last interior bin, +inf above
    assert counts[5:10].tolist() == [1, 1, 0, 1, 1]
    # raw: -inf below, 1 == last edge, NaN missing, 0.5 interior
    assert counts[10:14].tolist() == [1, 1, 2, 0]
    # merchant: empty, c (profile vocabulary), zz and \xff out of vocabulary
    assert counts[14:18].tolist() == [1, 2, 0, 1]
    # card: x, empty, y and é out of the profile's vocabulary
    assert counts[18:21].tolist() == [1, 2, 1]

    def amount(x: float) -> np.float32:
        return np.float32((math.log1p(x) - 1.0) / 2.0)

    assert matrix[:, 0].tolist() == [amount(5.0), amount(0.0), amount(100.0), amount(3.0)]
    assert matrix[:, 1:4].tolist() == [[0, 1, 0], [1, 0, 0], [0, 0, 1], [0, 0, 1]]
    assert np.isneginf(matrix[0, 4]) and matrix[1, 4] == 1 and np.isnan(matrix[2, 4])
    # merchant one-hot: "" is in the spec's vocabulary (slot 2); c, zz, \xff are OOV (3)
    assert matrix[:, 5:9].tolist() == [[0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 1]]
    assert matrix[:, 9].tolist() == [hash_bytes(v, 7) % 16
                                     for v in (b"x", b"", b"y", "\u00e9".encode())]


def test_signed_log1p_without_clip() -> None:
    spec = FeatureSpec((NumericColumn("x", log1p=True),))
    profile = ReferenceProfile(0, (NumericReference("x", (0.0, 1.0), (0,) * 4),))
    matrix, _ = transform(compile_plan(spec, profile), {"x": f32(-3, -0.0, 0, np.inf)}, 4)
    assert matrix[:, 0].tolist() == [np.float32(-math.log1p(3)), 0.0, 0.0, np.inf]
    assert math.copysign(1, matrix[1, 0]) == -1.0


def test_index_outputs_and_column_shapes() -> None:
    spec = FeatureSpec((
        NumericColumn("x", impute=Impute("constant", 0.0),
                      bucketize=Bucketize(edges=(0.0, 1.0), output="index")),
        CategoricalColumn("v", Vocabulary(values=(b"p", b"q"), output="index")),
    ))
    profile = ReferenceProfile(0, (NumericReference("x", (0.0, 1.0), (0,) * 4),
                                   CategoricalReference("v", (), (0, 0))))
    plan = compile_plan(spec, profile)
    columns = {"x": f32(-1, 0, 0.5, 1, 7).reshape(5, 1), "v": encode_bytes([b"q", b"p", b"r",
                                                                              b"", b"q"])}
    matrix, counts = transform(plan, columns, 5)
    assert matrix.tolist() == [[0, 1], [1, 0], [1, 2], [2, 2], [2, 1]]
    assert counts.tolist() == [0, 1, 3, 1, 1, 4]  # x: 0, 0.5 and 1 (closed) inside; v: 1 empty


def test_zero_rows(plan: TransformPlan) -> None:
    empty = {n: (f32() if n in ("amount", "age", "raw") else b"") for n in plan.column_names}
    matrix, counts = transform(plan, empty, 0)
    assert matrix.shape == (0, plan.n_features) and matrix.dtype == np.float32
    assert counts.sum() == 0 and counts.shape == (plan.n_bins,)


def test_counts_accumulate_and_sketch_switch(plan: TransformPlan) -> None:
    window = plan.new_counts()
    _, returned = transform(plan, batch(), 4, counts=window)
    assert returned is window
    transform(plan, batch(), 4, counts=window)
    once = transform(plan, batch(), 4)[1]
    assert window.tolist() == (2 * once).tolist()
    no_sketch, untouched = transform(plan, batch(), 4, sketch=False)
    assert untouched.sum() == 0
    assert count(plan, batch(), 4).tolist() == once.tolist()
    np.testing.assert_array_equal(no_sketch, transform(plan, batch(), 4)[0])


def test_out_parameter(plan: TransformPlan) -> None:
    out = np.full((4, plan.n_features), 9.0, dtype=np.float32)
    matrix, _ = transform(plan, batch(), 4, out=out)
    assert matrix is out
    np.testing.assert_array_equal(out, transform(plan, batch(), 4)[0])
    with pytest.raises(ValueError, match="out must be a writeable C-contiguous float32"):
        transform(plan, batch(), 4, out=np.zeros((4, plan.n_features)))
    with pytest.raises(ValueError, match=r"counts must be a writeable int64 array of shape \[21\]"):
        transform(plan, batch(), 4, counts=np.zeros(20, dtype=np.int64))


# -- malformed batches: a ColumnError naming the column, nothing modified ------------------
BAD_BATCHES = [
    ({"amount": None}, MissingColumn, "missing column 'amount': the feature spec requires it"),
    ({"colour": f32(1, 2, 3, 4)}, UnknownColumn, "unknown column 'colour'"),
    ({"age": np.zeros(4)}, ColumnTypeError,
     "column 'age' must be a float32 array of shape [N] or [N, 1], got an array of dtype "
     "float64 and shape [4]"),
    ({"age": np.zeros(4, dtype=np.int32)}, ColumnTypeError, "got an array of dtype int32"),
    ({"age": [1.0, 2.0, 3.0, 4.0]}, ColumnTypeError, "got list"),
    ({"age": b"\x00" * 16}, ColumnTypeError, "got bytes"),
    ({"age": np.zeros((4, 2), dtype=np.float32)}, ColumnTypeError, "shape [4, 2]"),
    ({"age": f32(1, 2, 3)}, RowCountMismatch,
     "column 'age' holds 3 rows, but the batch has 4 rows"),
    ({"merchant": f32(1, 2, 3, 4)}, ColumnTypeError,
     "column 'merchant' must be a BYTES buffer (bytes, bytearray, memoryview or 1-D uint8 "
     "array), got an array of dtype float32 and shape [4]"),
    ({"merchant": "abcd"}, ColumnTypeError, "got str"),
    ({"merchant": encode_bytes([b"a", b"b"]) + b"\x01\x00"}, MalformedBytes,
     "column 'merchant': BYTES element 2 has a truncated length prefix (needs 4 bytes at "
     "offset 10, buffer is 12 bytes)"),
    ({"merchant": encode_bytes([b"a"]) + b"\x05\x00\x00\x00ab"}, MalformedBytes,
     "BYTES element 1 declares 5 bytes at offset 9 but only 2 remain"),
    ({"merchant": b"\xff\xff\xff\xff"}, MalformedBytes, "declares 4294967295 bytes"),
    ({"merchant": encode_bytes([b"a", b"b", b"c"])}, RowCountMismatch,
     "column 'merchant' holds 3 BYTES elements, but the batch has 4 rows"),
    ({"merchant": encode_bytes([b"a"] * 4) + b"\x00"}, RowCountMismatch,
     "holds more than 4 BYTES elements (1 bytes left over), but the batch has 4 rows"),
    ({"merchant": encode_bytes([b"a", b"123456789", b"", b""])}, ValueTooLong,
     "column 'merchant': element 1 is 9 bytes, longer than the spec's max_bytes 8"),
    ({"card": encode_bytes([b"x"] * 3)}, RowCountMismatch, "column 'card' holds 3 BYTES"),
]


@pytest.mark.parametrize(("change", "error", "message"), BAD_BATCHES)
def test_malformed_batches(plan: TransformPlan, change: dict[str, Any],
                           error: type[ColumnError], message: str) -> None:
    columns = batch(**{k: v for k, v in change.items() if v is not None})
    for name, value in change.items():
        if value is None:
            del columns[name]
    window = plan.new_counts()
    out = np.full((4, plan.n_features), 7.0, dtype=np.float32)
    with pytest.raises(error) as info:
        transform(plan, columns, 4, counts=window, out=out)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)
    assert info.value.column == next(iter(change))
    assert window.sum() == 0 and (out == 7.0).all()


def test_first_fault_wins(plan: TransformPlan) -> None:
    columns = batch(age=np.zeros(4), card=b"")
    del columns["raw"]
    columns["zzz"] = f32(1)
    with pytest.raises(MissingColumn, match="'raw'"):
        transform(plan, columns, 4)
    columns["raw"] = f32(1, 2, 3, 4)
    with pytest.raises(UnknownColumn, match="'zzz'"):
        transform(plan, columns, 4)
    del columns["zzz"]
    with pytest.raises(ColumnTypeError, match="'age'"):
        transform(plan, columns, 4)
    # inside one column the first bad element wins: element 0 too long, element 1 cut short
    too_long = encode_bytes([b"x" * 9]) + b"\x09\x00"
    with pytest.raises(ValueTooLong, match="element 0"):
        split_bytes("m", too_long, 2, 8)


def test_buffer_types(plan: TransformPlan) -> None:
    reference = transform(plan, batch(), 4)[0]
    raw = batch()["merchant"]
    for form in (bytearray(raw), memoryview(raw), np.frombuffer(raw, dtype=np.uint8)):
        np.testing.assert_array_equal(transform(plan, batch(merchant=form), 4)[0], reference)
    with pytest.raises(ColumnTypeError, match="memoryview that is not bytes"):
        transform(plan, batch(merchant=memoryview(np.zeros(2, np.int32))), 4)
    with pytest.raises(ValueError, match="rows must be an integer >= 0"):
        transform(plan, batch(), -1)


# -- the hash ---------------------------------------------------------------------------
def test_hash_golden_values() -> None:
    # with seed 0 the state starts at the FNV-1a offset basis, so the published FNV-1a 64
    # vectors ("a" → 0xaf63dc4c8601ec8c, "foobar" → 0x85944171f73967e8) come out mixed
    assert mix64(0) == 0 and hash_init(0) == FNV_OFFSET_BASIS
    assert hash_bytes(b"a") == mix64(0xAF63DC4C8601EC8C) == 0x02C0BDBF481420F8
    assert hash_bytes(b"foobar") == mix64(0x85944171F73967E8) == 0x404DA9E3B74078C2
    assert hash_bytes(b"") == 0xF52A15E9A9B5E89B
    assert hash_bytes(b"a", 1) == 0xEDB296206F5CD587
    assert hash_bytes(b"N14228", 7) == 0xC3C299F9FF61E2FC
    assert hash_bytes("\u00e9".encode()) == 0x233403617480019E
    assert hash_bytes(b"\xff\x00", 2**64 - 1) == 0xD81E4ECE54FCA768


def test_hash_buckets_are_seed_dependent_and_uniform() -> None:
    values = [f"merchant-{i}".encode() for i in range(4000)]

    def buckets(seed: int) -> npt.NDArray[np.int64]:
        spec = FeatureSpec((CategoricalColumn("m", HashBuckets(8, seed=seed, output="index")),))
        profile = ReferenceProfile(0, (CategoricalReference("m", (), (0, 0)),))
        out, _ = transform(compile_plan(spec, profile), {"m": encode_bytes(values)}, 4000)
        return out[:, 0].astype(np.int64)

    one, again, two = buckets(1), buckets(1), buckets(2)
    assert (one == again).all()
    assert 0.8 < np.mean(one != two) < 0.95  # independent assignments differ 7/8 of the time
    sizes = np.bincount(one, minlength=8)
    assert sizes.min() > 400 and sizes.max() < 600  # 500 expected per bucket
    assert one[:8].tolist() == [hash_bytes(v, 1) % 8 for v in values[:8]]


@given(st.lists(st.binary(max_size=40), max_size=30), st.integers(0, 2**64 - 1))
def test_vectorised_hash_equals_scalar(values: list[bytes], seed: int) -> None:
    buf = encode_bytes(values)
    e = split_bytes("v", buf, len(values), 64)
    hashes = hash_elements(e.data, e.starts, e.lengths, hash_init(seed))
    assert hashes.tolist() == [hash_bytes(v, seed) for v in values]


def test_count_scores() -> None:
    counts = count_scores((0.0, 0.5, 1.0), [np.nan, -1, 0, 0.25, 0.5, 1.0, 2.0])
    assert counts.tolist() == [1, 1, 2, 2, 1]
    again = count_scores((0.0, 0.5, 1.0), [0.75], counts)
    assert again is counts and counts.tolist() == [1, 1, 2, 3, 1]


# -- properties: random specs and batches against the naive reference ----------------------
FLOAT32 = st.floats(width=32)
FINITE = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, width=32)
WORDS = st.sampled_from([b"a", b"b", b"ab", b"\xc3\xa9", b"zz", b"\xff", b"key", b"\x00"])


@st.composite
def edge_lists(draw: st.DrawFn, min_size: int) -> tuple[float, ...]:
    values = draw(st.lists(FINITE, min_size=min_size, max_size=6, unique=True))
    return tuple(sorted(float(v) for v in values))


@st.composite
def numeric_column(draw: st.DrawFn, name: str) -> tuple[NumericColumn, NumericReference]:
    impute = draw(st.none() | FINITE.map(lambda v: Impute("constant", float(v))))
    clip = None
    if draw(st.booleans()):
        lo, hi = sorted(draw(st.lists(FINITE, min_size=2, max_size=2)))
        clip = Clip(lo if draw(st.booleans()) else None, hi)
    standardize = None
    if draw(st.booleans()):
        std = draw(st.floats(min_value=1e-3, max_value=1e3))
        standardize = Standardize(float(draw(FINITE)), std)
    bucketize = None
    if impute is not None and draw(st.booleans()):
        bucketize = Bucketize(edges=draw(edge_lists(1)),
                              output=draw(st.sampled_from(["one_hot", "index"])))
    column = NumericColumn(name, impute=impute, clip=clip, log1p=draw(st.booleans()),
                           standardize=standardize, bucketize=bucketize)
    return column, NumericReference(name, draw(edge_lists(2)), ())


@st.composite
def categorical_column(draw: st.DrawFn, name: str
                       ) -> tuple[CategoricalColumn, CategoricalReference]:
    output = draw(st.sampled_from(["one_hot", "index"]))
    encode: Vocabulary | HashBuckets
    if draw(st.booleans()):
        words = draw(st.lists(WORDS.filter(lambda w: w != b"\xff") | st.just(b""),
                              min_size=1, max_size=5, unique=True))
        encode = Vocabulary(values=tuple(words), output=output)
    else:
        encode = HashBuckets(draw(st.integers(1, 40)), draw(st.integers(0, 2**64 - 1)), output)
    profile_words = draw(st.lists(WORDS.filter(lambda w: w != b"\xff"), max_size=4, unique=True))
    return (CategoricalColumn(name, encode, max_bytes=16),
            CategoricalReference(name, tuple(profile_words), ()))


@st.composite
def cases(draw: st.DrawFn) -> tuple[FeatureSpec, ReferenceProfile, dict[str, Any], int]:
    n_columns = draw(st.integers(1, 4))
    rows = draw(st.integers(0, 25))
    columns, features, batch_ = [], [], {}
    for i in range(n_columns):
        name = f"c{i}"
        if draw(st.booleans()):
            column, feature = draw(numeric_column(name))
            specials = [*feature.edges, *(column.bucketize.edges if column.bucketize else ())]
            value = FLOAT32 | st.sampled_from(specials) | st.sampled_from([1e38, -1e-45, 0.0])
            batch_[name] = np.array(draw(st.lists(value, min_size=rows, max_size=rows)),
                                    dtype=np.float32)
        else:
            column, feature = draw(categorical_column(name))
            value = WORDS | st.just(b"") | st.binary(max_size=16) | st.text(max_size=4).map(
                lambda s: s.encode()[:16])
            batch_[name] = encode_bytes(draw(st.lists(value, min_size=rows, max_size=rows)))
        columns.append(column)
        features.append(replace_counts(feature))
    return FeatureSpec(tuple(columns)), ReferenceProfile(0, tuple(features)), batch_, rows


def replace_counts(feature: NumericReference | CategoricalReference
                   ) -> NumericReference | CategoricalReference:
    if isinstance(feature, NumericReference):
        return NumericReference(feature.name, feature.edges, (0,) * feature.n_bins)
    return CategoricalReference(feature.name, feature.vocabulary, (0,) * feature.n_bins)


@given(cases())
def test_twin_equals_naive_reference(case: tuple[FeatureSpec, ReferenceProfile,
                                                 dict[str, Any], int]) -> None:
    spec, profile, columns, rows = case
    plan = compile_plan(spec, profile)
    matrix, counts = transform(plan, columns, rows)
    expected_matrix, expected_counts = naive_transform(spec, profile, columns, rows)
    np.testing.assert_array_equal(matrix, expected_matrix)  # NaN == NaN here
    non_nan = ~np.isnan(matrix)
    assert (matrix[non_nan].view(np.uint32) == expected_matrix[non_nan].view(np.uint32)).all()
    assert counts.tolist() == expected_counts.tolist()
    assert count(plan, columns, rows).tolist() == counts.tolist()


@given(cases())
def test_counts_and_one_hot_rows(case: tuple[FeatureSpec, ReferenceProfile,
                                             dict[str, Any], int]) -> None:
    spec, profile, columns, rows = case
    plan = compile_plan(spec, profile)
    matrix, counts = transform(plan, columns, rows)
    for c in range(plan.n_columns):
        assert counts[plan.bin_ptr[c]:plan.bin_ptr[c + 1]].sum() == rows
        if plan.one_hot[c]:
            block = matrix[:, plan.out_offset[c]:plan.out_offset[c] + plan.out_width[c]]
            assert (block.sum(axis=1) == 1).all() and set(np.unique(block)) <= {0.0, 1.0}


def test_large_batch_matches_reference() -> None:
    rng = np.random.default_rng(11)
    rows = 20_000
    spec = FeatureSpec((
        NumericColumn("x", impute=Impute("constant", 0.0), clip=Clip(-5, 5), log1p=True,
                      standardize=Standardize(0.1, 0.7), bucketize=Bucketize(edges=(-1, 0, 1))),
        CategoricalColumn("v", Vocabulary(values=tuple(f"w{i}".encode() for i in range(50)))),
        CategoricalColumn("h", HashBuckets(32, seed=3)),
    ))
    profile = ReferenceProfile(0, (
        NumericReference("x", tuple(np.linspace(-3, 3, 11).tolist()), (0,) * 13),
        CategoricalReference("v", tuple(f"w{i}".encode() for i in range(40)), (0,) * 42),
        CategoricalReference("h", (b"w1", b"w2"), (0,) * 4),
    ))
    x = rng.normal(size=rows).astype(np.float32)
    x[rng.random(rows) < 0.05] = np.nan
    words = [f"w{i}".encode() for i in rng.integers(0, 70, rows)]
    columns = {"x": x, "v": encode_bytes(words), "h": encode_bytes(words)}
    matrix, counts = transform(compile_plan(spec, profile), columns, rows)
    expected_matrix, expected_counts = naive_transform(spec, profile, columns, rows)
    np.testing.assert_array_equal(matrix, expected_matrix)
    assert counts.tolist() == expected_counts.tolist()
