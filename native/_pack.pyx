# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Cython kernel for batch packing and splitting; ``native.pack_py`` is its twin.

``pack`` checks every part once (dtype, rank, trailing shape: per part, never per
row), allocates the batch once and copies each C-contiguous part with one
``memcpy``, without the GIL when the batch is large enough for that to pay
(``NOGIL_MIN_BYTES``). Parts holding Python objects (BYTES as ``object`` arrays)
and non-contiguous parts are gathered by NumPy's own slice assignment instead,
one call per part. ``split`` validates the offsets in C and builds each view
straight from the batch's layout (one array object per part, without a slice
object and ``__getitem__`` per part).
``pack_bytes`` walks the BYTES length prefixes of every buffer without the GIL,
then concatenates them with one ``memcpy`` each.
"""

from cpython.buffer cimport PyBUF_C_CONTIGUOUS, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport PyObject, PyTypeObject
from cpython.ref cimport Py_INCREF
from libc.stdint cimport int64_t, uint32_t, uint8_t
from libc.string cimport memcpy

import numpy as np

cimport numpy as cnp

cnp.import_array()

# Row offsets are int64 on both sides: ``offset_t`` here, ``OFFSET_DTYPE`` in NumPy.
ctypedef int64_t offset_t
OFFSET_DTYPE = np.dtype(np.int64)

# Below this many bytes a batch is copied holding the GIL: handing the GIL to the
# event loop thread and waiting to get it back costs more than the copy itself.
NOGIL_MIN_BYTES = 1 << 18
cdef Py_ssize_t _NOGIL_MIN_BYTES = NOGIL_MIN_BYTES

cdef extern from "numpy/arrayobject.h":
    # Steals a reference to ``descr``.
    object PyArray_NewFromDescr(
        PyTypeObject* subtype, cnp.PyArray_Descr* descr, int nd, cnp.npy_intp* dims,
        cnp.npy_intp* strides, void* data, int flags, PyObject* obj
    )

# BYTES walk outcomes (``_walk_bytes``).
cdef enum:
    WALK_OK = 0
    WALK_TRUNCATED_PREFIX = 1
    WALK_OVERLONG = 2
    WALK_LEFTOVER = 3
    WALK_NEGATIVE_COUNT = 4


cdef inline uint32_t _read_u32le(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0]) | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


cdef int _walk_bytes(
    const uint8_t* base,  # IN: one BYTES buffer
    Py_ssize_t end,
    Py_ssize_t count,
    Py_ssize_t* element,  # OUT: the failing element
    Py_ssize_t* pos_out,  # OUT: where it failed
    uint32_t* length_out,  # OUT: the declared length that overran
) noexcept nogil:
    """Check that ``base[:end]`` holds exactly ``count`` elements; a WALK_* code."""
    cdef Py_ssize_t pos = 0
    cdef Py_ssize_t j
    cdef uint32_t length
    if count < 0:
        return WALK_NEGATIVE_COUNT
    for j in range(count):
        element[0] = j
        if end - pos < 4:
            pos_out[0] = pos
            return WALK_TRUNCATED_PREFIX
        length = _read_u32le(base + pos)
        pos += 4
        if <Py_ssize_t>length > end - pos:
            pos_out[0] = pos
            length_out[0] = length
            return WALK_OVERLONG
        pos += length
    pos_out[0] = pos
    return WALK_LEFTOVER if pos != end else WALK_OK


cdef void _copy_rows(
    char* dst,  # OUT: the batch's data
    const char** src,  # IN: each part's data [k]
    const offset_t* off,  # IN: row offsets [k + 1]
    Py_ssize_t k,
    Py_ssize_t row_bytes,
) noexcept nogil:
    """One memcpy per non-empty part into its rows of the batch."""
    cdef Py_ssize_t i
    for i in range(k):
        if off[i + 1] > off[i]:
            memcpy(dst + off[i] * row_bytes, src[i], (off[i + 1] - off[i]) * row_bytes)


cdef int _walk_parts(
    const Py_buffer* views,  # IN: the BYTES buffers [k]
    const Py_ssize_t* want,  # IN: element count per buffer [k]
    Py_ssize_t k,
    Py_ssize_t* part,  # OUT: the failing part
    Py_ssize_t* element,  # OUT: the failing element
    Py_ssize_t* pos,  # OUT: where it failed
    uint32_t* length,  # OUT: the declared length that overran
) noexcept nogil:
    """``_walk_bytes`` over every buffer, stopping at the first failure."""
    cdef Py_ssize_t i
    cdef int status
    for i in range(k):
        part[0] = i
        status = _walk_bytes(
            <const uint8_t*>views[i].buf, views[i].len, want[i], element, pos, length
        )
        if status != WALK_OK:
            return status
    return WALK_OK


cdef void _concat(
    char* dst,  # OUT: the concatenated buffer
    const Py_buffer* views,  # IN: the BYTES buffers [k]
    Py_ssize_t k,
) noexcept nogil:
    """Copy the buffers back to back into ``dst``."""
    cdef Py_ssize_t i
    for i in range(k):
        memcpy(dst, views[i].buf, views[i].len)
        dst += views[i].len


def pack(parts):
    """Concatenate ``parts`` along axis 0 into one new C-contiguous array.

    Returns ``(batch, offsets)``: part ``i`` is ``batch[offsets[i]:offsets[i + 1]]``.
    Parts must share dtype (``<f4`` and ``=f4`` agree; ``>f4`` does not) and
    trailing shape. ValueError names the part that differs (TypeError for a part
    that is not an array).
    """
    # Our own list: nobody can drop a part while the copies run without the GIL.
    cdef list items = list(parts)
    cdef Py_ssize_t k = len(items)
    if k == 0:
        raise ValueError("pack needs at least one part")
    cdef cnp.ndarray first, arr
    cdef int nd, d
    cdef Py_ssize_t i
    cdef cnp.npy_intp* dims
    cdef cnp.npy_intp* first_dims = NULL
    cdef cnp.PyArray_Descr* first_descr = NULL
    cdef bint simple = True  # every part C-contiguous and free of object references
    cdef offset_t total = 0

    offsets = np.empty(k + 1, dtype=OFFSET_DTYPE)
    cdef offset_t* off = <offset_t*>cnp.PyArray_DATA(offsets)  # OUT: row offsets [k + 1]
    off[0] = 0
    for i in range(k):
        obj = items[i]
        if not cnp.PyArray_Check(obj):
            raise TypeError(f"part {i} is a {type(obj).__name__}, not a NumPy array")
        arr = <cnp.ndarray>obj
        nd = cnp.PyArray_NDIM(arr)
        if nd == 0:
            raise ValueError(f"part {i} is 0-d; parts need a leading row dimension")
        dims = cnp.PyArray_DIMS(arr)
        if i == 0:
            first = arr
            first_dims = dims
            first_descr = cnp.PyArray_DESCR(arr)
        else:
            if cnp.PyArray_DESCR(arr) != first_descr and not cnp.PyArray_EquivTypes(
                arr.dtype, first.dtype
            ):
                raise ValueError(
                    f"part {i} has dtype {arr.dtype}, part 0 has dtype {first.dtype}"
                )
            if nd != cnp.PyArray_NDIM(first):
                raise _trailing_mismatch(i, arr, first)
            for d in range(1, nd):
                if dims[d] != first_dims[d]:
                    raise _trailing_mismatch(i, arr, first)
        if not cnp.PyArray_IS_C_CONTIGUOUS(arr):
            simple = False
        total += dims[0]
        off[i + 1] = total

    nd = cnp.PyArray_NDIM(first)
    cdef cnp.npy_intp out_dims[cnp.NPY_MAXDIMS]
    out_dims[0] = total
    for d in range(1, nd):
        out_dims[d] = first_dims[d]
    Py_INCREF(<object>first_descr)  # PyArray_NewFromDescr steals it
    out = PyArray_NewFromDescr(
        <PyTypeObject*>np.ndarray, first_descr, nd, out_dims, NULL, NULL, 0, NULL
    )
    if (<object>first_descr).hasobject:
        simple = False
    if not simple:
        # Objects need their references counted, strided parts a gather: NumPy does
        # both, one slice assignment per part (every row of ``out`` is assigned).
        for i in range(k):
            if off[i + 1] > off[i]:
                out[off[i] : off[i + 1]] = items[i]
        return out, offsets

    cdef char* dst = <char*>cnp.PyArray_DATA(out)
    cdef Py_ssize_t row_bytes = cnp.PyArray_ITEMSIZE(first)
    for d in range(1, nd):
        row_bytes *= first_dims[d]
    cdef Py_ssize_t nbytes = total * row_bytes
    cdef const char** src = <const char**>PyMem_Malloc(k * sizeof(char*))
    if src == NULL:
        raise MemoryError()
    try:
        for i in range(k):
            src[i] = <const char*>cnp.PyArray_DATA(<cnp.ndarray>items[i])
        if nbytes >= _NOGIL_MIN_BYTES:
            with nogil:
                _copy_rows(dst, src, off, k, row_bytes)
        else:
            _copy_rows(dst, src, off, k, row_bytes)
    finally:
        PyMem_Free(src)
    return out, offsets


cdef object _trailing_mismatch(Py_ssize_t i, object arr, object first):
    """The ValueError for part ``i`` whose trailing shape differs from part 0's."""
    return ValueError(
        f"part {i} has trailing shape {arr.shape[1:]}, "
        f"part 0 has trailing shape {first.shape[1:]}"
    )


