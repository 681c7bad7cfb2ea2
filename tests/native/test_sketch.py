"""Drift sketches: golden values, properties, and Cython-vs-twin parity."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from native import sketch, sketch_py

try:
    from native import _sketch
except ImportError:  # reported by test_extension_loaded
    _sketch = None  # type: ignore[assignment]

IMPLEMENTATIONS = {"py": sketch_py, "c": _sketch}
INT64_MAX = int(np.iinfo(np.int64).max)


def _numpy_log_is_libm() -> bool:
    """Whether NumPy's float64 log is the C library's here (it is not on every CPU).

    Where it is, the kernel and its twin must agree bit for bit on everything; where
    NumPy dispatches to its own SIMD log, results that go through a log may differ
    in the last bits, and the parity tests fall back to a tight tolerance.
    """
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [rng.random(50_000), 1.0 / rng.integers(1, 10**6, 50_000), rng.random(50_000) * 1e4]
    )
    x = x[x > 0]
    return bool(np.array_equal(np.log(x), np.array([math.log(v) for v in x])))


LOG_IS_LIBM = _numpy_log_is_libm()


@pytest.fixture(params=["py", "c"])
def impl(request: pytest.FixtureRequest) -> ModuleType:
    module = IMPLEMENTATIONS[request.param]
    assert module is not None, "the Cython extension native._sketch is not built"
    return module


def _c() -> ModuleType:
    assert _sketch is not None, "the Cython extension native._sketch is not built"
    return _sketch


def test_extension_loaded() -> None:
    """Fails when the build silently skipped the extension (unless told to)."""
    if os.environ.get("OSPREY_NO_EXTENSIONS") == "1":
        assert not sketch.EXTENSION_LOADED
        assert sketch.psi is sketch_py.psi
    else:
        assert sketch.EXTENSION_LOADED, "native._sketch failed to import"
        assert sketch.psi is _c().psi


def test_no_extensions_switch_forces_the_twin() -> None:
    code = "from native import sketch as s; print(s.EXTENSION_LOADED, s.chi2_rows.__module__)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "OSPREY_NO_EXTENSIONS": "1"},
        capture_output=True, text=True, check=True,
    ).stdout.split()
    assert out == ["False", "native.sketch_py"]


# -- golden values, computed by hand ----------------------------------------------------


def test_golden_two_bins(impl: ModuleType) -> None:
    ref, cur = [50, 50], [25, 75]
    # (0.25 - 0.5) ln(0.5) + (0.75 - 0.5) ln(1.5) = 0.25 ln 3
    assert impl.psi(ref, cur) == pytest.approx(0.25 * math.log(3), rel=1e-15)
    m = (0.375, 0.625)
    divergence = 0.5 * (
        0.5 * math.log2(0.5 / m[0]) + 0.5 * math.log2(0.5 / m[1])
        + 0.25 * math.log2(0.25 / m[0]) + 0.75 * math.log2(0.75 / m[1])
    )
    assert impl.js_distance(ref, cur) == pytest.approx(math.sqrt(divergence), rel=1e-14)
    assert impl.score_distance(ref, cur) == impl.js_distance(ref, cur)
    assert impl.ks_distance(ref, cur) == 0.25
    # expected 50/50 of 100 rows, observed 25/75: (25² + 25²) / 50 = 25; w = sqrt(25/100)
    assert impl.chi2(ref, cur) == (25.0, 1, 0.5)
    assert isinstance(impl.chi2(ref, cur), sketch_py.Chi2Result)


def test_golden_js_disjoint_is_one(impl: ModuleType) -> None:
    assert impl.js_distance([7, 0], [0, 3]) == 1.0
    assert impl.js_distance([1, 0, 0], [0, 0, 9]) == 1.0


def test_golden_epsilon_floor(impl: ModuleType) -> None:
    """A bin empty in the reference (a category unseen in training) is floored at epsilon."""
    ref, cur = [100, 0], [50, 50]
    expected = (0.5 - 1.0) * math.log(0.5) + (0.5 - 1e-4) * math.log(0.5 / 1e-4)
    assert impl.psi(ref, cur) == pytest.approx(expected, rel=1e-15)
    assert impl.psi(ref, cur, epsilon=0.01) == pytest.approx(
        (0.5 - 1.0) * math.log(0.5) + (0.5 - 0.01) * math.log(0.5 / 0.01), rel=1e-15
    )
    statistic, dof, w = impl.chi2(ref, cur)
    s = (0.5 - 1.0) ** 2 / 1.0 + (0.5 - 1e-4) ** 2 / 1e-4
    assert statistic == pytest.approx(100 * s, rel=1e-15)
    assert dof == 1
    assert w == pytest.approx(math.sqrt(s), rel=1e-15)
    # proportions below epsilon but not zero are floored too: the term stays bounded
    assert impl.psi([10**6, 1], [1, 10**6]) <= 2 * (1 - 1e-4) * math.log(1e4) + 1e-12


def test_golden_ks_ordered_range(impl: ModuleType) -> None:
    """Layout [missing, low, mid, high]: the missing bin is left off the CDF."""
    ref, cur = [10, 30, 30, 30], [90, 10, 0, 0]
    assert impl.ks_distance(ref, cur, ordered=(1, 4)) == pytest.approx(2 / 3, rel=1e-15)
    assert impl.ks_distance(ref, cur, ordered=slice(1, None)) == impl.ks_distance(
        ref, cur, ordered=(1, 4)
    )
    assert impl.ks_distance(ref, cur, ordered=(-3, None)) == impl.ks_distance(
        ref, cur, ordered=(1, 4)
    )
    # all bins: cumulative 0.1/0.9, 0.4/1.0, 0.7/1.0, 1/1 -> 0.8
    assert impl.ks_distance(ref, cur) == pytest.approx(0.8, rel=1e-15)
    # only the missing bin differs: nothing moves on the ordered axis
    assert impl.ks_distance([10, 1, 2, 3], [500, 2, 4, 6], ordered=(1, 4)) == 0.0


def test_golden_chi2_dof_counts_bins_seen_in_either(impl: ModuleType) -> None:
    assert impl.chi2([5, 0, 5, 0], [5, 0, 0, 5]).dof == 2
    assert impl.chi2([5, 0, 0], [5, 0, 0]) == (0.0, 0, 0.0)


def test_rows_variants_match_the_single_histogram_ones(impl: ModuleType) -> None:
    ref = np.array([[50, 50, 0], [1, 2, 3], [0, 0, 0]])
    cur = np.array([[25, 75, 0], [3, 2, 1], [4, 4, 4]])
    for rows_fn, one_fn in [
        (impl.psi_rows, impl.psi),
        (impl.js_distance_rows, impl.js_distance),
        (impl.ks_distance_rows, impl.ks_distance),
    ]:
        values = rows_fn(ref, cur)
        assert values.dtype == np.float64
        assert values.shape == (3,)
        for i in range(3):
            assert _same(values[i], one_fn(ref[i], cur[i]))
    rows = impl.chi2_rows(ref, cur)
    assert isinstance(rows, sketch_py.Chi2Rows)
    assert rows.dof.dtype == np.int64
    for i in range(3):
        one = impl.chi2(ref[i], cur[i])
        assert _same(rows.statistic[i], one.statistic)
        assert rows.dof[i] == one.dof
        assert _same(rows.effect_size[i], one.effect_size)
    assert impl.psi_rows(np.zeros((0, 4), np.int64), np.zeros((0, 4), np.int64)).shape == (0,)


# -- empty histograms and bad input ---------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "cur"),
    [([3, 4, 5], [0, 0, 0]), ([0, 0, 0], [3, 4, 5]), ([0, 0], [0, 0]), ([], [])],
)
def test_empty_histogram_is_nan_not_zero(impl: ModuleType, ref: list[int], cur: list[int]) -> None:
    """No counts is no evidence: every statistic is NaN (0 would say "no drift")."""
    ref_a, cur_a = np.array(ref, np.int64), np.array(cur, np.int64)
    assert math.isnan(impl.psi(ref_a, cur_a))
    assert math.isnan(impl.js_distance(ref_a, cur_a))
    assert math.isnan(impl.ks_distance(ref_a, cur_a))
    assert math.isnan(impl.score_distance(ref_a, cur_a))
    statistic, dof, w = impl.chi2(ref_a, cur_a)
    assert math.isnan(statistic) and math.isnan(w)
    assert dof == max(np.count_nonzero(ref_a + cur_a) - 1, 0)


def test_ks_empty_ordered_range_is_nan(impl: ModuleType) -> None:
    assert math.isnan(impl.ks_distance([9, 0, 0], [1, 2, 3], ordered=(1, 3)))


def test_mismatched_lengths_name_both(impl: ModuleType) -> None:
    for fn in (impl.psi, impl.js_distance, impl.ks_distance, impl.chi2, impl.score_distance):
        with pytest.raises(ValueError, match="reference has 3 bins but current has 2"):
            fn([1, 2, 3], [1, 2])
    message = r"reference has shape \(2, 3\).*current has shape \(2, 4\)"
    with pytest.raises(ValueError, match=message):
        impl.psi_rows(np.ones((2, 3), np.int64), np.ones((2, 4), np.int64))


def test_bad_input_is_refused(impl: ModuleType) -> None:
    with pytest.raises(ValueError, match=r"counts must be non-negative; reference\[1\] is -2"):
        impl.psi([1, -2, 3], [1, 2, 3])
    with pytest.raises(ValueError, match=r"current\[1, 0\] is -1"):
        impl.chi2_rows([[1, 1], [1, 1]], [[1, 1], [-1, 1]])
    with pytest.raises(TypeError, match="reference counts must be integers that fit int64, got"):
        impl.js_distance([0.5, 0.5], [1, 1])
    with pytest.raises(TypeError, match="got dtype uint64"):
        impl.js_distance(np.ones(2, np.uint64), [1, 1])
    with pytest.raises(ValueError, match=r"reference must be one 1-D histogram, got shape \(2, 2"):
        impl.ks_distance([[1, 1], [1, 1]], [[1, 1], [1, 1]])
    with pytest.raises(ValueError, match=r"current must be 2-D \[features, bins\], got shape \(2,"):
        impl.psi_rows([[1, 1]], [1, 1])
    for eps in (0.0, -1e-4, 1.0, float("nan")):
        with pytest.raises(ValueError, match="epsilon must be in"):
            impl.psi([1, 1], [1, 1], epsilon=eps)
    with pytest.raises(ValueError, match="epsilon must be in"):
        impl.chi2([1, 1], [1, 1], epsilon=2.0)


@pytest.mark.parametrize("ordered", [(0, 5), (3, 3), (2, 1), slice(0, 4, 2), (1,), (-5, None)])
def test_bad_ordered_range_is_refused(impl: ModuleType, ordered: Any) -> None:
    with pytest.raises(ValueError, match="ordered"):
        impl.ks_distance([1, 2, 3, 4], [4, 3, 2, 1], ordered=ordered)


def test_sum_past_int64_is_refused(impl: ModuleType) -> None:
    big = INT64_MAX // 2 + 1
    with pytest.raises(OverflowError, match="current counts sum past the int64 range"):
        impl.psi([1, 1], [big, big])
    with pytest.raises(OverflowError, match="reference counts in row 1 sum past"):
        impl.ks_distance_rows([[1, 1], [big, big]], [[1, 1], [1, 1]])
    # one below the limit is fine, and exact
    assert impl.ks_distance([INT64_MAX - 1, 1], [INT64_MAX - 1, 1]) == 0.0


# -- merging ---------------------------------------------------------------------------------


def test_merge_adds_in_place_exactly(impl: ModuleType) -> None:
    into = np.array([1, 2**60, 0], np.int64)
    assert impl.merge(into, [2, 2**60, 0]) is None
    assert into.tolist() == [3, 2**61, 0]
    impl.merge(into, into)  # aliasing doubles
    assert into.tolist() == [6, 2**62, 0]
    grid = np.zeros((2, 3), np.int64)
    impl.merge(grid, np.arange(6).reshape(2, 3).astype(np.int32))
    assert grid.tolist() == [[0, 1, 2], [3, 4, 5]]


def test_merge_of_overlapping_views_reads_the_old_counts(impl: ModuleType) -> None:
    buf = np.arange(1, 7, dtype=np.int64)
    impl.merge(buf[1:], buf[:-1])
    assert buf.tolist() == [1, 3, 5, 7, 9, 11]


def test_merge_refuses_before_writing(impl: ModuleType) -> None:
    into = np.array([1, 2, 3], np.int64)
    with pytest.raises(ValueError, match=r"counts must be non-negative; other flat\[2\] is -1"):
        impl.merge(into, [5, 5, -1])
    with pytest.raises(OverflowError, match="adding other to into passes the int64 range at flat"):
        impl.merge(into, [5, INT64_MAX - 1, 0])
    with pytest.raises(ValueError, match=r"other has shape \(2,\) but into has shape \(3,\)"):
        impl.merge(into, [1, 1])
    assert into.tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match=r"into counts must be non-negative; into flat\[0\] is -1"):
        impl.merge(np.array([-1, 0]), [0, 0])
    with pytest.raises(TypeError, match="writable C-contiguous int64"):
        impl.merge(np.zeros(3, np.int32), [1, 1, 1])
    frozen = np.zeros(3, np.int64)
    frozen.flags.writeable = False
    with pytest.raises(TypeError, match="writable=False"):
        impl.merge(frozen, [1, 1, 1])
    with pytest.raises(TypeError, match="got list"):
        impl.merge([0, 0], [1, 1])


def test_merge_many(impl: ModuleType) -> None:
    parts: list[Any] = [np.array([[1, 2], [3, 4]]), [[10, 20], [30, 40]], np.ones((2, 2), np.uint8)]
    total = impl.merge_many(parts)
    assert total.dtype == np.int64
    assert total.tolist() == [[12, 23], [34, 45]]
    assert parts[0].tolist() == [[1, 2], [3, 4]]  # inputs untouched
    with pytest.raises(ValueError, match="at least one"):
        impl.merge_many([])
    message = r"counts\[2\] has shape \(3,\) but counts\[0\] has shape \(2,\)"
    with pytest.raises(ValueError, match=message):
        impl.merge_many([[1, 1], [1, 1], [1, 1, 1]])
    with pytest.raises(ValueError, match=r"counts\[1\] counts must be non-negative"):
        impl.merge_many([[1, 1], [1, -1]])
    with pytest.raises(OverflowError, match=r"adding counts\[2\] to the running total"):
        impl.merge_many([[INT64_MAX // 2], [INT64_MAX // 2], [2]])


# -- properties (hypothesis) -------------------------------------------------------------------

COUNT = st.one_of(
    st.just(0),
    st.integers(0, 20),
    st.integers(0, 2**31),
    st.integers(0, 2**53),
    st.integers(0, 2**57),
)


@st.composite
def histogram_pairs(draw: st.DrawFn, rows: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Two count arrays of one shape: random, equal, proportional, or with one all zero."""
    bins = draw(st.integers(0, 40))
    shape = (draw(st.integers(0, 5)), bins) if rows else (bins,)
    ref = draw(hnp.arrays(np.int64, shape, elements=COUNT))
    mode = draw(st.sampled_from(["random", "random", "same", "scaled", "zero", "sparse"]))
    if mode == "same":
        cur = ref.copy()
    elif mode == "scaled":
        ref = ref % 1000
        cur = ref * draw(st.integers(2, 1000))
    elif mode == "zero":
        cur = np.zeros(shape, np.int64)
    else:
        cur = draw(hnp.arrays(np.int64, shape, elements=COUNT))
        if mode == "sparse":
            ref = ref * (ref % 3 == 0)
            cur = cur * (cur % 2 == 0)
    if draw(st.booleans()):
        ref, cur = cur, ref
    return ref, cur


