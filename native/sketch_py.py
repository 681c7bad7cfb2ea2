"""Pure-NumPy twin of ``native._sketch``: drift statistics from histogram counts.

A *histogram* is one feature's int64 bin counts, in a bin layout decided by the
feature spec (special bins such as missing or out-of-vocabulary included); the
functions here only need two histograms of the same length, a *reference* (from
training) and a *current* window. Counts are exact and mergeable: windows and
replicas add (``merge``, ``merge_many``). From counts we compute effect sizes, never
p-values (DESIGN.md, "Drift and retraining"):

``psi``
    Population Stability Index, ``sum((q~ - r~) * ln(q~ / r~))`` over all bins, where
    ``r~``/``q~`` are the reference/current proportions floored at ``epsilon``
    (default ``DEFAULT_EPSILON = 1e-4``), i.e. ``max(p, epsilon)``. This is the usual
    credit-scoring remedy for empty bins (substitute a small proportion such as
    0.0001 so the log ratio stays finite), applied as a floor rather than only at
    zero so the statistic is continuous in the counts; the floored proportions are
    *not* renormalised, so identical histograms give exactly 0 and every bin's term
    is at most ``(1 - epsilon) * ln(1 / epsilon)`` (about 9.2 at the default).
``js_distance``
    Jensen-Shannon distance: the square root of the JS divergence in base 2, so it
    lies in [0, 1] and needs no epsilon (``0 * ln 0 = 0``). Symmetric.
``ks_distance``
    Kolmogorov-Smirnov distance on the binned CDF: ``max_k |R(k) - Q(k)|`` where
    ``R``/``Q`` are cumulative proportions over the *ordered* bins only (``ordered``,
    default all bins), each normalised by its own total in that range. Special
    bins (missing, empty string, out-of-vocabulary) have no place on an axis and
    belong outside the range; their drift shows in PSI and χ². In [0, 1].
``chi2``
    Pearson's χ² of the current window against the reference proportions, in
    proportion form ``N_current * sum((q~ - r~)**2 / r~)`` with the same epsilon
    floor as PSI (so a category unseen in training does not divide by zero and
    identical histograms give exactly 0), its degrees of freedom (bins non-empty
    in either histogram, minus one, at least 0), and Cohen's ``w =
    sqrt(chi2 / N_current)`` as the effect size (0.1 small, 0.3 medium, 0.5 large;
    it does not grow with the window size, unlike χ² itself). Cohen's w rather
    than Cramér's V: V is defined for contingency tables, and this is a
    goodness-of-fit statistic against the training proportions.
``score_distance``
    The score-histogram distance: Jensen-Shannon distance of the model's score
    histograms, chosen because it is bounded, symmetric and finite on empty bins,
    so one threshold serves every model.

Empty histograms: when the reference or the current histogram (for KS: its
ordered range) holds no counts, every statistic is NaN -- no evidence, which is
not the same as no drift (0); the drift policy's minimum row count decides what a
window must hold. χ²'s degrees of freedom are still reported. Bins empty in both
histograms change no statistic (nor χ²'s degrees of freedom), so histograms of
different widths may be zero-padded to one width for the ``*_rows`` variants, which
take ``[features, bins]`` and return one value per row.

Every sum runs left to right over the bins (``np.cumsum`` here, a plain loop in C)
and each per-bin term is computed with the same IEEE operations in the same order,
so the Cython kernel returns bit-identical results wherever NumPy's float64 ``log``
agrees with the C library's (the test suite checks which holds). This module is the
specification the Cython kernel is tested against; ``native.sketch`` picks one.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

COUNT_DTYPE = np.dtype(np.int64)  # mirrors ``count_t`` in _sketch.pyx
DEFAULT_EPSILON = 1e-4
_INT64_MAX = int(np.iinfo(np.int64).max)
# Base-2 JS divergence is the natural-log sum over 2 ln 2; both kernels use this double.
_TWO_LN2 = 2.0 * math.log(2.0)

Ordered = slice | tuple[int | None, int | None] | None


class Chi2Result(NamedTuple):
    """χ² of one current histogram against its reference (see the module docstring)."""

    statistic: float
    dof: int
    effect_size: float  # Cohen's w = sqrt(statistic / N_current)


class Chi2Rows(NamedTuple):
    """``Chi2Result`` for every row of a ``[features, bins]`` pair, as arrays."""

    statistic: npt.NDArray[np.float64]
    dof: npt.NDArray[np.int64]
    effect_size: npt.NDArray[np.float64]


# -- validation, shared with the Cython kernel so both raise the same errors ---------


def _as_counts(name: str, counts: npt.ArrayLike, ndim: int | None) -> npt.NDArray[np.int64]:
    """``counts`` as a C-contiguous int64 array (no copy when it already is one).

    TypeError for a non-integer dtype (or one int64 cannot hold, such as uint64);
    ValueError for the wrong rank. Signs and sums are checked by the kernels.
    """
    if (
        type(counts) is np.ndarray
        and counts.dtype == COUNT_DTYPE
        and counts.flags.c_contiguous
        and (ndim is None or counts.ndim == ndim)
    ):
        return counts
    arr = np.asarray(counts)
    if arr.dtype.kind not in "iu" or not np.can_cast(arr.dtype, COUNT_DTYPE):
        raise TypeError(f"{name} counts must be integers that fit int64, got dtype {arr.dtype}")
    if ndim == 1 and arr.ndim != 1:
        raise ValueError(f"{name} must be one 1-D histogram, got shape {arr.shape}")
    if ndim == 2 and arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D [features, bins], got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=COUNT_DTYPE)


def _pair(
    reference: npt.ArrayLike, current: npt.ArrayLike, ndim: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Both histograms as ``ndim``-D int64 arrays of one shape."""
    ref = _as_counts("reference", reference, ndim)
    cur = _as_counts("current", current, ndim)
    if ref.shape != cur.shape:
        if ndim == 1:
            raise ValueError(f"reference has {ref.shape[0]} bins but current has {cur.shape[0]}")
        raise ValueError(
            f"reference has shape {ref.shape} [features, bins] but current has shape {cur.shape}"
        )
    return ref, cur