def split(batch, offsets):
    """Views ``batch[offsets[i]:offsets[i + 1]]`` for each part (no copy).

    ``offsets`` must start at 0, never decrease and end at ``batch.shape[0]``;
    ValueError says which of these fails.
    """
    if not cnp.PyArray_Check(batch):
        raise TypeError(f"batch is a {type(batch).__name__}, not a NumPy array")
    if cnp.PyArray_NDIM(<cnp.ndarray>batch) == 0:
        raise ValueError("batch is 0-d; it needs a leading row dimension")
    arr = np.asarray(offsets)
    if arr.ndim != 1 or arr.shape[0] == 0 or arr.dtype.kind not in "iu":
        raise ValueError(
            f"offsets must be a 1-D integer array with at least one entry "
            f"(got shape {arr.shape}, dtype {arr.dtype})"
        )
    arr = np.ascontiguousarray(arr.astype(OFFSET_DTYPE, casting="unsafe", copy=False))
    cdef const offset_t[::1] off = arr  # IN: row offsets [k + 1]
    cdef Py_ssize_t n = off.shape[0]
    cdef Py_ssize_t i
    cdef offset_t rows = cnp.PyArray_DIMS(<cnp.ndarray>batch)[0]
    if off[0] != 0:
        raise ValueError(f"offsets must start at 0 (offsets[0] is {off[0]})")
    for i in range(1, n):
        if off[i] < off[i - 1]:
            raise ValueError(
                f"offsets are not monotonic: offsets[{i}] = {off[i]} < "
                f"offsets[{i - 1}] = {off[i - 1]}"
            )
    if off[n - 1] != rows:
        raise ValueError(f"offsets end at {off[n - 1]} but the batch has {rows} rows")
    cdef list out = [None] * (n - 1)
    if not cnp.PyArray_CheckExact(batch):
        for i in range(n - 1):  # a subclass: let its own __getitem__ make the views
            out[i] = batch[off[i] : off[i + 1]]
        return out
    # Each view is the batch's own layout, shifted by whole rows: what slicing makes,
    # without building a slice object and going through __getitem__ per part.
    cdef cnp.ndarray base = <cnp.ndarray>batch
    cdef int nd = cnp.PyArray_NDIM(base)
    cdef int d
    cdef cnp.npy_intp view_dims[cnp.NPY_MAXDIMS]
    for d in range(1, nd):
        view_dims[d] = cnp.PyArray_DIMS(base)[d]
    cdef cnp.npy_intp* strides = cnp.PyArray_STRIDES(base)
    cdef char* data = <char*>cnp.PyArray_DATA(base)
    cdef cnp.PyArray_Descr* descr = cnp.PyArray_DESCR(base)
    cdef int flags = cnp.NPY_ARRAY_WRITEABLE if cnp.PyArray_ISWRITEABLE(base) else 0
    for i in range(n - 1):
        view_dims[0] = off[i + 1] - off[i]
        Py_INCREF(<object>descr)  # PyArray_NewFromDescr steals it
        view = PyArray_NewFromDescr(
            <PyTypeObject*>np.ndarray, descr, nd, view_dims, strides,
            data + off[i] * strides[0], flags, NULL
        )
        cnp.set_array_base(view, batch)
        out[i] = view
    return out


