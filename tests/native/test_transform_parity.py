"""The Cython transform (``native._transform``) against its NumPy twin.

The twin is the specification (``test_transform_py`` checks it against a naive
per-row reference): the kernel must give the same matrix bit for bit (log1p
columns within 1 ulp where NumPy's log1p is not the C library's; NaN payloads not
compared), exactly the same counts, and on malformed input the same exception
class and message, with ``out`` and ``counts`` untouched.
"""

from __future__ import annotations

import gc
import os
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from native import transform, transform_py
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
from native.reference_profile import CategoricalReference, NumericReference, ReferenceProfile
from native.transform_plan import OP_LOG1P, TransformPlan, compile_plan

from .test_transform_py import BAD_BATCHES, PROFILE, SPEC, batch, cases, f32

try:
    from native import _transform
except ImportError:  # reported by test_extension_loaded
    _transform = None  # type: ignore[assignment]

# the twin warns where NumPy casts overflow or a hand-built plan divides by zero
pytestmark = pytest.mark.filterwarnings(
    "ignore:overflow encountered in cast:RuntimeWarning",
    "ignore:divide by zero encountered in remainder:RuntimeWarning",
)

Case = tuple[FeatureSpec, ReferenceProfile, dict[str, Any], int]
Result = tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]


def _c() -> ModuleType:
    assert _transform is not None, "the Cython extension native._transform is not built"
    return _transform


# -- the extension is there, and the selector honours the switch ---------------------------


def test_extension_loaded() -> None:
    """Fails when the build silently skipped the extension (unless told to)."""
    if os.environ.get("OSPREY_NO_EXTENSIONS") == "1":
        assert not transform.EXTENSION_LOADED
        assert transform.transform is transform_py.transform
    else:
        assert transform.EXTENSION_LOADED, "native._transform failed to import"
        assert transform.transform is _c().transform
        assert transform.count is _c().count
        assert transform.count_scores is _c().count_scores


def test_no_extensions_switch_forces_the_twin() -> None:
    code = "from native import transform as t; print(t.EXTENSION_LOADED, t.count.__module__)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "OSPREY_NO_EXTENSIONS": "1"},
        capture_output=True, text=True, check=True,
    ).stdout.split()
    assert out == ["False", "native.transform_py"]


def test_selector_exports_the_twins_api() -> None:
    assert set(transform_py.__all__) <= set(transform.__all__)
    assert transform.compile_plan is transform_py.compile_plan


# -- comparison helpers ----------------------------------------------------------------------


def _log1p_columns(plan: TransformPlan) -> npt.NDArray[np.bool_]:
    """Matrix columns whose value went through log1p (VALUE encoder)."""
    mask = np.zeros(plan.n_features, dtype=bool)
    for c in range(plan.n_columns):
        if plan.ops[c] & OP_LOG1P and plan.encoder[c] == 0:
            mask[plan.out_offset[c]] = True
    return mask


def assert_same_matrix(plan: TransformPlan, got: np.ndarray, want: np.ndarray) -> None:
    """Bit for bit (NaN == NaN whatever the payload); log1p columns within 1 ulp (the
    kernel's vector log1p and NumPy's, SIMD or the C library's, may round apart)."""
    assert got.dtype == want.dtype == np.float32 and got.shape == want.shape
    nan = np.isnan(want)
    assert (np.isnan(got) == nan).all()
    exact = got.view(np.uint32) == want.view(np.uint32)
    with np.errstate(over="ignore"):
        near = (np.nextafter(want, np.float32(np.inf)) == got) | (
            np.nextafter(want, np.float32(-np.inf)) == got)
    exact |= near & _log1p_columns(plan)[None, :]
    assert (exact | nan).all(), np.argwhere(~(exact | nan))[:5]


def assert_same(plan: TransformPlan, got: Result, want: Result) -> None:
    assert_same_matrix(plan, got[0], want[0])
    assert got[1].dtype == want[1].dtype == np.int64
    assert got[1].tolist() == want[1].tolist()