def _as_rows(counts: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """A 1-D histogram as one row; a 2-D array as it is."""
    return counts.reshape(1, -1) if counts.ndim == 1 else counts


def _check_counts(name: str, counts: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Refuse negative counts and histograms whose total passes int64; return row totals.

    ``counts`` is one histogram or ``[rows, bins]``. Negative counts are looked for
    first (over the whole array), then overflowing sums; the first offender is named.
    """
    negative = counts < 0
    if negative.any():
        index = np.unravel_index(int(np.argmax(negative)), counts.shape)
        where = ", ".join(str(int(i)) for i in index)
        raise ValueError(
            f"{name} counts must be non-negative; {name}[{where}] is {int(counts[index])}"
        )
    rows = _as_rows(counts)
    if rows.shape[1] == 0:
        return np.zeros(rows.shape[0], dtype=COUNT_DTYPE)
    # With no negative addend a wrapped int64 running sum turns negative at the
    # first step past the range, before it could wrap back.
    running = np.cumsum(rows, axis=1)
    wrapped = (running < 0).any(axis=1)
    if wrapped.any():
        row = "" if counts.ndim == 1 else f" in row {int(np.argmax(wrapped))}"
        raise OverflowError(f"{name} counts{row} sum past the int64 range")
    return running[:, -1]


def _check_epsilon(epsilon: float) -> float:
    eps = float(epsilon)
    if not 0.0 < eps < 1.0:
        raise ValueError(f"epsilon must be in (0, 1), got {epsilon!r}")
    return eps


def _ordered_range(ordered: Ordered, bins: int) -> tuple[int, int]:
    """``ordered`` as ``(start, stop)`` within ``bins``; None means every bin.

    A slice or a ``(start, stop)`` pair, Python-style (negative indices count from
    the end, None is open) but never clamped: a range outside the histogram or an
    empty one is a ValueError, since it can only be a layout mistake.
    """
    if ordered is None:
        return 0, bins
    raw: tuple[Any, ...]
    if isinstance(ordered, slice):
        if ordered.step not in (None, 1):
            raise ValueError(f"ordered must be a contiguous range, got step {ordered.step}")
        raw = (ordered.start, ordered.stop)
    else:
        raw = tuple(ordered)
        if len(raw) != 2:
            raise ValueError(f"ordered must be a slice or a (start, stop) pair, got {ordered!r}")
    start = 0 if raw[0] is None else operator.index(raw[0])
    stop = bins if raw[1] is None else operator.index(raw[1])
    start = start + bins if start < 0 else start
    stop = stop + bins if stop < 0 else stop
    if not 0 <= start < stop <= bins:
        raise ValueError(
            f"ordered range {raw[0]}:{raw[1]} is empty or outside the {bins} bins"
        )
    return start, stop


def _merge_checks(
    target: npt.NDArray[np.int64],
    addend: npt.NDArray[np.int64],
    target_name: str,
    addend_name: str,
) -> None:
    """Refuse negative counts in either array and any sum past int64 (flat indices)."""
    for name, arr in ((target_name, target), (addend_name, addend)):
        flat = arr.reshape(-1)
        negative = flat < 0
        if negative.any():
            i = int(np.argmax(negative))
            raise ValueError(f"{name} counts must be non-negative; {name} flat[{i}] is {flat[i]}")
    over = addend.reshape(-1) > _INT64_MAX - target.reshape(-1)
    if over.any():
        raise OverflowError(
            f"adding {addend_name} to {target_name} passes the int64 range at flat "
            f"index {int(np.argmax(over))}"
        )


def _as_target(into: object) -> npt.NDArray[np.int64]:
    if not isinstance(into, np.ndarray):
        raise TypeError(f"merge needs an int64 NumPy array to add into, got {type(into).__name__}")
    if into.dtype != COUNT_DTYPE or not into.flags.c_contiguous or not into.flags.writeable:
        raise TypeError(
            f"merge adds in place into a writable C-contiguous int64 array, got dtype "
            f"{into.dtype} (contiguous={into.flags.c_contiguous}, "
            f"writable={into.flags.writeable})"
        )
    return into


def _check_same_shape(
    target: npt.NDArray[np.int64], addend: npt.NDArray[np.int64], target_name: str, addend_name: str
) -> None:
    if addend.shape != target.shape:
        raise ValueError(
            f"{addend_name} has shape {addend.shape} but {target_name} has shape {target.shape}"
        )


def _merge_many_inputs(counts: Sequence[npt.ArrayLike]) -> list[npt.NDArray[np.int64]]:
    arrays = [_as_counts(f"counts[{i}]", c, None) for i, c in enumerate(counts)]
    if not arrays:
        raise ValueError("merge_many needs at least one count array")
    for i, arr in enumerate(arrays[1:], 1):
        _check_same_shape(arrays[0], arr, "counts[0]", f"counts[{i}]")
    return arrays


# -- merging --------------------------------------------------------------------------


def merge(into: npt.NDArray[np.int64], other: npt.ArrayLike) -> None:
    """Add ``other``'s counts into ``into`` in place (windows and replicas add exactly).

    ``into`` must be a writable C-contiguous int64 array (TypeError otherwise);
    ``other`` any integer array of the same shape (ValueError naming both shapes).
    Negative counts (ValueError) and sums past int64 (OverflowError) are refused
    before anything is written.
    """
    target = _as_target(into)
    addend = _as_counts("other", other, None)
    _check_same_shape(target, addend, "into", "other")
    _merge_checks(target, addend, "into", "other")
    np.add(target, addend, out=target)


def merge_many(counts: Sequence[npt.ArrayLike]) -> npt.NDArray[np.int64]:
    """A new int64 array holding the exact sum of ``counts`` (at least one, one shape).

    Errors as for ``merge``, naming ``counts[i]``.
    """
    arrays = _merge_many_inputs(counts)
    total = np.zeros(arrays[0].shape, dtype=COUNT_DTYPE)
    for i, arr in enumerate(arrays):
        _merge_checks(total, arr, "the running total", f"counts[{i}]")
        np.add(total, arr, out=total)
    return total


# -- statistics -----------------------------------------------------------------------


def _proportions(
    ref: npt.NDArray[np.int64], cur: npt.NDArray[np.int64]
) -> tuple[
    npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.bool_], npt.NDArray[np.int64]
]:
    """Proportions per row (NaN rows where a total is 0), the valid mask, current totals."""
    ref_total = _check_counts("reference", ref)
    cur_total = _check_counts("current", cur)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = _as_rows(ref) / ref_total[:, None]
        q = _as_rows(cur) / cur_total[:, None]
    return p, q, (ref_total > 0) & (cur_total > 0), cur_total


def _left_to_right_sum(terms: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Row sums in strict left-to-right order (what the C loop does), not pairwise."""
    if terms.shape[1] == 0:
        return np.zeros(terms.shape[0])
    return np.cumsum(terms, axis=1)[:, -1]


def _psi(
    ref: npt.NDArray[np.int64], cur: npt.NDArray[np.int64], eps: float
) -> npt.NDArray[np.float64]:
    p, q, valid, _ = _proportions(ref, cur)
    with np.errstate(invalid="ignore"):
        pf = np.maximum(p, eps)
        qf = np.maximum(q, eps)
        total = _left_to_right_sum((qf - pf) * np.log(qf / pf))
    return np.where(valid, total, np.nan)


def _js_distance(ref: npt.NDArray[np.int64], cur: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    p, q, valid, _ = _proportions(ref, cur)
    with np.errstate(divide="ignore", invalid="ignore"):
        m = (p + q) * 0.5
        a = np.where(p > 0, p * np.log(p / m), 0.0)
        b = np.where(q > 0, q * np.log(q / m), 0.0)
        divergence = _left_to_right_sum(a + b) / _TWO_LN2
        distance = np.sqrt(np.clip(divergence, 0.0, 1.0))
    return np.where(valid, distance, np.nan)


def _ks_distance(
    ref: npt.NDArray[np.int64], cur: npt.NDArray[np.int64], ordered: Ordered
) -> npt.NDArray[np.float64]:
    _check_counts("reference", ref)
    _check_counts("current", cur)
    ref, cur = _as_rows(ref), _as_rows(cur)
    start, stop = _ordered_range(ordered, ref.shape[1])
    if stop == start:  # no bins at all (ordered=None): nothing to compare
        return np.full(ref.shape[0], np.nan)
    ref_cdf = np.cumsum(ref[:, start:stop], axis=1)
    cur_cdf = np.cumsum(cur[:, start:stop], axis=1)
    ref_total = ref_cdf[:, -1:]
    cur_total = cur_cdf[:, -1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        gap = np.abs(ref_cdf / ref_total - cur_cdf / cur_total).max(axis=1)
    return np.where((ref_total[:, 0] > 0) & (cur_total[:, 0] > 0), gap, np.nan)


def _chi2(ref: npt.NDArray[np.int64], cur: npt.NDArray[np.int64], eps: float) -> Chi2Rows:
    p, q, valid, cur_total = _proportions(ref, cur)
    with np.errstate(invalid="ignore"):
        pf = np.maximum(p, eps)
        d = np.maximum(q, eps) - pf
        total = _left_to_right_sum(d * d / pf)
        statistic = cur_total.astype(np.float64) * total
        effect = np.sqrt(total)
    seen = (_as_rows(ref) > 0) | (_as_rows(cur) > 0)
    support = np.count_nonzero(seen, axis=1).astype(COUNT_DTYPE)
    return Chi2Rows(
        statistic=np.where(valid, statistic, np.nan),
        dof=np.maximum(support - 1, 0),
        effect_size=np.where(valid, effect, np.nan),
    )


def psi(
    reference: npt.ArrayLike, current: npt.ArrayLike, epsilon: float = DEFAULT_EPSILON
) -> float:
    """Population Stability Index of one histogram pair (NaN if either is empty).

    Proportions are floored at ``epsilon`` (see the module docstring). ValueError
    names both lengths when they differ.
    """
    ref, cur = _pair(reference, current, 1)
    return float(_psi(ref, cur, _check_epsilon(epsilon))[0])


def psi_rows(
    reference: npt.ArrayLike, current: npt.ArrayLike, epsilon: float = DEFAULT_EPSILON
) -> npt.NDArray[np.float64]:
    """``psi`` of every row of two ``[features, bins]`` count arrays."""
    ref, cur = _pair(reference, current, 2)
    return _psi(ref, cur, _check_epsilon(epsilon))


def js_distance(reference: npt.ArrayLike, current: npt.ArrayLike) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) of one histogram pair; NaN if empty."""
    ref, cur = _pair(reference, current, 1)
    return float(_js_distance(ref, cur)[0])


def js_distance_rows(
    reference: npt.ArrayLike, current: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """``js_distance`` of every row of two ``[features, bins]`` count arrays."""
    ref, cur = _pair(reference, current, 2)
    return _js_distance(ref, cur)


def ks_distance(
    reference: npt.ArrayLike, current: npt.ArrayLike, ordered: Ordered = None
) -> float:
    """KS distance of the binned CDFs over the ``ordered`` bins (default all); in [0, 1].

    ``ordered`` is a slice or ``(start, stop)``: the contiguous bins that lie on the
    feature's axis (leave missing/out-of-vocabulary bins out). NaN when either
    histogram holds no counts in that range.
    """
    ref, cur = _pair(reference, current, 1)
    return float(_ks_distance(ref, cur, ordered)[0])


def ks_distance_rows(
    reference: npt.ArrayLike, current: npt.ArrayLike, ordered: Ordered = None
) -> npt.NDArray[np.float64]:
    """``ks_distance`` of every row of two ``[features, bins]`` count arrays."""
    ref, cur = _pair(reference, current, 2)
    return _ks_distance(ref, cur, ordered)


def chi2(
    reference: npt.ArrayLike, current: npt.ArrayLike, epsilon: float = DEFAULT_EPSILON
) -> Chi2Result:
    """χ² of the current counts against the reference proportions, dof and Cohen's w.

    Statistic and effect size are NaN when either histogram is empty.
    """
    ref, cur = _pair(reference, current, 1)
    rows = _chi2(ref, cur, _check_epsilon(epsilon))
    return Chi2Result(float(rows.statistic[0]), int(rows.dof[0]), float(rows.effect_size[0]))


def chi2_rows(
    reference: npt.ArrayLike, current: npt.ArrayLike, epsilon: float = DEFAULT_EPSILON
) -> Chi2Rows:
    """``chi2`` of every row of two ``[features, bins]`` count arrays."""
    ref, cur = _pair(reference, current, 2)
    return _chi2(ref, cur, _check_epsilon(epsilon))


def score_distance(reference: npt.ArrayLike, current: npt.ArrayLike) -> float:
    """Score drift: the Jensen-Shannon distance of two score histograms (see above)."""
    return js_distance(reference, current)
