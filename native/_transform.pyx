# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""Cython kernel for the feature transform; ``native.transform_py`` is its twin and
specification, ``native.transform_plan`` the layout both walk.

One call of ``transform`` / ``count``:

1. (GIL) The plan's compiled state: the previous call's, else from a per-plan cache,
   else built once. It holds private copies of the plan's arrays, checked against
   every index the kernel follows; a plan the kernel cannot prove safe (only a
   hand-built one: ``compile_plan`` never makes one) goes to the twin whole, so it
   behaves exactly as the specification does.
2. (GIL) Each column is looked up and type-checked in the twin's order, with no
   Python object per element: numeric columns are read through their data pointer
   and stride, BYTES columns straight from their buffer (held for the call).
3. (no GIL) The length prefixes of the BYTES columns are walked; the first fault is
   recorded, then raised as the twin's exception with the twin's arguments.
4. (GIL) ``counts`` and ``out`` are checked or allocated, as the twin does.
5. (no GIL) One pass over the rows in blocks of the matrix that fit the L1 cache
   (a multiple of 8 rows): each block is zeroed, then every column writes its
   values and adds its rows to the sketch counts. Numeric columns go one op at a
   time over the block and count the profile's edges sixteen float32 values at a
   time (against the edges rounded up to float32, which gives the same answers); categorical
   columns frame, hash (four elements in lock-step), look up and write in phases.
   Arithmetic is the twin's: float64, the same operations in the same order,
   division by std, FMA contraction off; log1p is fdlibm's algorithm in vector
   form (``osprey_log1p_block``), within 1 ulp of the C library's.

Steps 3 and 5 release the GIL when the batch has ``NOGIL_MIN_ROWS`` rows or more.
Below that the whole call takes a few microseconds, and handing the GIL away can
cost far more: a thread that takes it meanwhile may keep it for the interpreter's
switch interval (5 ms) before this one gets it back.

Nothing is written before every column has passed, so on an error neither ``out``
nor ``counts`` changes. Every BYTES cursor is bounds-checked again during the pass,
so even a buffer changed by another thread meanwhile cannot be read out of bounds.
The C helpers use GCC/Clang vector extensions (SSE2 on any x86-64, NEON on arm64).
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_Check
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_Check, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_CheckExact, PyDict_GetItemWithError, PyDict_Size
from cpython.long cimport PyLong_AsSsize_t, PyLong_CheckExact
from cpython.mem cimport PyMem_Calloc, PyMem_Free, PyMem_Malloc
from cpython.memoryview cimport PyMemoryView_Check
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.tuple cimport PyTuple_GET_ITEM
from cpython.weakref cimport PyWeakref_GetObject

from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t, uint8_t
from libc.string cimport memcmp, memset

import operator
import weakref
from functools import partial as _partial

import numpy as np

cimport numpy as cnp