def raised(fn: Callable[[], object]) -> tuple[type[BaseException], str] | None:
    try:
        fn()
    except Exception as exc:
        return type(exc), str(exc)
    return None


# -- hypothesis parity ---------------------------------------------------------------------


@st.composite
def containers(draw: st.DrawFn, case: Case) -> Case:
    """The same batch in the other containers the twin accepts (they must not matter)."""
    spec, profile, columns, rows = case
    out: dict[str, Any] = {}
    for name, value in columns.items():
        if isinstance(value, np.ndarray):
            form = draw(st.sampled_from(["flat", "column", "strided", "unaligned"]))
            if form == "column":
                value = value.reshape(-1, 1)
            elif form == "strided":
                wide = np.zeros(2 * rows, dtype=np.float32)
                wide[::2] = value
                value = wide[::2]
            elif form == "unaligned":
                raw = np.zeros(4 * rows + 1, dtype=np.uint8)
                value = raw[1:].view(np.float32)
                value[:] = columns[name]
        else:
            form = draw(st.sampled_from(["bytes", "bytearray", "memoryview", "uint8"]))
            if form == "bytearray":
                value = bytearray(value)
            elif form == "memoryview":
                value = memoryview(value)
            elif form == "uint8":
                value = np.frombuffer(value, dtype=np.uint8)
        out[name] = value
    return spec, profile, out, rows


@given(cases().flatmap(containers))
def test_transform_parity(case: Case) -> None:
    spec, profile, columns, rows = case
    plan = compile_plan(spec, profile)
    want = transform_py.transform(plan, columns, rows)
    got = _c().transform(plan, columns, rows)
    assert_same(plan, got, want)
    assert _c().count(plan, columns, rows).tolist() == want[1].tolist()


@given(cases(), st.booleans())
def test_parity_with_out_counts_and_sketch(case: Case, sketch: bool) -> None:
    spec, profile, columns, rows = case
    plan = compile_plan(spec, profile)
    start = np.arange(plan.n_bins, dtype=np.int64)
    results = []
    for impl in (transform_py, _c()):
        window = start.copy()
        out = np.full((rows, plan.n_features), np.float32(7.5))
        matrix, counts = impl.transform(plan, columns, rows, counts=window, out=out, sketch=sketch)
        assert matrix is out and counts is window
        results.append((matrix, counts))
    assert_same(plan, results[1], results[0])
    if not sketch:
        assert results[1][1].tolist() == start.tolist()


@given(st.lists(st.floats(allow_nan=False), min_size=1, max_size=6).map(sorted),
       st.lists(st.floats(width=32) | st.sampled_from([0.0, 0.5, 1.0]), max_size=40),
       st.booleans())
def test_count_scores_parity(edges: list[float], scores: list[float], given_counts: bool) -> None:
    start = np.arange(len(edges) + 2, dtype=np.int64) if given_counts else None
    want = transform_py.count_scores(tuple(edges), scores,
                                     None if start is None else start.copy())
    got = _c().count_scores(tuple(edges), scores, None if start is None else start.copy())
    assert got.dtype == np.int64 and got.tolist() == want.tolist()


def test_count_scores_unusual_inputs_follow_the_twin() -> None:
    scores = np.array([0.1, 0.7, np.nan], dtype=np.float32)
    for edges, counts in [((1.0, 0.0), None), ((), None), ((0.0, np.nan), None),
                          ((0.0, 1.0), np.zeros(4)), ((0.0, 1.0), np.zeros(3, np.int64)),
                          ((0.0, 1.0), np.zeros(8, np.int64)[::2])]:
        a = None if counts is None else counts.copy()
        b = None if counts is None else counts.copy()
        want = raised(lambda e=edges, a=a: transform_py.count_scores(e, scores, a))
        got = raised(lambda e=edges, b=b: _c().count_scores(e, scores, b))
        assert got == want, edges
        if want is None:
            np.testing.assert_array_equal(
                _c().count_scores(edges, scores, None if counts is None else counts.copy()),
                transform_py.count_scores(edges, scores,
                                          None if counts is None else counts.copy()))


