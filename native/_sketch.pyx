# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Cython kernel for drift sketches; ``native.sketch_py`` is its twin and specification.

Histograms are validated for dtype and shape in Python (the twin's helpers, so both
raise the same errors); signs and int64 sums are checked in the same ``nogil`` pass
that totals the rows, and only when that pass finds a problem does the twin's check
run to name it. Every per-bin term uses the twin's IEEE operations in the twin's
order and every sum runs left to right, so results are bit-identical to the twin's
wherever NumPy's float64 ``log`` is the C library's. Floating-point contraction
(fused multiply-add) is switched off below for that reason.
"""

from libc.math cimport NAN, fabs, log, sqrt
from libc.stdint cimport int64_t, uint64_t

import numpy as np

cimport numpy as cnp

from .sketch_py import (
    COUNT_DTYPE,
    DEFAULT_EPSILON,
    _TWO_LN2,
    Chi2Result,
    Chi2Rows,
    _as_counts,
    _as_target,
    _check_counts,
    _check_epsilon,
    _check_same_shape,
    _merge_checks,
    _merge_many_inputs,
    _ordered_range,
    _pair,
)

cnp.import_array()

cdef extern from *:
    """
    #if defined(__clang__)
    #pragma STDC FP_CONTRACT OFF
    #elif defined(__GNUC__)
    #pragma GCC optimize ("fp-contract=off")
    #endif
    """

# Bin counts are int64 on both sides: ``count_t`` here, ``COUNT_DTYPE`` in NumPy.
ctypedef int64_t count_t

cdef double TWO_LN2 = _TWO_LN2


# -- row kernels (no GIL) -------------------------------------------------------------
# Each ``_X_one`` totals one row pair (refusing negative counts and int64 overflow)
# and computes statistic X from it; the status tells the caller which array to
# hand to the twin's checks for the error message.

cdef enum Status:
    OK = 0
    BAD_REFERENCE = 1
    BAD_CURRENT = 2


cdef bint _total(const count_t* a, Py_ssize_t n, count_t* total) noexcept nogil:
    """Sum of ``a[:n]`` into ``total``; False on a negative count or a sum past int64."""
    cdef uint64_t acc = 0, x, bits = 0
    cdef Py_ssize_t j
    for j in range(n):
        # a negative count has the top bit set; so does the running sum (of counts
        # below 2**63) at its first step past int64, before it could wrap back
        x = <uint64_t>a[j]
        acc += x
        bits |= x | acc
    total[0] = <count_t>acc
    return bits >> 63 == 0


cdef Status _totals(
    const count_t* r, const count_t* c, Py_ssize_t n, count_t* nr, count_t* nc
) noexcept nogil:
    if not _total(r, n, nr):
        return BAD_REFERENCE
    if not _total(c, n, nc):
        return BAD_CURRENT
    return OK


cdef Status _psi_one(
    const count_t* r, const count_t* c, Py_ssize_t n, double eps, double* out
) noexcept nogil:
    cdef count_t nr, nc
    cdef Status status = _totals(r, c, n, &nr, &nc)
    cdef double acc = 0.0, p, q, t
    cdef Py_ssize_t j
    if status != OK:
        return status
    if nr == 0 or nc == 0:
        out[0] = NAN
        return OK
    for j in range(n):
        p = <double>r[j] / <double>nr
        q = <double>c[j] / <double>nc
        if p < eps:
            p = eps
        if q < eps:
            q = eps
        t = (q - p) * log(q / p)
        acc = t if j == 0 else acc + t
    out[0] = acc
    return OK


cdef Status _js_one(const count_t* r, const count_t* c, Py_ssize_t n, double* out) noexcept nogil:
    cdef count_t nr, nc
    cdef Status status = _totals(r, c, n, &nr, &nc)
    cdef double acc = 0.0, p, q, m, a, b, t
    cdef Py_ssize_t j
    if status != OK:
        return status
    if nr == 0 or nc == 0:
        out[0] = NAN
        return OK
    for j in range(n):
        p = <double>r[j] / <double>nr
        q = <double>c[j] / <double>nc
        m = (p + q) * 0.5
        a = p * log(p / m) if p > 0 else 0.0
        b = q * log(q / m) if q > 0 else 0.0
        t = a + b
        acc = t if j == 0 else acc + t
    acc = acc / TWO_LN2
    if acc < 0.0:
        acc = 0.0
    elif acc > 1.0:
        acc = 1.0
    out[0] = sqrt(acc)
    return OK


cdef Status _ks_one(
    const count_t* r, const count_t* c, Py_ssize_t n, Py_ssize_t start, Py_ssize_t stop,
    double* out,
) noexcept nogil:
    cdef count_t nr, nc, ar = 0, ac = 0
    cdef Status status = _totals(r, c, n, &nr, &nc)
    cdef double gap = 0.0, d
    cdef Py_ssize_t j
    if status != OK:
        return status
    nr = 0
    nc = 0
    for j in range(start, stop):  # no overflow: a part of a checked total
        nr += r[j]
        nc += c[j]
    if nr == 0 or nc == 0:
        out[0] = NAN
        return OK
    for j in range(start, stop):
        ar += r[j]
        ac += c[j]
        d = fabs(<double>ar / <double>nr - <double>ac / <double>nc)
        if d > gap:
            gap = d
    out[0] = gap
    return OK


cdef Status _chi2_one(
    const count_t* r, const count_t* c, Py_ssize_t n, double eps,
    double* statistic, int64_t* dof, double* effect,
) noexcept nogil:
    cdef count_t nr, nc
    cdef Status status = _totals(r, c, n, &nr, &nc)
    cdef double acc = 0.0, p, q, d, t
    cdef Py_ssize_t j
    cdef int64_t support = 0
    if status != OK:
        return status
    for j in range(n):
        if r[j] > 0 or c[j] > 0:
            support += 1
    dof[0] = support - 1 if support > 1 else 0
    if nr == 0 or nc == 0:
        statistic[0] = NAN
        effect[0] = NAN
        return OK
    for j in range(n):
        p = <double>r[j] / <double>nr
        q = <double>c[j] / <double>nc
        if p < eps:
            p = eps
        if q < eps:
            q = eps
        d = q - p
        t = d * d / p
        acc = t if j == 0 else acc + t
    statistic[0] = <double>nc * acc
    effect[0] = sqrt(acc)
    return OK


# -- merging --------------------------------------------------------------------------

cdef bint _add_checked(
    count_t[::1] target,  # OUT (and IN)
    const count_t[::1] addend,  # IN
):
    """``target += addend`` unless a count is negative or a sum passes int64 (then False)."""
    cdef Py_ssize_t i, n = target.shape[0]
    cdef uint64_t t, a, bits = 0
    with nogil:
        # Branch-free (so it vectorises): with both counts non-negative their sum
        # passes int64 exactly when its top bit is set, and a negative count has it set.
        for i in range(n):
            t = <uint64_t>target[i]
            a = <uint64_t>addend[i]
            bits |= t | a | (t + a)
        if bits >> 63 == 0:
            for i in range(n):
                target[i] += addend[i]
    return bits >> 63 == 0


def merge(into, other):
    """Add ``other``'s counts into ``into`` in place (windows and replicas add exactly).

    ``into`` must be a writable C-contiguous int64 array (TypeError otherwise);
    ``other`` any integer array of the same shape (ValueError naming both shapes).
    Negative counts (ValueError) and sums past int64 (OverflowError) are refused
    before anything is written.
    """
    target = _as_target(into)
    addend = _as_counts("other", other, None)
    _check_same_shape(target, addend, "into", "other")
    if np.may_share_memory(target, addend):  # a shifted view would read updated counts
        addend = addend.copy()
    if not _add_checked(target.reshape(-1), addend.reshape(-1)):
        _merge_checks(target, addend, "into", "other")
        raise AssertionError("sketch kernel and twin disagree about the counts")  # pragma: no cover


def merge_many(counts):
    """A new int64 array holding the exact sum of ``counts`` (at least one, one shape).

    Errors as for ``merge``, naming ``counts[i]``.
    """
    arrays = _merge_many_inputs(counts)
    total = np.zeros(arrays[0].shape, dtype=COUNT_DTYPE)
    flat = total.reshape(-1)
    for i, arr in enumerate(arrays):
        if not _add_checked(flat, arr.reshape(-1)):
            _merge_checks(total, arr, "the running total", f"counts[{i}]")
            raise AssertionError("sketch kernel and twin disagree")  # pragma: no cover
    return total


# -- statistics: Python entry points --------------------------------------------------

cdef void _raise_for(Status status, object ref, object cur) except *:
    """Let the twin's checks name what the kernel refused (same message both ways)."""
    if status == OK:
        return
    _check_counts("reference", ref)  # raises for any bad reference row
    _check_counts("current", cur)
    raise AssertionError("sketch kernel and twin disagree about the counts")  # pragma: no cover