from . import transform_py as _twin
from .feature_errors import (
    ColumnTypeError as _ColumnTypeError,
    MalformedBytes as _MalformedBytes,
    MissingColumn as _MissingColumn,
    RowCountMismatch as _RowCountMismatch,
    UnknownColumn as _UnknownColumn,
    ValueTooLong as _ValueTooLong,
)
from .transform_plan import (
    ENC_BUCKET as _ENC_BUCKET,
    ENC_HASH as _ENC_HASH,
    ENC_VALUE as _ENC_VALUE,
    ENC_VOCAB as _ENC_VOCAB,
    N_PARAMS as _N_PARAMS,
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

# The twin's names for the wanted inputs (messages of ColumnTypeError).
cdef object _NUMERIC_EXPECTED = _twin.NUMERIC_EXPECTED
cdef object _CATEGORICAL_EXPECTED = _twin.CATEGORICAL_EXPECTED
cdef object _describe = _twin.describe_input

# dtypes, declared once: float32 inputs and matrix, uint8 BYTES, int64 counts.
cdef cnp.dtype _F32 = cnp.PyArray_DescrFromType(cnp.NPY_FLOAT32)
cdef cnp.dtype _U8 = cnp.PyArray_DescrFromType(cnp.NPY_UINT8)
cdef cnp.dtype _I64 = cnp.PyArray_DescrFromType(cnp.NPY_INT64)

# Batches of at least this many rows are walked and transformed without the GIL.
NOGIL_MIN_ROWS = 256
cdef Py_ssize_t _NOGIL_MIN_ROWS = NOGIL_MIN_ROWS

# Matrix floats per block of rows (32 KiB): a block stays in L1 while every column
# writes into it.
cdef Py_ssize_t _BLOCK_FLOATS = 8192
cdef enum:
    STACK_COLUMNS = 64        # batches of up to this many columns keep their state on the stack
    BLOCK_ROWS_MAX = 256      # rows per block at most (small matrices)
    SHORT_BLOCK = 8           # blocks shorter than this go value by value
    LINEAR_EDGES_MAX = 32     # up to this many edges, counted row-vectorised

# The plan's op bits and encoders (transform_plan), as C constants.
cdef enum:
    OP_IMPUTE = 1
    OP_CLIP_LO = 2
    OP_CLIP_HI = 4
    OP_LOG1P = 8
    OP_STANDARDIZE = 16
    ENC_VALUE = 0
    ENC_BUCKET = 1
    ENC_VOCAB = 2
    ENC_HASH = 3

assert (ENC_VALUE, ENC_BUCKET, ENC_VOCAB, ENC_HASH) == (
    _ENC_VALUE, _ENC_BUCKET, _ENC_VOCAB, _ENC_HASH)
assert _N_PARAMS == 5

# -- the compiled plan -------------------------------------------------------------------

ctypedef struct ColumnPlan:
    bint categorical
    int32_t ops
    int32_t encoder
    bint one_hot
    Py_ssize_t out_offset
    double params[5]           # impute, clip lo, clip hi, mean, std
    const double* edges        # bucketize edges [n_edges]
    Py_ssize_t n_edges
    Py_ssize_t bin_base        # first bin of the column in the flat counts
    const double* bin_edges    # profile edges [n_bin_edges] (numeric)
    const float* bin_edges_f32 # each rounded up to the nearest float32 (see _edges_f32)
    Py_ssize_t n_bin_edges
    int64_t max_bytes
    uint64_t hash_init
    uint64_t hash_buckets
    int64_t oov_slot
    Py_ssize_t lut_lo          # lookup entries [lut_lo, lut_hi)
    Py_ssize_t lut_hi

ctypedef struct PlanC:
    Py_ssize_t n_columns
    Py_ssize_t n_features
    Py_ssize_t block_rows
    ColumnPlan* cols
    const uint64_t* lut_hash
    const int64_t* lut_slot
    const int64_t* lut_bin
    const int64_t* key_ptr
    const uint8_t* keys


cdef class _Compiled:
    """A plan's arrays in kernel form; ``twin`` when only the twin can run the plan."""

    cdef PlanC c
    cdef bint twin
    cdef tuple names
    cdef frozenset known
    cdef object n_bins          # plan.n_bins, as the twin formats it
    cdef Py_ssize_t n_bins_c
    cdef object n_features      # plan.n_features, as the twin formats it
    cdef tuple arrays           # private copies the pointers in ``c`` point into
    cdef object ref             # weakref to the plan

    def __dealloc__(self):
        PyMem_Free(self.c.cols)


cdef dict _CACHE = {}   # id(plan) -> _Compiled, dropped when the plan dies


def _forget(key, ref):
    state = _CACHE.get(key)
    if state is not None and (<_Compiled>state).ref is ref:
        del _CACHE[key]


cdef object _copy(object a, cnp.dtype dtype, Py_ssize_t length):
    """A private C-contiguous copy of 1-D array ``a`` (of ``length`` if >= 0), else None."""
    if not isinstance(a, np.ndarray) or not cnp.PyArray_EquivTypes(a.dtype, dtype):
        return None
    if a.ndim != 1 or (length >= 0 and a.shape[0] != length):
        return None
    return np.array(a, dtype=dtype, order="C", copy=True)


cdef object _edges_f32(object edges):
    """Each float64 edge rounded up to the smallest float32 >= it (±inf beyond the range).

    Numeric inputs are float32, and for a float32 x, ``x >= e`` holds exactly when
    ``x >= e32`` (x is itself a float32 >= e, and e32 is the least of those), so the
    sketch compares four float32 lanes per instruction with the same answers.
    """
    with np.errstate(over="ignore"):
        rounded = np.asarray(edges, dtype=np.float64).astype(np.float32)
    low = rounded.astype(np.float64) < edges
    rounded[low] = np.nextafter(rounded[low], np.float32(np.inf))
    return np.ascontiguousarray(rounded)


cdef bint _sorted(const double[::1] values, Py_ssize_t lo, Py_ssize_t hi):
    """Non-decreasing without NaN: where a binary search agrees with NumPy's."""
    cdef Py_ssize_t i
    for i in range(lo, hi):
        if values[i] != values[i]:
            return False
        if i > lo and values[i] < values[i - 1]:
            return False
    return True


cdef _Compiled _compile(object plan):
    """Check and copy ``plan``; the result has ``twin`` set if the kernel cannot run it."""
    cdef _Compiled st = _Compiled.__new__(_Compiled)
    st.twin = True
    names = tuple(plan.column_names)
    categorical = tuple(plan.categorical)
    cdef Py_ssize_t n = len(names)
    try:
        st.known = frozenset(names)
        n_features = operator.index(plan.n_features)
        n_bins = operator.index(plan.n_bins)
    except TypeError:
        return st
    st.names = names
    st.n_features = plan.n_features
    st.n_bins = plan.n_bins
    if len(st.known) != n or len(categorical) != n or n_features < 0 or n_bins < 0:
        return st
    F64 = cnp.PyArray_DescrFromType(cnp.NPY_FLOAT64)
    I32 = cnp.PyArray_DescrFromType(cnp.NPY_INT32)
    U64 = cnp.PyArray_DescrFromType(cnp.NPY_UINT64)
    per_column = [
        _copy(plan.ops, I32, n), _copy(plan.encoder, I32, n), _copy(plan.one_hot, I32, n),
        _copy(plan.out_offset, _I64, n), _copy(plan.out_width, _I64, n),
        _copy(plan.edge_ptr, _I64, n + 1), _copy(plan.bin_ptr, _I64, n + 1),
        _copy(plan.bin_edge_ptr, _I64, n + 1), _copy(plan.max_bytes, _I64, n),
        _copy(plan.hash_init, U64, n), _copy(plan.hash_buckets, U64, n),
        _copy(plan.oov_slot, _I64, n), _copy(plan.lut_ptr, _I64, n + 1),
    ]
    shared = [_copy(plan.edges, F64, -1), _copy(plan.bin_edges, F64, -1),
              _copy(plan.lut_hash, U64, -1), _copy(plan.keys, _U8, -1)]
    params = plan.params
    if (any(a is None for a in per_column + shared) or not isinstance(params, np.ndarray)
            or not cnp.PyArray_EquivTypes(params.dtype, F64)
            or params.shape != (n, _N_PARAMS)):
        return st
    n_entries = shared[2].shape[0]
    entry = [_copy(plan.lut_slot, _I64, n_entries), _copy(plan.lut_bin, _I64, n_entries),
             _copy(plan.key_ptr, _I64, n_entries + 1)]
    if any(a is None for a in entry):
        return st
    params = np.array(params, dtype=np.float64, order="C", copy=True)
    edges_f32 = _edges_f32(shared[1])
    st.arrays = tuple(per_column + shared + entry + [params, edges_f32])

    cdef const int32_t[::1] ops = per_column[0], encoder = per_column[1]
    cdef const int32_t[::1] one_hot = per_column[2]
    cdef const int64_t[::1] out_offset = per_column[3], out_width = per_column[4]
    cdef const int64_t[::1] edge_ptr = per_column[5], bin_ptr = per_column[6]
    cdef const int64_t[::1] bin_edge_ptr = per_column[7], max_bytes = per_column[8]
    cdef const uint64_t[::1] hash_init = per_column[9], hash_buckets = per_column[10]
    cdef const int64_t[::1] oov_slot = per_column[11], lut_ptr = per_column[12]
    cdef const double[::1] edges = shared[0], bin_edges = shared[1]
    cdef const uint64_t[::1] lut_hash = shared[2]
    cdef const int64_t[::1] lut_slot = entry[0], lut_bin = entry[1], key_ptr = entry[2]
    cdef const double[:, ::1] p = params
    cdef const float[::1] bin_edges_f32 = edges_f32
    cdef Py_ssize_t n_keys = shared[3].shape[0]
    cdef Py_ssize_t c, e, k, m, width, bins, enc
    cdef bint hot
    cdef ColumnPlan* col

    if not (_monotone(edge_ptr, edges.shape[0]) and _monotone(bin_edge_ptr, bin_edges.shape[0])
            and _monotone(lut_ptr, n_entries) and _monotone(bin_ptr, n_bins)
            and _monotone(key_ptr, n_keys)):
        return st

    st.c.cols = <ColumnPlan*>PyMem_Calloc(n if n > 0 else 1, sizeof(ColumnPlan))
    if st.c.cols == NULL:
        raise MemoryError()
    for c in range(n):
        col = &st.c.cols[c]
        width = out_width[c]
        bins = bin_ptr[c + 1] - bin_ptr[c]
        enc = encoder[c]
        hot = one_hot[c] != 0
        if out_offset[c] < 0 or width < 1 or out_offset[c] + width > n_features:
            return st
        col.categorical = bool(categorical[c])
        col.ops = ops[c]
        col.encoder = <int32_t>enc
        col.one_hot = hot
        col.out_offset = out_offset[c]
        for k in range(_N_PARAMS):
            col.params[k] = p[c, k]
        col.bin_base = bin_ptr[c]
        col.max_bytes = max_bytes[c]
        col.hash_init = hash_init[c]
        col.hash_buckets = hash_buckets[c]
        col.oov_slot = oov_slot[c]
        col.lut_lo = lut_ptr[c]
        col.lut_hi = lut_ptr[c + 1]
        if not col.categorical:
            m = bin_edge_ptr[c + 1] - bin_edge_ptr[c]
            if m < 1 or bins < m + 2 or not _sorted(bin_edges, bin_edge_ptr[c],
                                                    bin_edge_ptr[c + 1]):
                return st
            col.n_bin_edges = m
            col.bin_edges = &bin_edges[bin_edge_ptr[c]]
            col.bin_edges_f32 = &bin_edges_f32[bin_edge_ptr[c]]
            if enc == ENC_BUCKET:
                m = edge_ptr[c + 1] - edge_ptr[c]
                if not _sorted(edges, edge_ptr[c], edge_ptr[c + 1]) or (hot and width < m + 1):
                    return st
                col.n_edges = m
                col.edges = &edges[edge_ptr[c]] if m > 0 else NULL
            elif enc != ENC_VALUE:
                return st
            continue
        if bins < 2 or (enc != ENC_VOCAB and enc != ENC_HASH):
            return st
        if enc == ENC_HASH and (hash_buckets[c] == 0
                                or (hot and hash_buckets[c] > <uint64_t>width)):
            return st
        if enc == ENC_VOCAB and hot and not 0 <= oov_slot[c] < width:
            return st
        for e in range(col.lut_lo, col.lut_hi):
            if e > col.lut_lo and lut_hash[e] < lut_hash[e - 1]:
                return st
            if not 0 <= lut_bin[e] < bins:
                return st
            if enc == ENC_VOCAB and hot and not 0 <= lut_slot[e] < width:
                return st
    st.c.n_columns = n
    st.c.n_features = n_features
    # a multiple of 8 (osprey_count_le_block's stride), at least 8
    st.c.block_rows = min(<Py_ssize_t>BLOCK_ROWS_MAX,
                          (_BLOCK_FLOATS // max(n_features, 1) + 7) // 8 * 8)
    st.c.lut_hash = &lut_hash[0] if n_entries > 0 else NULL
    st.c.lut_slot = &lut_slot[0] if n_entries > 0 else NULL
    st.c.lut_bin = &lut_bin[0] if n_entries > 0 else NULL
    st.c.key_ptr = &key_ptr[0]
    st.c.keys = <const uint8_t*>cnp.PyArray_DATA(<cnp.ndarray>shared[3])
    st.n_bins_c = n_bins
    st.twin = False
    return st


cdef bint _monotone(const int64_t[::1] ptr, Py_ssize_t size):
    """0 <= ptr[0] <= ptr[1] <= ... <= ptr[-1] <= size."""
    cdef Py_ssize_t i
    if ptr[0] < 0:
        return False
    for i in range(1, ptr.shape[0]):
        if ptr[i] < ptr[i - 1]:
            return False
    return ptr[ptr.shape[0] - 1] <= size


cdef PyObject* _last_plan = NULL  # the plan of the previous call (not a reference)
cdef _Compiled _last_state = None


cdef _Compiled _state(object plan):
    """The plan's compiled state: the previous call's, from the cache, or built once.

    A state's weak reference tells whether it still belongs to ``plan``: a plan that
    died (and whatever object took its address) never matches it.
    """
    global _last_plan, _last_state
    if <PyObject*>plan == _last_plan and PyWeakref_GetObject(_last_state.ref) == _last_plan:
        return _last_state
    _last_state = _lookup_state(plan)
    _last_plan = <PyObject*>plan if _last_state.ref is not None else NULL
    return _last_state


cdef _Compiled _lookup_state(object plan):
    key = <size_t><void*>plan
    cdef object found = _CACHE.get(key)
    cdef _Compiled st
    if found is not None:
        st = <_Compiled>found
        if <PyObject*>PyWeakref_GetObject(st.ref) == <PyObject*>plan:
            return st
    st = _compile(plan)
    try:
        st.ref = weakref.ref(plan, _partial(_forget, key))
    except TypeError:
        return st  # not weakly referenceable: compiled on every call
    _CACHE[key] = st
    return st


# -- the batch's columns -----------------------------------------------------------------

ctypedef struct ColumnIn:
    const uint8_t* data        # numeric: first float32; categorical: the BYTES buffer
    Py_ssize_t size            # categorical: buffer length in bytes
    Py_ssize_t stride          # numeric: bytes from one value to the next
    Py_ssize_t pos             # categorical: cursor during the pass
    PyObject* obj              # a reference held for the whole call
    bint has_view
    Py_buffer view             # bytearray / memoryview, released at the end


cdef inline bint _dtype_is(cnp.ndarray arr, cnp.dtype dtype):
    """``arr.dtype == dtype``, as NumPy compares them (int64 is also 'q' on Linux)."""
    cdef cnp.PyArray_Descr* got = cnp.PyArray_DESCR(arr)
    return (got == <cnp.PyArray_Descr*>dtype
            or cnp.PyArray_EquivTypes(<cnp.dtype><PyObject*>got, dtype))


cdef inline void _hold(ColumnIn* col, object value):
    Py_INCREF(value)
    Py_XDECREF(col.obj)
    col.obj = <PyObject*>value


cdef void _release(ColumnIn* cols, Py_ssize_t n):
    cdef Py_ssize_t c
    for c in range(n):
        if cols[c].has_view:
            PyBuffer_Release(&cols[c].view)
            cols[c].has_view = False
        Py_XDECREF(cols[c].obj)
        cols[c].obj = NULL


cdef object _take_numeric(object name, object value, ColumnIn* col, Py_ssize_t rows):
    """None when ``value`` is a float32 [rows] or [rows, 1] array, else the twin's error."""
    cdef cnp.ndarray arr
    cdef int nd
    if not cnp.PyArray_Check(value):
        return _ColumnTypeError(name, _NUMERIC_EXPECTED, _describe(value))
    arr = <cnp.ndarray>value
    nd = cnp.PyArray_NDIM(arr)
    if (not _dtype_is(arr, _F32) or (nd != 1 and nd != 2)
            or (nd == 2 and cnp.PyArray_DIMS(arr)[1] != 1)):
        return _ColumnTypeError(name, _NUMERIC_EXPECTED, _describe(value))
    if cnp.PyArray_DIMS(arr)[0] != rows:
        return _RowCountMismatch(name, rows, f"{cnp.PyArray_DIMS(arr)[0]} rows")
    if not cnp.PyArray_ISALIGNED(arr):
        arr = cnp.PyArray_NewCopy(arr, cnp.NPY_CORDER)
    _hold(col, arr)
    col.data = <const uint8_t*>cnp.PyArray_DATA(arr)
    col.stride = cnp.PyArray_STRIDES(arr)[0]
    return None


cdef object _take_bytes(object name, object value, ColumnIn* col):
    """None when ``value`` is a BYTES buffer the twin accepts, else the twin's error."""
    cdef cnp.ndarray arr
    if cnp.PyArray_Check(value):
        arr = <cnp.ndarray>value
        if (not _dtype_is(arr, _U8) or cnp.PyArray_NDIM(arr) != 1
                or not cnp.PyArray_IS_C_CONTIGUOUS(arr)):
            return _ColumnTypeError(name, _CATEGORICAL_EXPECTED, _describe(value))
        _hold(col, value)
        col.data = <const uint8_t*>cnp.PyArray_DATA(arr)
        col.size = cnp.PyArray_DIMS(arr)[0]
        return None
    if PyBytes_Check(value):
        _hold(col, value)
        col.data = <const uint8_t*>PyBytes_AS_STRING(value)
        col.size = PyBytes_GET_SIZE(value)
        return None
    if PyMemoryView_Check(value):
        if value.itemsize != 1 or not value.c_contiguous:
            return _ColumnTypeError(name, _CATEGORICAL_EXPECTED, "a memoryview that is not bytes")
    elif not PyByteArray_Check(value):
        return _ColumnTypeError(name, _CATEGORICAL_EXPECTED, _describe(value))
    _hold(col, value)
    PyObject_GetBuffer(value, &col.view, PyBUF_SIMPLE)
    col.has_view = True
    col.data = <const uint8_t*>col.view.buf
    col.size = col.view.len
    return None


cdef object _gather(_Compiled st, object columns, Py_ssize_t rows, ColumnIn* cols,
                    Py_ssize_t* bad):
    """Find and check every column in the twin's order.

    Missing and unknown columns raise at once. The first per-column fault (type,
    shape, numeric row count) is returned with its column in ``bad``; BYTES columns
    before it still have to be walked, since the twin would fail there first.
    """
    cdef Py_ssize_t c, n = st.c.n_columns
    cdef PyObject* found
    cdef tuple names = st.names
    fast = PyDict_CheckExact(columns)
    if fast:
        for c in range(n):
            name = <object>PyTuple_GET_ITEM(names, c)
            found = PyDict_GetItemWithError(columns, name)
            if found == NULL:
                raise _MissingColumn(name)
            _hold(&cols[c], <object>found)
        if PyDict_Size(columns) != n:
            _raise_unknown(st, columns)
    else:
        for name in names:
            if name not in columns:
                raise _MissingColumn(name)
        _raise_unknown(st, columns)
    c = 0
    try:
        while c < n:
            name = <object>PyTuple_GET_ITEM(names, c)
            value = <object>cols[c].obj if fast else columns[name]
            if st.c.cols[c].categorical:
                fault = _take_bytes(name, value, &cols[c])
            else:
                fault = _take_numeric(name, value, &cols[c], rows)
            if fault is not None:
                bad[0] = c
                return fault
            c += 1
    except Exception as exc:
        bad[0] = c
        return exc
    bad[0] = n
    return None


cdef void _raise_unknown(_Compiled st, object columns) except *:
    for name in columns:
        if name not in st.known:
            raise _UnknownColumn(str(name))


# -- BYTES framing (no GIL) ----------------------------------------------------------------

cdef enum Walk:
    WALK_OK = 0
    WALK_TOO_FEW = 1          # RowCountMismatch: the buffer ends before ``rows`` elements
    WALK_TRUNCATED = 2        # MalformedBytes: a length prefix cut short
    WALK_PAST_END = 3         # MalformedBytes: a length running past the end
    WALK_TOO_LONG = 4         # ValueTooLong
    WALK_LEFT_OVER = 5        # RowCountMismatch: bytes after the last element

ctypedef struct Fault:
    Walk status
    Py_ssize_t column
    Py_ssize_t element
    Py_ssize_t pos
    Py_ssize_t end
    int64_t length


cdef inline uint32_t _read_u32le(const uint8_t* p) noexcept nogil:
    return ((<uint32_t>p[0]) | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16)
            | (<uint32_t>p[3] << 24))


cdef Walk _walk(const uint8_t* base, Py_ssize_t end, Py_ssize_t rows, int64_t max_bytes,
                Fault* f) noexcept nogil:
    """The twin's ``split_bytes`` checks, element by element, in its order."""
    cdef Py_ssize_t pos = 0, i
    cdef int64_t length
    f.end = end
    for i in range(rows):
        f.element = i
        f.pos = pos
        if pos == end:
            return WALK_TOO_FEW
        if end - pos < 4:
            return WALK_TRUNCATED
        length = _read_u32le(base + pos)
        pos += 4
        f.pos = pos
        f.length = length
        if length > end - pos:
            return WALK_PAST_END
        if length > max_bytes:
            return WALK_TOO_LONG
        pos += length
    f.pos = pos
    return WALK_LEFT_OVER if pos != end else WALK_OK


cdef void _walk_columns(const PlanC* p, const ColumnIn* cols, Py_ssize_t upto,
                        Py_ssize_t rows, Fault* f) noexcept nogil:
    """Walk the BYTES columns before ``upto``; the first fault stops it."""
    cdef Py_ssize_t c
    f.status = WALK_OK
    for c in range(upto):
        if p.cols[c].categorical:
            f.status = _walk(cols[c].data, cols[c].size, rows, p.cols[c].max_bytes, f)
            if f.status != WALK_OK:
                f.column = c
                return


cdef object _fault_error(_Compiled st, const Fault* f, Py_ssize_t rows):
    """The twin's exception for a recorded BYTES fault."""
    name = st.names[f.column]
    if f.status == WALK_TOO_FEW:
        return _RowCountMismatch(name, rows, f"{f.element} BYTES elements")
    if f.status == WALK_TRUNCATED:
        return _MalformedBytes(name, f.element, f"has a truncated length prefix (needs 4 bytes "
                                                f"at offset {f.pos}, buffer is {f.end} bytes)")
    if f.status == WALK_PAST_END:
        return _MalformedBytes(name, f.element, f"declares {f.length} bytes at offset {f.pos} "
                                                f"but only {f.end - f.pos} remain")
    if f.status == WALK_TOO_LONG:
        return _ValueTooLong(name, f.element, f.length, st.c.cols[f.column].max_bytes)
    return _RowCountMismatch(name, rows, f"more than {rows} BYTES elements "
                                         f"({f.end - f.pos} bytes left over)")


# -- the pass (no GIL) -----------------------------------------------------------------------

cdef extern from *:
    """
    /* How many of the sorted e[0..m) are <= x (x not NaN). Branch-free: the loop
       runs ceil(log2 m) times whatever x is, and each step adds a 0/1 product,
       so a column of random values costs no mispredicted branches. */
    static inline Py_ssize_t osprey_count_le(const double* e, Py_ssize_t m, double x) {
        const double* base = e;
        Py_ssize_t n = m, half;
        if (n == 0) return 0;
        while (n > 1) {
            half = n >> 1;
            base += (Py_ssize_t)(base[half - 1] <= x) * half;
            n -= half;
        }
        return (base - e) + (base[0] <= x);
    }
    /* The first index in t[lo..hi) whose value is >= h (hi if none), branch-free. */
    static inline Py_ssize_t osprey_lower_bound(const uint64_t* t, Py_ssize_t lo,
                                                Py_ssize_t hi, uint64_t h) {
        const uint64_t* base;
        Py_ssize_t n = hi - lo, half;
        if (n == 0) return lo;
        base = t + lo;
        while (n > 1) {
            half = n >> 1;
            base += (Py_ssize_t)(base[half - 1] < h) * half;
            n -= half;
        }
        return (base - t) + (base[0] < h);
    }
    /* osprey-fnv1a64-mix (native.feature_hash) of n elements from the seeded state
       ``init``: FNV-1a is one multiply per byte in a chain, so four elements are
       hashed in lock-step over their common length (four independent chains keep
       the multiplier busy), then each finishes alone; every element's arithmetic is
       exactly the scalar definition. */
    static inline uint64_t osprey_mix64(uint64_t z) {
        z ^= z >> 30; z *= 0xBF58476D1CE4E5B9ULL;
        z ^= z >> 27; z *= 0x94D049BB133111EBULL;
        return z ^ (z >> 31);
    }
    #define OSPREY_FNV_PRIME 0x100000001B3ULL
    static void osprey_hash_block(uint64_t init, const uint8_t* data,
                                  const Py_ssize_t* start, const Py_ssize_t* size,
                                  Py_ssize_t n, uint64_t* out) {
        Py_ssize_t i = 0, j, k;
        for (; i + 4 <= n; i += 4) {
            const uint8_t *s0 = data + start[i], *s1 = data + start[i + 1];
            const uint8_t *s2 = data + start[i + 2], *s3 = data + start[i + 3];
            const Py_ssize_t n0 = size[i], n1 = size[i + 1], n2 = size[i + 2], n3 = size[i + 3];
            uint64_t h0 = init, h1 = init, h2 = init, h3 = init;
            k = n0 < n1 ? n0 : n1;
            k = k < n2 ? k : n2;
            k = k < n3 ? k : n3;
            for (j = 0; j < k; j++) {
                h0 = (h0 ^ s0[j]) * OSPREY_FNV_PRIME;
                h1 = (h1 ^ s1[j]) * OSPREY_FNV_PRIME;
                h2 = (h2 ^ s2[j]) * OSPREY_FNV_PRIME;
                h3 = (h3 ^ s3[j]) * OSPREY_FNV_PRIME;
            }
            for (j = k; j < n0; j++) h0 = (h0 ^ s0[j]) * OSPREY_FNV_PRIME;
            for (j = k; j < n1; j++) h1 = (h1 ^ s1[j]) * OSPREY_FNV_PRIME;
            for (j = k; j < n2; j++) h2 = (h2 ^ s2[j]) * OSPREY_FNV_PRIME;
            for (j = k; j < n3; j++) h3 = (h3 ^ s3[j]) * OSPREY_FNV_PRIME;
            out[i] = osprey_mix64(h0);
            out[i + 1] = osprey_mix64(h1);
            out[i + 2] = osprey_mix64(h2);
            out[i + 3] = osprey_mix64(h3);
        }
        for (; i < n; i++) {
            const uint8_t* s0 = data + start[i];
            uint64_t h0 = init;
            for (j = 0; j < size[i]; j++) h0 = (h0 ^ s0[j]) * OSPREY_FNV_PRIME;
            out[i] = osprey_mix64(h0);
        }
    }
    /* k[i] = how many of e[0..m) are <= v[i] (0 for NaN). Eight values at a time,
       in GCC/Clang vector types (SSE2 on any x86-64): their counts stay in
       registers while each edge is compared with all eight (compare, mask with
       the bits of 1.0, add), so an edge costs 3 instructions per 2 values. The
       counts are doubles: exact up to 2**53. */
    typedef double osprey_v2d __attribute__((vector_size(16)));
    typedef long long osprey_v2i __attribute__((vector_size(16)));
    static void osprey_count_le_block(const double* e, Py_ssize_t m,
                                      const double* restrict v, Py_ssize_t n,
                                      double* restrict k) {
        const osprey_v2d one = {1.0, 1.0};
        const osprey_v2i one_bits = (osprey_v2i)one;
        Py_ssize_t i = 0, j;
        for (; i + 8 <= n; i += 8) {
            osprey_v2d x0, x1, x2, x3, edge;
            osprey_v2d a0 = {0.0, 0.0}, a1 = a0, a2 = a0, a3 = a0;
            memcpy(&x0, v + i, 16); memcpy(&x1, v + i + 2, 16);
            memcpy(&x2, v + i + 4, 16); memcpy(&x3, v + i + 6, 16);
            for (j = 0; j < m; j++) {
                edge = (osprey_v2d){e[j], e[j]};
                a0 += (osprey_v2d)((osprey_v2i)(x0 >= edge) & one_bits);
                a1 += (osprey_v2d)((osprey_v2i)(x1 >= edge) & one_bits);
                a2 += (osprey_v2d)((osprey_v2i)(x2 >= edge) & one_bits);
                a3 += (osprey_v2d)((osprey_v2i)(x3 >= edge) & one_bits);
            }
            memcpy(k + i, &a0, 16); memcpy(k + i + 2, &a1, 16);
            memcpy(k + i + 4, &a2, 16); memcpy(k + i + 6, &a3, 16);
        }
        for (; i < n; i++) k[i] = (double)osprey_count_le(e, m, v[i]);  /* NaN: 0 */
    }
    /* Signed log1p, copysign(log1p(|v|), v), over a block of float64 values, two
       at a time: fdlibm's log1p (1 + x reduced to 2**k (1 + f) with f in
       [sqrt(2)/2 - 1, sqrt(2) - 1], a correction c for the rounding of 1 + x, and
       the Lg1..Lg7 polynomial in s = f / (2 + f)), written branch-free in vector
       types. Within 1 ulp of the C library's log1p (1 ulp apart on ~0.01 % of
       float32 inputs, never apart once rounded to float32 in 16 M random values);
       inf and NaN pass through, -0.0 stays -0.0. About 1.5x faster than the C
       library's per-value call, which spends most of the numeric transform. */
    typedef unsigned long long osprey_v2u __attribute__((vector_size(16)));
    #define OSPREY_SPLAT(x) ((osprey_v2d){(x), (x)})
    #define OSPREY_SELECT(m, a, b) \
        ((osprey_v2d)(((osprey_v2i)(a) & (m)) | ((osprey_v2i)(b) & ~(m))))
    static inline osprey_v2d osprey_log1p_abs2(osprey_v2d x) {
        const osprey_v2d one = OSPREY_SPLAT(1.0), zero = OSPREY_SPLAT(0.0);
        osprey_v2d u = one + x, f, c, s, z, w, t1, t2, hfsq, dk, r;
        osprey_v2u bits = (osprey_v2u)u, hu;
        osprey_v2i k, small;
        hu = (bits >> 32) + (0x3ff00000 - 0x3fe6a09e);
        k = (osprey_v2i)(hu >> 20) - 0x3ff;
        c = OSPREY_SELECT(k >= 2, one - (u - x), x - (u - one)) / u;
        c = OSPREY_SELECT(k < 54, c, zero);
        hu = (hu & 0x000fffff) + 0x3fe6a09e;
        f = (osprey_v2d)((hu << 32) | (bits & 0xffffffffULL)) - one;
        small = x < OSPREY_SPLAT(0.41421353816986083984375);  /* 1 + x < sqrt(2): k = 0 */
        f = OSPREY_SELECT(small, x, f);
        c = OSPREY_SELECT(small, zero, c);
        k = k & ~small;
        /* (double)k, exact for |k| < 2**51: the bits of 2**52 + 2**51 + k, less it */
        dk = (osprey_v2d)(k + 0x4338000000000000LL) - OSPREY_SPLAT(6755399441055744.0);
        hfsq = OSPREY_SPLAT(0.5) * f * f;
        s = f / (OSPREY_SPLAT(2.0) + f);
        z = s * s;
        w = z * z;
        t1 = w * (OSPREY_SPLAT(3.999999999940941908e-01)
                  + w * (OSPREY_SPLAT(2.222219843214978396e-01)
                         + w * OSPREY_SPLAT(1.531383769920937332e-01)));
        t2 = z * (OSPREY_SPLAT(6.666666666666735130e-01)
                  + w * (OSPREY_SPLAT(2.857142874366239149e-01)
                         + w * (OSPREY_SPLAT(1.818357216161805012e-01)
                                + w * OSPREY_SPLAT(1.479819860511658591e-01))));
        r = s * (hfsq + (t2 + t1)) + (dk * OSPREY_SPLAT(1.90821492927058770002e-10) + c)
            - hfsq + f + dk * OSPREY_SPLAT(6.93147180369123816490e-01);
        return OSPREY_SELECT(x < OSPREY_SPLAT(__builtin_inf()), r, x);  /* inf, NaN */
    }
    static inline osprey_v2d osprey_log1p_signed2(osprey_v2d x) {
        const osprey_v2i sign = {(long long)0x8000000000000000ULL,
                                 (long long)0x8000000000000000ULL};
        osprey_v2d a = osprey_log1p_abs2((osprey_v2d)((osprey_v2i)x & ~sign));
        return (osprey_v2d)((osprey_v2i)a | ((osprey_v2i)x & sign));
    }
    static void osprey_log1p_block(double* v, Py_ssize_t n) {
        osprey_v2d x;
        Py_ssize_t i = 0;
        for (; i + 2 <= n; i += 2) {
            memcpy(&x, v + i, 16);
            x = osprey_log1p_signed2(x);
            memcpy(v + i, &x, 16);
        }
        if (i < n) {
            x = osprey_log1p_signed2((osprey_v2d){v[i], 0.0});
            v[i] = x[0];
        }
    }
    /* The sketch's count of profile edges <= x[i] for float32 values against the
       edges rounded up to float32 (exact, see _edges_f32): sixteen values at a time
       in four 4-lane vectors, each lane's count kept as an integer (a compare gives
       -1 where true, subtracted). The last 1..15 values are padded with NaN, which
       no edge counts. */
    typedef float osprey_v4f __attribute__((vector_size(16)));
    typedef int32_t osprey_v4i __attribute__((vector_size(16)));
    static inline void osprey_count_le_f32_16(const float* e, Py_ssize_t m,
                                              const float* restrict x,
                                              int32_t* restrict k) {
        osprey_v4f x0, x1, x2, x3, edge;
        osprey_v4i a0 = {0, 0, 0, 0}, a1 = a0, a2 = a0, a3 = a0;
        Py_ssize_t j;
        memcpy(&x0, x, 16); memcpy(&x1, x + 4, 16);
        memcpy(&x2, x + 8, 16); memcpy(&x3, x + 12, 16);
        for (j = 0; j < m; j++) {
            edge = (osprey_v4f){e[j], e[j], e[j], e[j]};
            a0 -= (osprey_v4i)(x0 >= edge);
            a1 -= (osprey_v4i)(x1 >= edge);
            a2 -= (osprey_v4i)(x2 >= edge);
            a3 -= (osprey_v4i)(x3 >= edge);
        }
        memcpy(k, &a0, 16); memcpy(k + 4, &a1, 16);
        memcpy(k + 8, &a2, 16); memcpy(k + 12, &a3, 16);
    }
    static void osprey_count_le_f32(const float* e, Py_ssize_t m, const float* restrict x,
                                    Py_ssize_t n, int32_t* restrict k) {
        float pad[16];
        int32_t got[16];
        Py_ssize_t i = 0, j;
        for (; i + 16 <= n; i += 16) osprey_count_le_f32_16(e, m, x + i, k + i);
        if (i < n) {
            for (j = 0; j < 16; j++) pad[j] = i + j < n ? x[i + j] : __builtin_nanf("");
            osprey_count_le_f32_16(e, m, pad, got);
            for (j = 0; i + j < n; j++) k[i + j] = got[j];
        }
    }
    /* Add float32 values into their profile bins: 0 NaN, 1 + k inside (k edges
       <= x; the last edge closes the last interior bin, so x == last goes to m),
       m + 1 above. */
    static void osprey_add_bins(int64_t* restrict bins, double last,
                                const float* restrict x, const int32_t* restrict k,
                                Py_ssize_t n) {
        Py_ssize_t i;
        for (i = 0; i < n; i++) {
            Py_ssize_t inside = 1 + (Py_ssize_t)k[i] - (Py_ssize_t)((double)x[i] == last);
            bins[x[i] == x[i] ? inside : 0] += 1;
        }
    }
    """
    void osprey_count_le_block(const double* e, Py_ssize_t m, const double* v, Py_ssize_t n,
                               double* k) noexcept nogil
    void osprey_log1p_block(double* v, Py_ssize_t n) noexcept nogil
    void osprey_count_le_f32(const float* e, Py_ssize_t m, const float* x, Py_ssize_t n,
                             int32_t* k) noexcept nogil
    void osprey_add_bins(int64_t* bins, double last, const float* x, const int32_t* k,
                         Py_ssize_t n) noexcept nogil
    void osprey_hash_block(uint64_t init, const uint8_t* data, const Py_ssize_t* start,
                           const Py_ssize_t* size, Py_ssize_t n, uint64_t* out) noexcept nogil
    Py_ssize_t osprey_count_le(const double* e, Py_ssize_t m, double x) noexcept nogil
    Py_ssize_t osprey_lower_bound(const uint64_t* t, Py_ssize_t lo, Py_ssize_t hi,
                                  uint64_t h) noexcept nogil


cdef inline Py_ssize_t _upper(const double* e, Py_ssize_t m, double x) noexcept nogil:
    """How many of the sorted ``e[:m]`` are <= x; m for NaN (NumPy sorts NaN last)."""
    if x != x:
        return m
    return osprey_count_le(e, m, x)


cdef inline Py_ssize_t _numeric_bin(const double* e, Py_ssize_t m, double x) noexcept nogil:
    """The profile's numeric bin: NaN 0, below 1, inside 1 + k (last edge closed), above m + 1."""
    cdef Py_ssize_t k
    if x != x:
        return 0
    k = _upper(e, m, x)
    if x == e[m - 1]:
        k = m - 1
    return 1 + k


cdef inline double _numeric_value(const ColumnPlan* p, double y) noexcept nogil:
    """impute -> clip -> log1p -> standardize on one float64 value (``_numeric_ops``)."""
    cdef int32_t ops = p.ops
    if ops & OP_IMPUTE and y != y:
        y = p.params[0]
    if ops & OP_CLIP_LO and y < p.params[1]:
        y = p.params[1]
    if ops & OP_CLIP_HI and y > p.params[2]:
        y = p.params[2]
    if ops & OP_LOG1P:
        osprey_log1p_block(&y, 1)
    if ops & OP_STANDARDIZE:
        y = (y - p.params[3]) / p.params[4]
    return y


cdef inline void _numeric_row(const ColumnPlan* p, double x, float* cell,
                              int64_t* bins) noexcept nogil:
    """One value of a short block (below SHORT_BLOCK rows, where the block loops'
    set-up would cost more than the work): the same operations one by one."""
    cdef Py_ssize_t k
    if bins != NULL:
        bins[_numeric_bin(p.bin_edges, p.n_bin_edges, x)] += 1
    if cell == NULL:
        return
    x = _numeric_value(p, x)
    if p.encoder == ENC_VALUE:
        cell[0] = <float>x
        return
    k = _upper(p.edges, p.n_edges, x)
    if p.one_hot:
        cell[k] = 1.0
    else:
        cell[0] = <float>k


cdef void _numeric_ops(const ColumnPlan* p, double* v, Py_ssize_t n) noexcept nogil:
    """impute -> clip -> log1p -> standardize on float64 values, as the op bits say.

    One op at a time over the block: each value still goes through the ops in the
    twin's order, and the loops without a call vectorise (same IEEE operations).
    """
    cdef Py_ssize_t i
    cdef int32_t ops = p.ops
    cdef double a = p.params[0], lo = p.params[1], hi = p.params[2]
    cdef double mean = p.params[3], std = p.params[4]
    if ops & OP_IMPUTE:
        for i in range(n):
            v[i] = a if v[i] != v[i] else v[i]
    if ops & OP_CLIP_LO:
        for i in range(n):
            v[i] = lo if v[i] < lo else v[i]
    if ops & OP_CLIP_HI:
        for i in range(n):
            v[i] = hi if v[i] > hi else v[i]
    if ops & OP_LOG1P:
        osprey_log1p_block(v, n)
    if ops & OP_STANDARDIZE:
        for i in range(n):
            v[i] = (v[i] - mean) / std


cdef inline void _count_le(const double* e, Py_ssize_t m, const double* v, Py_ssize_t n,
                           double* k) noexcept nogil:
    """k[i] = how many of the sorted e[:m] are <= v[i] (0 for NaN; callers override it).

    Few edges (the usual case): one vectorised compare-and-add per edge over the
    whole block; many: a branch-free binary search per value.
    """
    cdef Py_ssize_t i
    if m <= LINEAR_EDGES_MAX:
        osprey_count_le_block(e, m, v, n, k)
    else:
        for i in range(n):
            k[i] = <double>osprey_count_le(e, m, v[i]) if v[i] == v[i] else 0.0


cdef void _numeric_block(const ColumnPlan* p, const ColumnIn* x, Py_ssize_t r0, Py_ssize_t r1,
                         Py_ssize_t F, float* out, int64_t* counts) noexcept nogil:
    cdef Py_ssize_t i, n = r1 - r0, m
    cdef float raw[BLOCK_ROWS_MAX]
    cdef int32_t edges_le[BLOCK_ROWS_MAX]
    cdef double v[BLOCK_ROWS_MAX]
    cdef double k[BLOCK_ROWS_MAX]   # counts of edges, exact in a double
    cdef Py_ssize_t slot
    cdef double last
    cdef float* cell
    cdef int64_t* bins
    if n < SHORT_BLOCK:
        bins = counts + p.bin_base if counts != NULL else NULL
        for i in range(n):
            _numeric_row(p, (<const float*>(x.data + (r0 + i) * x.stride))[0],
                         out + (r0 + i) * F + p.out_offset if out != NULL else NULL, bins)
        return
    for i in range(n):
        raw[i] = (<const float*>(x.data + (r0 + i) * x.stride))[0]
    if counts != NULL:
        bins = counts + p.bin_base
        m = p.n_bin_edges
        last = p.bin_edges[m - 1]
        if m <= LINEAR_EDGES_MAX:
            osprey_count_le_f32(p.bin_edges_f32, m, raw, n, edges_le)
        else:
            for i in range(n):
                edges_le[i] = <int32_t>osprey_count_le(p.bin_edges, m, raw[i]) \
                    if raw[i] == raw[i] else 0
        osprey_add_bins(bins, last, raw, edges_le, n)
    if out == NULL:
        return
    for i in range(n):
        v[i] = raw[i]
    _numeric_ops(p, v, n)
    cell = out + r0 * F + p.out_offset
    if p.encoder == ENC_VALUE:
        for i in range(n):
            cell[i * F] = <float>v[i]
        return
    m = p.n_edges
    _count_le(p.edges, m, v, n, k)
    for i in range(n):
        # NumPy sorts NaN last (unreachable from compile_plan: bucketize needs impute)
        slot = m if v[i] != v[i] else <Py_ssize_t>k[i]
        if p.one_hot:
            cell[i * F + slot] = 1.0
        else:
            cell[i * F] = <float>slot


cdef inline Py_ssize_t _find(const PlanC* plan, const ColumnPlan* p, uint64_t h,
                             const uint8_t* s, Py_ssize_t n) noexcept nogil:
    """The entry holding exactly ``s[:n]``, or -1: lower bound on the hash, then the bytes."""
    cdef const uint64_t* table = plan.lut_hash
    cdef Py_ssize_t lo = osprey_lower_bound(table, p.lut_lo, p.lut_hi, h)
    if lo == p.lut_hi or table[lo] != h:
        return -1
    if plan.key_ptr[lo + 1] - plan.key_ptr[lo] != n:
        return -1
    if n > 0 and memcmp(plan.keys + plan.key_ptr[lo], s, n) != 0:
        return -1
    return lo


cdef void _categorical_block(const PlanC* plan, const ColumnPlan* p, ColumnIn* x,
                             Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t F, float* out,
                             int64_t* counts) noexcept nogil:
    """The block's elements in phases (framing, hashes, lookups, writes): each loop
    body is short and its iterations independent, so the CPU overlaps the hash and
    binary-search dependency chains of neighbouring elements."""
    cdef Py_ssize_t i, n = r1 - r0, pos = x.pos, end = x.size, length
    cdef Py_ssize_t start[BLOCK_ROWS_MAX]
    cdef Py_ssize_t size[BLOCK_ROWS_MAX]
    cdef uint64_t h[BLOCK_ROWS_MAX]
    cdef Py_ssize_t entry[BLOCK_ROWS_MAX]
    cdef int64_t slot
    cdef float* cell
    cdef int64_t* bins = counts + p.bin_base if counts != NULL else NULL
    cdef bint lookup = bins != NULL or (out != NULL and p.encoder == ENC_VOCAB)
    for i in range(n):
        # validated by _walk; checked again so a buffer changed since cannot be overrun
        if end - pos >= 4:
            length = _read_u32le(x.data + pos)
            pos += 4
            if length > end - pos:
                length = end - pos
        else:
            length = 0
            pos = end
        start[i] = pos
        size[i] = length
        pos += length
    x.pos = pos
    osprey_hash_block(p.hash_init, x.data, start, size, n, h)
    if lookup:
        for i in range(n):
            entry[i] = _find(plan, p, h[i], x.data + start[i], size[i])
    if bins != NULL:
        for i in range(n):
            bins[0 if size[i] == 0 else (plan.lut_bin[entry[i]] if entry[i] >= 0 else 1)] += 1
    if out == NULL:
        return
    cell = out + r0 * F + p.out_offset
    for i in range(n):
        if p.encoder == ENC_HASH:
            slot = <int64_t>(h[i] % p.hash_buckets)
        else:
            slot = plan.lut_slot[entry[i]] if entry[i] >= 0 else p.oov_slot
        if p.one_hot:
            cell[i * F + slot] = 1.0
        else:
            cell[i * F] = <float>slot


cdef void _pass(const PlanC* p, ColumnIn* cols, Py_ssize_t rows, float* out,
                int64_t* counts) noexcept nogil:
    """Every row into ``out`` (if not NULL, zeroed block by block) and ``counts`` (if not NULL)."""
    cdef Py_ssize_t F = p.n_features, r0 = 0, r1, c
    for c in range(p.n_columns):
        cols[c].pos = 0
    while r0 < rows:
        r1 = r0 + p.block_rows
        if r1 > rows:
            r1 = rows
        if out != NULL and F > 0:
            memset(out + r0 * F, 0, (r1 - r0) * F * sizeof(float))
        for c in range(p.n_columns):
            if p.cols[c].categorical:
                _categorical_block(p, &p.cols[c], &cols[c], r0, r1, F, out, counts)
            else:
                _numeric_block(&p.cols[c], &cols[c], r0, r1, F, out, counts)
        r0 = r1


# -- entry points -------------------------------------------------------------------------

cdef Py_ssize_t _rows(object rows) except -2:
    """The twin's check of ``rows``; -1 when it does not fit a Py_ssize_t (the twin decides)."""
    if not PyLong_CheckExact(rows):
        if isinstance(rows, bool) or not isinstance(rows, (int, np.integer)) or rows < 0:
            raise ValueError(f"rows must be an integer >= 0, got {rows!r}")
        rows = int(rows)
    try:
        n = PyLong_AsSsize_t(rows)
    except OverflowError:
        return -1
    if n < 0:
        raise ValueError(f"rows must be an integer >= 0, got {rows!r}")
    return n


cdef object _checked_counts(_Compiled st, object counts):
    cdef cnp.ndarray arr
    cdef cnp.npy_intp size = st.n_bins_c
    if counts is None:
        return cnp.PyArray_ZEROS(1, &size, cnp.NPY_INT64, 0)
    if cnp.PyArray_Check(counts):
        arr = <cnp.ndarray>counts
        if (_dtype_is(arr, _I64) and cnp.PyArray_NDIM(arr) == 1
                and cnp.PyArray_DIMS(arr)[0] == st.n_bins_c and cnp.PyArray_IS_C_CONTIGUOUS(arr)
                and cnp.PyArray_ISWRITEABLE(arr)):
            return counts
    raise ValueError(f"counts must be a writeable int64 array of shape [{st.n_bins}]")


cdef object _checked_out(_Compiled st, object out, Py_ssize_t rows):
    cdef cnp.ndarray arr
    cdef cnp.npy_intp dims[2]
    if out is None:
        dims[0] = rows
        dims[1] = st.c.n_features
        return cnp.PyArray_EMPTY(2, dims, cnp.NPY_FLOAT32, 0)  # zeroed by the pass
    if cnp.PyArray_Check(out):
        arr = <cnp.ndarray>out
        if (_dtype_is(arr, _F32) and cnp.PyArray_NDIM(arr) == 2
                and cnp.PyArray_DIMS(arr)[0] == rows
                and cnp.PyArray_DIMS(arr)[1] == st.c.n_features
                and cnp.PyArray_IS_C_CONTIGUOUS(arr) and cnp.PyArray_ISWRITEABLE(arr)):
            return out
    raise ValueError(f"out must be a writeable C-contiguous float32 array of shape "
                     f"{[rows, st.n_features]}")


cdef object _run(_Compiled st, object columns, Py_ssize_t rows, object counts, bint sketch,
                 object out, bint matrix):
    cdef Py_ssize_t n = st.c.n_columns, bad = 0
    cdef Fault fault
    cdef bint release = rows >= _NOGIL_MIN_ROWS
    cdef float* out_data = NULL
    cdef int64_t* counts_data = NULL
    cdef ColumnIn on_stack[STACK_COLUMNS]
    cdef ColumnIn* cols = on_stack
    cdef Py_ssize_t c
    if n > STACK_COLUMNS:
        cols = <ColumnIn*>PyMem_Malloc(n * sizeof(ColumnIn))
        if cols == NULL:
            raise MemoryError()
    for c in range(n):
        cols[c].obj = NULL
        cols[c].has_view = False
    try:
        pending = _gather(st, columns, rows, cols, &bad)
        if release:
            with nogil:
                _walk_columns(&st.c, cols, bad, rows, &fault)
        else:
            _walk_columns(&st.c, cols, bad, rows, &fault)
        if fault.status != WALK_OK:
            raise _fault_error(st, &fault, rows)
        if pending is not None:
            raise pending
        counts = _checked_counts(st, counts)
        if matrix:
            out = _checked_out(st, out, rows)
            out_data = <float*>cnp.PyArray_DATA(<cnp.ndarray>out)
        if sketch:
            counts_data = <int64_t*>cnp.PyArray_DATA(<cnp.ndarray>counts)
        if release:
            with nogil:
                _pass(&st.c, cols, rows, out_data, counts_data)
        else:
            _pass(&st.c, cols, rows, out_data, counts_data)
    finally:
        _release(cols, n)
        if cols != on_stack:
            PyMem_Free(cols)
    return (out, counts) if matrix else counts


def transform(plan, columns, rows, *, counts=None, sketch=True, out=None):
    """The float32 matrix [rows, F] of a batch, and the drift counts: ``transform_py.transform``.

    ``counts`` (int64 [plan.n_bins]) is added into in place, a fresh zeroed one made
    when it is None; ``sketch=False`` counts nothing; ``out`` (float32 [rows, F],
    C-contiguous) is overwritten and returned instead of a new matrix.
    """
    cdef Py_ssize_t n = _rows(rows)
    cdef _Compiled st = _state(plan)
    if n < 0 or st.twin:
        return _twin.transform(plan, columns, rows, counts=counts, sketch=sketch, out=out)
    return _run(st, columns, n, counts, True if sketch else False, out, True)


def count(plan, columns, rows, counts=None):
    """Only the drift counts of a batch, added into ``counts``: ``transform_py.count``."""
    cdef Py_ssize_t n = _rows(rows)
    cdef _Compiled st = _state(plan)
    if n < 0 or st.twin:
        return _twin.count(plan, columns, rows, counts)
    return _run(st, columns, n, counts, True, None, False)


cdef void _count_values(const double* e, Py_ssize_t m, const uint8_t* values,
                        Py_ssize_t stride, Py_ssize_t n, int64_t* counts) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        counts[_numeric_bin(e, m, (<const float*>(values + i * stride))[0])] += 1


def count_scores(edges, scores, counts=None):
    """Score histogram counts, added into ``counts`` when given: ``transform_py.count_scores``."""
    edge_array = np.ascontiguousarray(np.asarray(edges, dtype=np.float64))
    values = np.asarray(scores, dtype=np.float32).reshape(-1)
    cdef Py_ssize_t m = edge_array.shape[0] if edge_array.ndim == 1 else -1
    cdef cnp.ndarray arr
    if (m < 1 or not _sorted(edge_array, 0, m) or not cnp.PyArray_ISALIGNED(values)
            or not (counts is None or (
                cnp.PyArray_Check(counts)
                and _dtype_is(<cnp.ndarray>counts, _I64)
                and cnp.PyArray_NDIM(<cnp.ndarray>counts) == 1
                and cnp.PyArray_DIMS(<cnp.ndarray>counts)[0] == m + 2
                and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>counts)
                and cnp.PyArray_ISWRITEABLE(<cnp.ndarray>counts)))):
        return _twin.count_scores(edge_array, values, counts)  # whatever the twin does
    if counts is None:
        counts = np.zeros(m + 2, dtype=np.int64)
    arr = <cnp.ndarray>values
    cdef const double* e = <const double*>cnp.PyArray_DATA(<cnp.ndarray>edge_array)
    cdef const uint8_t* data = <const uint8_t*>cnp.PyArray_DATA(arr)
    cdef Py_ssize_t n = cnp.PyArray_DIMS(arr)[0], stride = cnp.PyArray_STRIDES(arr)[0]
    cdef int64_t* into = <int64_t*>cnp.PyArray_DATA(<cnp.ndarray>counts)
    if n >= _NOGIL_MIN_ROWS:
        with nogil:
            _count_values(e, m, data, stride, n, into)
    else:
        _count_values(e, m, data, stride, n, into)
    return counts