def test_zero_and_one_row() -> None:
    plan = compile_plan(SPEC, PROFILE)
    for rows in (0, 1):
        columns = {name: value[:rows] if isinstance(value, np.ndarray) else
                   encode_bytes([b"c"] * rows) for name, value in batch().items()}
        assert_same(plan, _c().transform(plan, columns, rows),
                    transform_py.transform(plan, columns, rows))
    assert _c().transform(plan, {n: v for n, v in columns.items()}, np.int64(1))[0].shape == (
        1, plan.n_features)


def big_case(rows: int, seed: int = 5) -> tuple[TransformPlan, dict[str, Any]]:
    rng = np.random.default_rng(seed)
    vocabulary = tuple(f"merchant-{i:04d}".encode() for i in range(50))
    spec = FeatureSpec((
        NumericColumn("x", impute=Impute("constant", 0.0), clip=Clip(-5, 5), log1p=True,
                      standardize=Standardize(0.1, 0.7), bucketize=Bucketize(edges=(-1, 0, 1))),
        NumericColumn("amount", impute=Impute("median", 12.5), clip=Clip(0, None), log1p=True,
                      standardize=Standardize(2.1, 1.3)),
        NumericColumn("raw"),
        NumericColumn("z", standardize=Standardize(-3.0, 7.0),
                      bucketize=None),
        CategoricalColumn("v", Vocabulary(values=(*vocabulary, b""))),
        CategoricalColumn("i", Vocabulary(values=vocabulary[:10], output="index")),
        CategoricalColumn("h", HashBuckets(64, seed=3)),
        CategoricalColumn("k", HashBuckets(1000, seed=2**64 - 1, output="index"), max_bytes=64),
    ))
    profile = ReferenceProfile(0, (
        NumericReference("x", tuple(np.linspace(-3, 3, 11).tolist()), (0,) * 13),
        NumericReference("amount", (0.0, 1.0, 10.0, 100.0, 1e4), (0,) * 7),
        NumericReference("raw", (-1.0, 1.0), (0,) * 4),
        NumericReference("z", (-1e30, 0.0, 1e30), (0,) * 5),
        CategoricalReference("v", vocabulary[:40], (0,) * 42),
        CategoricalReference("i", vocabulary[5:20], (0,) * 17),
        CategoricalReference("h", vocabulary[:3], (0,) * 5),
        CategoricalReference("k", (), (0,) * 2),
    ))
    x = rng.normal(size=rows).astype(np.float32)
    x[rng.random(rows) < 0.05] = np.nan
    amount = rng.lognormal(3, 2, rows).astype(np.float32)
    amount[rng.random(rows) < 0.02] = np.nan
    raw = rng.standard_cauchy(rows).astype(np.float32)
    raw[rng.random(rows) < 0.01] = np.inf
    raw[rng.random(rows) < 0.01] = -np.inf
    z = (rng.normal(size=rows) * 10.0 ** rng.integers(-40, 38, rows)).astype(np.float32)
    words = [f"merchant-{i:04d}".encode() for i in rng.integers(0, 70, rows)]
    for i in rng.integers(0, rows, rows // 50):
        words[i] = b""
    for i in rng.integers(0, rows, rows // 100):
        words[i] = "caf\u00e9-\U0001f600".encode() if i % 2 else b"\xff\xfe"
    keys = [bytes(rng.integers(0, 256, int(n), dtype=np.uint8))
            for n in rng.integers(0, 64, rows)]
    columns = {"x": x, "amount": amount, "raw": raw, "z": z, "v": encode_bytes(words),
               "i": encode_bytes(words), "h": encode_bytes(words), "k": encode_bytes(keys)}
    return compile_plan(spec, profile), columns


def test_large_batch_parity() -> None:
    plan, columns = big_case(100_000)
    want = transform_py.transform(plan, columns, 100_000)
    got = _c().transform(plan, columns, 100_000)
    assert_same(plan, got, want)
    assert got[1].sum() == 100_000 * plan.n_columns
    assert _c().count(plan, columns, 100_000).tolist() == want[1].tolist()
    no_sketch = _c().transform(plan, columns, 100_000, sketch=False)
    assert_same_matrix(plan, no_sketch[0], want[0])
    assert no_sketch[1].sum() == 0


def test_sketch_edges_between_float32_values() -> None:
    """The kernel counts float32 values against the profile's edges rounded up to
    float32; edges that no float32 equals (0.1, 1/3, 1e-40, beyond the float32 range)
    and values on either side of them, on them and on the closed last edge must fall
    in the twin's bins, in the block path and the row-by-row path alike."""
    edges = (-3.5e38, -1e-40, 0.1, 1.0 / 3.0, 2.0 ** 24 + 1.0, 1e39)
    f32_edges = np.array(edges, dtype=np.float64).astype(np.float32)
    near = np.concatenate([
        np.nextafter(f32_edges, np.float32(-np.inf)), f32_edges,
        np.nextafter(f32_edges, np.float32(np.inf)),
        np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 3.4e38, -3.4e38], np.float32),
    ])
    plan = compile_plan(FeatureSpec((NumericColumn("x"),)),
                        ReferenceProfile(0, (NumericReference("x", edges, (0,) * 8),)))
    for repeat in (1, 3, 40):  # 25, 75 and 1000 rows: short, one and many blocks
        x = np.tile(near, repeat).astype(np.float32)
        rows = x.shape[0]
        want = transform_py.transform(plan, {"x": x}, rows)
        assert_same(plan, _c().transform(plan, {"x": x}, rows), want)
        for i in range(0, rows, 7):  # one row at a time (the short path)
            one = transform_py.transform(plan, {"x": x[i : i + 1]}, 1)[1]
            assert _c().transform(plan, {"x": x[i : i + 1]}, 1)[1].tolist() == one.tolist()