@st.composite
def ordered_ranges(draw: st.DrawFn, bins: int) -> tuple[int, int] | None:
    if bins == 0 or draw(st.booleans()):
        return None
    start = draw(st.integers(0, bins - 1))
    return start, draw(st.integers(start + 1, bins))


EPSILONS = st.sampled_from([1e-4, 1e-6, 0.01, 0.3])


def _same(a: float, b: float) -> bool:
    """Bit-identical, counting every NaN as equal."""
    return (math.isnan(a) and math.isnan(b)) or np.float64(a).tobytes() == np.float64(b).tobytes()


def _assert_parity(twin: Any, kernel: Any, *, uses_log: bool, squared: bool = False) -> None:
    """Equal bit for bit; where NumPy's log is not libm's, within 1e-12 (of the square)."""
    a = np.atleast_1d(np.asarray(twin, dtype=np.float64))
    b = np.atleast_1d(np.asarray(kernel, dtype=np.float64))
    assert a.shape == b.shape
    if LOG_IS_LIBM or not uses_log:
        assert all(_same(x, y) for x, y in zip(a, b, strict=True)), (a, b)
    else:
        if squared:
            a, b = a * a, b * b
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


@given(histogram_pairs(), EPSILONS, st.data())
def test_parity_single(
    pair: tuple[np.ndarray, np.ndarray], eps: float, data: st.DataObject
) -> None:
    ref, cur = pair
    c = _c()
    _assert_parity(sketch_py.psi(ref, cur, eps), c.psi(ref, cur, eps), uses_log=True)
    for name in ("js_distance", "score_distance"):
        twin_fn, kernel_fn = getattr(sketch_py, name), getattr(c, name)
        _assert_parity(twin_fn(ref, cur), kernel_fn(ref, cur), uses_log=True, squared=True)
    ordered = data.draw(ordered_ranges(ref.shape[0]))
    _assert_parity(
        sketch_py.ks_distance(ref, cur, ordered), c.ks_distance(ref, cur, ordered), uses_log=False
    )
    twin, kernel = sketch_py.chi2(ref, cur, eps), c.chi2(ref, cur, eps)
    assert twin.dof == kernel.dof
    _assert_parity(twin.statistic, kernel.statistic, uses_log=False)
    _assert_parity(twin.effect_size, kernel.effect_size, uses_log=False)