def pack_bytes(buffers, counts):
    """Concatenate KServe BYTES buffers; part ``i`` must hold exactly ``counts[i]``.

    Returns ``(buffer, offsets)`` where part ``i``'s elements are numbers
    ``offsets[i]`` to ``offsets[i + 1]`` of the concatenated buffer. ValueError names
    the part (and element) that is malformed.
    """
    cdef list bufs = list(buffers)
    cdef list cnts = list(counts)
    cdef Py_ssize_t k = len(bufs)
    if k != len(cnts):
        raise ValueError(f"pack_bytes got {k} buffers but {len(cnts)} counts")
    cdef Py_buffer* views = <Py_buffer*>PyMem_Malloc((k + 1) * sizeof(Py_buffer))
    cdef Py_ssize_t* want = <Py_ssize_t*>PyMem_Malloc((k + 1) * sizeof(Py_ssize_t))
    if views == NULL or want == NULL:
        PyMem_Free(views)
        PyMem_Free(want)
        raise MemoryError()
    cdef Py_ssize_t acquired = 0
    cdef Py_ssize_t i, total = 0, element = 0, pos = 0
    cdef uint32_t length = 0
    cdef int status = WALK_OK
    cdef char* dst
    cdef offset_t[::1] off_view  # OUT: element offsets [k + 1]
    try:
        for i in range(k):
            want[i] = cnts[i]
            PyObject_GetBuffer(bufs[i], &views[i], PyBUF_C_CONTIGUOUS)
            acquired += 1
            total += views[i].len
        if total >= _NOGIL_MIN_BYTES:
            with nogil:
                status = _walk_parts(views, want, k, &i, &element, &pos, &length)
        else:
            status = _walk_parts(views, want, k, &i, &element, &pos, &length)
        if status == WALK_NEGATIVE_COUNT:
            raise ValueError(f"BYTES part {i}: count {want[i]} is negative")
        if status == WALK_TRUNCATED_PREFIX:
            raise ValueError(
                f"BYTES part {i}: element {element} has a truncated length prefix "
                f"(needs 4 bytes at offset {pos}, buffer is {views[i].len} bytes)"
            )
        if status == WALK_OVERLONG:
            raise ValueError(
                f"BYTES part {i}: element {element} declares {length} bytes at offset {pos} "
                f"but only {views[i].len - pos} remain"
            )
        if status == WALK_LEFTOVER:
            raise ValueError(
                f"BYTES part {i}: holds more than the {want[i]} elements declared "
                f"({views[i].len - pos} bytes left over)"
            )
        out = PyBytes_FromStringAndSize(NULL, total)
        dst = PyBytes_AS_STRING(out)
        offsets = np.empty(k + 1, dtype=OFFSET_DTYPE)
        off_view = offsets
        _fill_offsets(off_view, want, k)
        if total >= _NOGIL_MIN_BYTES:
            with nogil:
                _concat(dst, views, k)
        else:
            _concat(dst, views, k)
        return out, offsets
    finally:
        for i in range(acquired):
            PyBuffer_Release(&views[i])
        PyMem_Free(views)
        PyMem_Free(want)


cdef void _fill_offsets(
    offset_t[::1] off,  # OUT: element offsets [k + 1]
    const Py_ssize_t* counts,  # IN: element count per part [k]
    Py_ssize_t k,
) noexcept nogil:
    cdef Py_ssize_t i
    off[0] = 0
    for i in range(k):
        off[i + 1] = off[i] + counts[i]