def test_log1p_within_one_ulp_of_the_twin() -> None:
    """The kernel's vector log1p against NumPy's on float32 values across the range:
    at most 1 float32 ulp apart, and equal for inf, NaN and signed zeros."""
    rng = np.random.default_rng(7)
    bits = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32).copy()
    x[~np.isfinite(x)] = 1.0
    x[:8] = [np.inf, -np.inf, np.nan, 0.0, -0.0, 1e-45, 0.41421354, -3.4e38]
    plan = compile_plan(FeatureSpec((NumericColumn("x", log1p=True),)),
                        ReferenceProfile(0, (NumericReference("x", (0.0, 1.0), (0,) * 4),)))
    got = _c().transform(plan, {"x": x}, x.shape[0], sketch=False)[0][:, 0]
    want = transform_py.transform(plan, {"x": x}, x.shape[0], sketch=False)[0][:, 0]
    assert np.array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    assert np.array_equal(np.signbit(got[ok]), np.signbit(want[ok]))
    ulps = np.abs(got[ok].view(np.int32).astype(np.int64) - want[ok].view(np.int32))
    assert ulps.max() <= 1


def test_threads_share_a_plan() -> None:
    """Batches past NOGIL_MIN_ROWS run without the GIL; the plan's state is read-only."""
    plan, columns = big_case(4 * _c().NOGIL_MIN_ROWS, seed=9)
    rows = 4 * _c().NOGIL_MIN_ROWS
    want = transform_py.transform(plan, columns, rows)
    failures: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                assert_same(plan, _c().transform(plan, columns, rows), want)
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[0]


def test_plans_are_compiled_per_plan_and_forgotten() -> None:
    plan = compile_plan(SPEC, PROFILE)
    first = _c().transform(plan, batch(), 4)
    for _ in range(3):  # new plans, possibly at the address of a dead one
        del plan
        gc.collect()
        plan = compile_plan(SPEC, PROFILE)
        assert_same(plan, _c().transform(plan, batch(), 4), first)
    other = compile_plan(FeatureSpec((NumericColumn("x"),)),
                         ReferenceProfile(0, (NumericReference("x", (0.0, 1.0), (0,) * 4),)))
    assert _c().transform(other, {"x": f32(0.5)}, 1)[1].tolist() == [0, 0, 1, 0]