@given(histogram_pairs(rows=True), EPSILONS, st.data())
def test_parity_rows(pair: tuple[np.ndarray, np.ndarray], eps: float, data: st.DataObject) -> None:
    ref, cur = pair
    c = _c()
    _assert_parity(sketch_py.psi_rows(ref, cur, eps), c.psi_rows(ref, cur, eps), uses_log=True)
    _assert_parity(
        sketch_py.js_distance_rows(ref, cur),
        c.js_distance_rows(ref, cur),
        uses_log=True,
        squared=True,
    )
    ordered = data.draw(ordered_ranges(ref.shape[1]))
    _assert_parity(
        sketch_py.ks_distance_rows(ref, cur, ordered),
        c.ks_distance_rows(ref, cur, ordered),
        uses_log=False,
    )
    twin, kernel = sketch_py.chi2_rows(ref, cur, eps), c.chi2_rows(ref, cur, eps)
    np.testing.assert_array_equal(twin.dof, kernel.dof)
    _assert_parity(twin.statistic, kernel.statistic, uses_log=False)
    _assert_parity(twin.effect_size, kernel.effect_size, uses_log=False)


HOSTILE = st.one_of(COUNT, st.integers(-3, -1), st.integers(INT64_MAX // 3, INT64_MAX))


def _outcome(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        result = fn(*args)
    except (ValueError, TypeError, OverflowError) as exc:
        return type(exc), str(exc)
    return np.asarray(result, dtype=np.float64).tobytes()


@given(
    hnp.arrays(np.int64, st.tuples(st.integers(1, 3), st.integers(1, 6)), elements=HOSTILE),
    hnp.arrays(np.int64, st.tuples(st.integers(1, 3), st.integers(1, 6)), elements=HOSTILE),
)
def test_parity_on_hostile_counts(ref: np.ndarray, cur: np.ndarray) -> None:
    """Negative counts, sums past int64, shape mismatches: same error or same result."""
    c = _c()
    for name in ("psi_rows", "js_distance_rows", "ks_distance_rows"):
        if LOG_IS_LIBM or name == "ks_distance_rows":
            twin_fn, kernel_fn = getattr(sketch_py, name), getattr(c, name)
            assert _outcome(twin_fn, ref, cur) == _outcome(kernel_fn, ref, cur)
    twin, kernel = _outcome(sketch_py.merge_many, [ref, cur]), _outcome(c.merge_many, [ref, cur])
    assert twin == kernel
    into_twin, into_c = ref.copy(), ref.copy()
    assert _outcome(sketch_py.merge, into_twin, cur) == _outcome(c.merge, into_c, cur)
    np.testing.assert_array_equal(into_twin, into_c)


@given(histogram_pairs(rows=True))
def test_identical_and_proportional_histograms_are_zero(
    pair: tuple[np.ndarray, np.ndarray],
) -> None:
    ref, _ = pair
    ref = ref % 10**6
    for impl in (sketch_py, _c()):
        for cur in (ref, ref * 7):
            nonempty = ref.sum(axis=1) > 0
            for values in (
                impl.psi_rows(ref, cur),
                impl.js_distance_rows(ref, cur),
                impl.ks_distance_rows(ref, cur),
                impl.chi2_rows(ref, cur).statistic,
                impl.chi2_rows(ref, cur).effect_size,
            ):
                assert (values[nonempty] == 0.0).all()
                assert np.isnan(values[~nonempty]).all()


@given(histogram_pairs(rows=True), st.data())
def test_ranges_and_symmetry(pair: tuple[np.ndarray, np.ndarray], data: st.DataObject) -> None:
    ref, cur = pair
    ordered = data.draw(ordered_ranges(ref.shape[1]))
    for impl in (sketch_py, _c()):
        js = impl.js_distance_rows(ref, cur)
        np.testing.assert_array_equal(js, impl.js_distance_rows(cur, ref))  # exactly symmetric
        ks = impl.ks_distance_rows(ref, cur, ordered)
        np.testing.assert_array_equal(ks, impl.ks_distance_rows(cur, ref, ordered))
        psi = impl.psi_rows(ref, cur)
        np.testing.assert_allclose(psi, impl.psi_rows(cur, ref), rtol=1e-12, atol=1e-15)
        chi = impl.chi2_rows(ref, cur)
        for values, high in ((js, 1.0), (ks, 1.0), (psi, np.inf), (chi.statistic, np.inf)):
            finite = values[~np.isnan(values)]
            assert ((finite >= 0.0) & (finite <= high)).all()


@given(histogram_pairs(rows=True), st.integers(0, 5), st.data())
def test_zero_padding_changes_nothing(
    pair: tuple[np.ndarray, np.ndarray], pad: int, data: st.DataObject
) -> None:
    """Bins empty in both histograms are inert, so features of different widths can share rows."""
    ref, cur = pair
    ordered = data.draw(ordered_ranges(ref.shape[1]))
    widen = ((0, 0), (0, pad))
    ref_p, cur_p = np.pad(ref, widen), np.pad(cur, widen)
    ordered_p = ordered
    if ordered is not None and ordered[1] == ref.shape[1]:  # ran to the end: still does
        ordered_p = (ordered[0], ref_p.shape[1])
    for impl in (sketch_py, _c()):
        for fn in (impl.psi_rows, impl.js_distance_rows):
            np.testing.assert_array_equal(fn(ref, cur), fn(ref_p, cur_p))
        if ref.shape[1]:
            np.testing.assert_array_equal(
                impl.ks_distance_rows(ref, cur, ordered),
                impl.ks_distance_rows(ref_p, cur_p, ordered_p),
            )
        a, b = impl.chi2_rows(ref, cur), impl.chi2_rows(ref_p, cur_p)
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)


SMALL = hnp.arrays(np.int64, (2, 7), elements=st.integers(0, 2**60))


@given(SMALL, SMALL, SMALL)
def test_merge_is_associative_and_commutative(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> None:
    for impl in (sketch_py, _c()):
        left = a.copy()
        impl.merge(left, b)
        impl.merge(left, c)
        right = c.copy()
        bc = b.copy()
        impl.merge(bc, a)
        impl.merge(right, bc)
        np.testing.assert_array_equal(left, right)
        np.testing.assert_array_equal(impl.merge_many([a, b, c]), impl.merge_many([c, a, b]))
        np.testing.assert_array_equal(impl.merge_many([a, b, c]), left)


def test_merged_windows_give_the_statistics_of_the_whole() -> None:
    rng = np.random.default_rng(3)
    ref = rng.integers(0, 1000, 12)
    windows = [rng.integers(0, 50, 12) for _ in range(5)]
    whole = np.sum(windows, axis=0)
    for impl in (sketch_py, _c()):
        merged = impl.merge_many(windows)
        np.testing.assert_array_equal(merged, whole)
        assert impl.psi(ref, merged) == impl.psi(ref, whole)