cdef inline const count_t* _row(const count_t[::1] a) noexcept nogil:
    return &a[0] if a.shape[0] > 0 else NULL


def psi(reference, current, epsilon=DEFAULT_EPSILON):
    """Population Stability Index of one histogram pair (NaN if either is empty).

    Proportions are floored at ``epsilon`` (see ``native.sketch_py``). ValueError
    names both lengths when they differ.
    """
    ref, cur = _pair(reference, current, 1)
    cdef double eps = _check_epsilon(epsilon)
    cdef const count_t[::1] r = ref  # IN
    cdef const count_t[::1] c = cur  # IN
    cdef double value
    cdef Status status
    with nogil:
        status = _psi_one(_row(r), _row(c), r.shape[0], eps, &value)
    _raise_for(status, ref, cur)
    return value


def psi_rows(reference, current, epsilon=DEFAULT_EPSILON):
    """``psi`` of every row of two ``[features, bins]`` count arrays."""
    ref, cur = _pair(reference, current, 2)
    cdef double eps = _check_epsilon(epsilon)
    out = np.empty(ref.shape[0], dtype=np.float64)
    cdef const count_t[:, ::1] r = ref  # IN
    cdef const count_t[:, ::1] c = cur  # IN
    cdef double[::1] o = out  # OUT
    cdef Status status = OK
    cdef Py_ssize_t i
    with nogil:
        for i in range(r.shape[0]):
            status = _psi_one(&r[i, 0], &c[i, 0], r.shape[1], eps, &o[i])
            if status != OK:
                break
    _raise_for(status, ref, cur)
    return out