# -- malformed input: the same error, nothing written ----------------------------------------


def assert_same_error(plan: TransformPlan, columns: dict[str, Any], rows: Any,
                      **kwargs: Any) -> tuple[type[BaseException], str]:
    """Both raise the same class and message, and leave ``out`` and ``counts`` alone."""
    outcomes = []
    for impl in (transform_py, _c()):
        args = {k: (v.copy() if _copyable(v) else v) for k, v in kwargs.items()}
        before = {k: v.tobytes() for k, v in args.items() if isinstance(v, np.ndarray)}
        result = raised(lambda impl=impl, args=args: impl.transform(plan, columns, rows, **args))
        assert result is not None, f"{impl.__name__} accepted the batch"
        for name, value in before.items():
            assert args[name].tobytes() == value, f"{impl.__name__} wrote {name}"
        outcomes.append(result)
    assert outcomes[1] == outcomes[0]
    if "out" not in kwargs:
        counted = [raised(lambda impl=impl: impl.count(plan, columns, rows))
                   for impl in (transform_py, _c())]
        assert counted[1] == counted[0]
    return outcomes[0]


def _copyable(value: object) -> bool:
    """An array whose copy keeps what makes it good or bad (layout, writeability)."""
    return (isinstance(value, np.ndarray) and value.flags.c_contiguous
            and value.flags.writeable)


def _kwargs(plan: TransformPlan, rows: int) -> dict[str, Any]:
    return {"counts": np.arange(plan.n_bins, dtype=np.int64),
            "out": np.full((rows, plan.n_features), np.float32(7.0))}


@pytest.mark.parametrize(("change", "error", "message"), BAD_BATCHES)
def test_malformed_batches(change: dict[str, Any], error: type[Exception], message: str) -> None:
    plan = compile_plan(SPEC, PROFILE)
    columns = batch(**{k: v for k, v in change.items() if v is not None})
    for name, value in change.items():
        if value is None:
            del columns[name]
    kind, text = assert_same_error(plan, columns, 4, **_kwargs(plan, 4))
    assert kind is error and message in text


@pytest.mark.parametrize("rows", [-1, True, 1.5, "4", None, np.int64(-2)])
def test_bad_rows(rows: Any) -> None:
    plan = compile_plan(SPEC, PROFILE)
    kind, text = assert_same_error(plan, batch(), rows)
    assert kind is ValueError and "rows must be an integer >= 0" in text


def test_bad_out_and_counts() -> None:
    plan = compile_plan(SPEC, PROFILE)
    good = _kwargs(plan, 4)
    for name, bad in [("counts", np.zeros(plan.n_bins)), ("counts", [0] * plan.n_bins),
                      ("counts", np.zeros(plan.n_bins + 1, np.int64)),
                      ("counts", np.zeros(2 * plan.n_bins, np.int64)[::2]),
                      ("out", np.zeros((4, plan.n_features))),
                      ("out", np.zeros((plan.n_features, 4), np.float32).T),
                      ("out", np.zeros((5, plan.n_features), np.float32)),
                      ("out", np.zeros(4 * plan.n_features, np.float32))]:
        kind, _ = assert_same_error(plan, batch(), 4, **{**good, name: bad})
        assert kind is ValueError
    frozen = np.zeros(plan.n_bins, np.int64)
    frozen.flags.writeable = False
    assert_same_error(plan, batch(), 4, counts=frozen)
    # a column error comes before an out/counts error, as in the twin
    kind, _ = assert_same_error(plan, batch(age=f32(1)), 4, counts=np.zeros(3))
    assert kind.__name__ == "RowCountMismatch"


def test_odd_buffers_and_mappings() -> None:
    plan = compile_plan(SPEC, PROFILE)
    released = memoryview(b"\x00" * 16)
    released.release()
    for value in (memoryview(np.zeros(4, np.int32)), memoryview(b"\x01\x00\x00\x00abc")[::2],
                  released, np.zeros((2, 8), np.uint8), np.zeros(16, np.uint16),
                  np.zeros(32, np.uint8)[::2], 12, None):
        assert_same_error(plan, batch(merchant=value), 4)
    for value in (np.zeros(4, ">f4"), np.zeros((4, 1, 1), np.float32), np.zeros((1, 4), np.float32),
                  np.float32(1.0), memoryview(np.zeros(4, np.float32))):
        assert_same_error(plan, batch(amount=value), 4)

    class Columns(dict):  # a Mapping other than a plain dict takes the generic path
        pass

    raw = batch()
    for columns in (Columns(raw), Columns({**raw, "extra": 1})):
        want = raised(lambda c=columns: transform_py.transform(plan, c, 4))
        got = raised(lambda c=columns: _c().transform(plan, c, 4))
        assert got == want
    assert_same(plan, _c().transform(plan, Columns(raw), 4), transform_py.transform(plan, raw, 4))
    # an unknown column listed after a bad one: unknown columns are reported first
    assert_same_error(plan, {**batch(age=np.zeros(4)), "extra": f32(1, 2, 3, 4)}, 4)
    assert_same_error(plan, {**batch(), 7: f32(1, 2, 3, 4)}, 4)


CORRUPTIONS = ["truncate", "extend", "drop_prefix", "huge_length", "too_long", "wrong_type",
               "wrong_dtype", "short", "remove"]


@st.composite
def corrupted(draw: st.DrawFn) -> tuple[Case, dict[str, str]]:
    """A valid case with a few columns broken in different ways (first fault must win)."""
    spec, profile, columns, rows = draw(cases())
    names = list(columns)
    broken = draw(st.dictionaries(st.sampled_from(names), st.sampled_from(CORRUPTIONS),
                                  min_size=1, max_size=3))
    out = dict(columns)
    for name, how in broken.items():
        value = out[name]
        if how == "remove":
            del out[name]
        elif how == "wrong_type":
            out[name] = list(range(rows))
        elif how == "wrong_dtype":
            out[name] = np.zeros(rows, np.float64) if isinstance(value, np.ndarray) else (
                np.zeros(len(value), np.int8))
        elif isinstance(value, np.ndarray):
            out[name] = value[: max(rows - 1, 0)] if how == "short" else np.append(value, 1.0)
        else:
            cut = draw(st.integers(0, max(len(value) - 1, 0)))
            if how == "truncate":
                out[name] = value[:cut]
            elif how == "extend":
                out[name] = value + draw(st.binary(min_size=1, max_size=6))
            elif how == "drop_prefix":
                out[name] = value[cut:]
            elif how == "huge_length":
                out[name] = value[:cut] + struct.pack("<I", draw(st.integers(5, 2**32 - 1)))
            elif how == "too_long":
                out[name] = value + encode_bytes([b"x" * 17])
            else:  # short: one element fewer
                out[name] = encode_bytes([b"a"] * max(rows - 1, 0))
    if draw(st.booleans()):
        out["unknown"] = b""
    return (spec, profile, out, rows), broken


@given(corrupted())
def test_corrupted_batches_raise_the_twins_error(arg: tuple[Case, dict[str, str]]) -> None:
    (spec, profile, columns, rows), _ = arg
    plan = compile_plan(spec, profile)
    want = raised(lambda: transform_py.transform(plan, columns, rows))
    got = raised(lambda: _c().transform(plan, columns, rows))
    assert got == want
    if want is None:  # some corruptions happen to stay valid (e.g. cut at a boundary)
        assert_same(plan, _c().transform(plan, columns, rows),
                    transform_py.transform(plan, columns, rows))
    else:
        assert_same_error(plan, columns, rows, **_kwargs(plan, rows))