def js_distance(reference, current):
    """Jensen-Shannon distance (base 2, in [0, 1]) of one histogram pair; NaN if empty."""
    ref, cur = _pair(reference, current, 1)
    cdef const count_t[::1] r = ref  # IN
    cdef const count_t[::1] c = cur  # IN
    cdef double value
    cdef Status status
    with nogil:
        status = _js_one(_row(r), _row(c), r.shape[0], &value)
    _raise_for(status, ref, cur)
    return value


def js_distance_rows(reference, current):
    """``js_distance`` of every row of two ``[features, bins]`` count arrays."""
    ref, cur = _pair(reference, current, 2)
    out = np.empty(ref.shape[0], dtype=np.float64)
    cdef const count_t[:, ::1] r = ref  # IN
    cdef const count_t[:, ::1] c = cur  # IN
    cdef double[::1] o = out  # OUT
    cdef Status status = OK
    cdef Py_ssize_t i
    with nogil:
        for i in range(r.shape[0]):
            status = _js_one(&r[i, 0], &c[i, 0], r.shape[1], &o[i])
            if status != OK:
                break
    _raise_for(status, ref, cur)
    return out


def ks_distance(reference, current, ordered=None):
    """KS distance of the binned CDFs over the ``ordered`` bins (default all); in [0, 1].

    ``ordered`` is a slice or ``(start, stop)``: the contiguous bins that lie on the
    feature's axis (leave missing/out-of-vocabulary bins out). NaN when either
    histogram holds no counts in that range.
    """
    ref, cur = _pair(reference, current, 1)
    cdef const count_t[::1] r = ref  # IN
    cdef const count_t[::1] c = cur  # IN
    cdef Py_ssize_t start, stop
    cdef count_t nr, nc
    cdef double value = NAN
    cdef Status status
    with nogil:
        status = _totals(_row(r), _row(c), r.shape[0], &nr, &nc)
    _raise_for(status, ref, cur)
    start, stop = _ordered_range(ordered, r.shape[0])
    if start < stop:
        with nogil:
            _ks_one(_row(r), _row(c), r.shape[0], start, stop, &value)
    return value