@given(st.binary(max_size=64), st.integers(0, 6), st.integers(1, 8))
def test_random_buffers(buffer: bytes, rows: int, max_bytes: int) -> None:
    spec = FeatureSpec((CategoricalColumn("m", HashBuckets(4, seed=1), max_bytes=max_bytes),))
    plan = compile_plan(spec, ReferenceProfile(0, (CategoricalReference("m", (b"a",), (0,) * 3),)))
    want = raised(lambda: transform_py.transform(plan, {"m": buffer}, rows))
    got = raised(lambda: _c().transform(plan, {"m": buffer}, rows))
    assert got == want
    if want is None:
        assert_same(plan, _c().transform(plan, {"m": buffer}, rows),
                    transform_py.transform(plan, {"m": buffer}, rows))


# -- hand-built plans the kernel cannot prove safe go to the twin whole ------------------------


def test_inconsistent_plans_follow_the_twin() -> None:
    plan = compile_plan(SPEC, PROFILE)
    i64 = np.int64
    variants = [
        replace(plan, bin_edges=plan.bin_edges[::-1].copy()),
        replace(plan, edges=np.array([65.0, 18.0])),
        replace(plan, out_offset=np.array([0, 1, 4, 5, 20], i64)),
        replace(plan, out_width=np.array([1, 2, 1, 4, 1], i64)),
        replace(plan, oov_slot=np.array([-1, -1, -1, 9, -1], i64)),
        replace(plan, hash_buckets=np.array([0, 0, 0, 0, 0], np.uint64)),
        replace(plan, lut_bin=np.array([1, 1, 1, 7, 2], i64)),
        replace(plan, bin_ptr=np.array([0, 5, 10, 14, 18, 25], i64)),
        replace(plan, key_ptr=np.array([0, 1, 2, 3, 4, 99], i64)),
        replace(plan, ops=plan.ops.astype(np.int64)),
        replace(plan, encoder=np.array([0, 1, 0, 3, 2], np.int32)),
        replace(plan, categorical=(True, False, False, True, True)),
        replace(plan, column_names=("amount", "age", "raw", "merchant", "merchant")),
        replace(plan, n_bins=3.5),
    ]
    for bad in variants:
        want = raised(lambda b=bad: transform_py.transform(b, batch(), 4))
        got = raised(lambda b=bad: _c().transform(b, batch(), 4))
        assert got == want
        if want is None:
            assert_same(bad, _c().transform(bad, batch(), 4),
                        transform_py.transform(bad, batch(), 4))


def test_many_edges_and_unimputed_buckets() -> None:
    """Past LINEAR_EDGES_MAX edges the kernel binary-searches; a NaN that reaches a
    bucketize (possible only in a hand-built plan) lands in the last bucket, as in NumPy."""
    rng = np.random.default_rng(3)
    edges = tuple(np.unique(rng.normal(size=60)).tolist())
    spec = FeatureSpec((
        NumericColumn("x", impute=Impute("constant", 0.0), bucketize=Bucketize(edges=edges)),
        NumericColumn("y", impute=Impute("constant", 0.0),
                      bucketize=Bucketize(edges=edges[:40], output="index")),
    ))
    profile = ReferenceProfile(0, (NumericReference("x", edges, (0,) * (len(edges) + 2)),
                                   NumericReference("y", edges[:3], (0,) * 5)))
    plan = compile_plan(spec, profile)
    for rows in (1, 7, 8, 1000):
        x = rng.normal(size=rows).astype(np.float32)
        x[:: 5] = np.nan
        x[1:: 7] = np.float32(edges[-1])
        columns = {"x": x, "y": x[::-1].copy()}
        assert_same(plan, _c().transform(plan, columns, rows),
                    transform_py.transform(plan, columns, rows))
        unimputed = replace(plan, ops=np.zeros(2, np.int32))
        assert_same(unimputed, _c().transform(unimputed, columns, rows),
                    transform_py.transform(unimputed, columns, rows))