def ks_distance_rows(reference, current, ordered=None):
    """``ks_distance`` of every row of two ``[features, bins]`` count arrays."""
    ref, cur = _pair(reference, current, 2)
    out = np.empty(ref.shape[0], dtype=np.float64)
    cdef const count_t[:, ::1] r = ref  # IN
    cdef const count_t[:, ::1] c = cur  # IN
    cdef double[::1] o = out  # OUT
    cdef Status status = OK
    cdef Py_ssize_t i, start, stop
    cdef count_t nr, nc
    with nogil:
        for i in range(r.shape[0]):
            status = _totals(&r[i, 0], &c[i, 0], r.shape[1], &nr, &nc)
            if status != OK:
                break
    _raise_for(status, ref, cur)
    start, stop = _ordered_range(ordered, r.shape[1])
    with nogil:
        for i in range(r.shape[0]):
            if start < stop:
                _ks_one(&r[i, 0], &c[i, 0], r.shape[1], start, stop, &o[i])
            else:  # no bins at all (ordered=None): nothing to compare
                o[i] = NAN
    return out


def chi2(reference, current, epsilon=DEFAULT_EPSILON):
    """χ² of the current counts against the reference proportions, dof and Cohen's w.

    Statistic and effect size are NaN when either histogram is empty.
    """
    ref, cur = _pair(reference, current, 1)
    cdef double eps = _check_epsilon(epsilon)
    cdef const count_t[::1] r = ref  # IN
    cdef const count_t[::1] c = cur  # IN
    cdef double statistic, effect
    cdef int64_t dof
    cdef Status status
    with nogil:
        status = _chi2_one(_row(r), _row(c), r.shape[0], eps, &statistic, &dof, &effect)
    _raise_for(status, ref, cur)
    return Chi2Result(statistic, dof, effect)


def chi2_rows(reference, current, epsilon=DEFAULT_EPSILON):
    """``chi2`` of every row of two ``[features, bins]`` count arrays."""
    ref, cur = _pair(reference, current, 2)
    cdef double eps = _check_epsilon(epsilon)
    rows = ref.shape[0]
    statistic = np.empty(rows, dtype=np.float64)
    dof = np.empty(rows, dtype=COUNT_DTYPE)
    effect = np.empty(rows, dtype=np.float64)
    cdef const count_t[:, ::1] r = ref  # IN
    cdef const count_t[:, ::1] c = cur  # IN
    cdef double[::1] st = statistic  # OUT
    cdef int64_t[::1] df = dof  # OUT
    cdef double[::1] ef = effect  # OUT
    cdef Status status = OK
    cdef Py_ssize_t i
    with nogil:
        for i in range(r.shape[0]):
            status = _chi2_one(&r[i, 0], &c[i, 0], r.shape[1], eps, &st[i], &df[i], &ef[i])
            if status != OK:
                break
    _raise_for(status, ref, cur)
    return Chi2Rows(statistic=statistic, dof=dof, effect_size=effect)


def score_distance(reference, current):
    """Score drift: the Jensen-Shannon distance of two score histograms."""
    return js_distance(reference, current)
