# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Cython kernel of the audit record encoder; ``native.audit_record_py`` is its twin.

``encode`` writes the canonical JSON of one audit record (compact, keys sorted,
UTF-8, what the chain signs: see ``registry.audit_chain``) straight from the entry's
fields into one buffer: strings escaped as Python's ``json`` escapes them with
``ensure_ascii=False``, integers, the time as ISO 8601 with microseconds, and
numeric NumPy tensors element by element (floats as ``repr`` writes them, through
the same ``PyOS_double_to_string``; NaN and infinities as the strings "NaN",
"Infinity", "-Infinity"). A float32 of magnitude at least 2^-99 is written as its
shortest decimal that reads back as the same float32 (``0.1``, not the double
expansion ``0.10000000149011612``), in ``repr``'s layout, so that ``json`` reading
and writing it again gives the same text (at most 9 significant digits: every
decimal that short survives the round trip through a double). The digits come from
double arithmetic where that is provably exact to the last digit, else from exact
128-bit integer arithmetic (``f32_repr(x, exact_only=True)`` tests that path). Any other column (BYTES, personal data, object arrays)
is encoded by the ``column_json`` callback, so the bytes are the twin's in every
case; the tests compare them.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DecodeUTF8
from libc.math cimport isinf, isnan
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy

import numpy as np

cimport numpy as cnp

cnp.import_array()


cdef extern from "Python.h":
    char* PyOS_double_to_string(double val, char format_code, int precision, int flags,
                                int* ptype) except NULL
    int Py_DTSF_ADD_DOT_0


cdef extern from "<stdio.h>" nogil:
    int snprintf(char* out, size_t size, const char* fmt, ...)


cdef extern from *:
    """
    #include <math.h>
    #include <stdint.h>
    #include <string.h>

    typedef unsigned __int128 osprey_u128;

    static osprey_u128 osprey_pow5(int n) {
        osprey_u128 r = 1;
        while (n-- > 0) r *= 5;
        return r;
    }

    /* value = X * 2^E / 10^q as N / D (exact). q in [-40, 40], X < 2^27. */
    static void osprey_ratio(uint64_t X, int E, int q, osprey_u128* N, osprey_u128* D) {
        int s = E - q;
        if (q >= 0) {
            osprey_u128 p5 = osprey_pow5(q);
            if (s >= 0) { *N = (osprey_u128)X << s; *D = p5; }
            else { *N = X; *D = p5 << (-s); }
        } else {
            osprey_u128 n = (osprey_u128)X * osprey_pow5(-q);
            if (s >= 0) { *N = n << s; *D = 1; }
            else { *N = n; *D = (osprey_u128)1 << (-s); }
        }
    }

    /* 10^n as a double, n in [-45, 45]: exact for |n| <= 22, else two exact factors. */
    static const double OSPREY_P10[23] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
        1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

    /* x * 10^n with at most two roundings. */
    static double osprey_scale10(double x, int n) {
        while (n > 22) { x *= 1e22; n -= 22; }
        while (n < -22) { x /= 1e22; n += 22; }
        return n >= 0 ? x * OSPREY_P10[n] : x / OSPREY_P10[-n];
    }

    #define OSPREY_SLACK 1e-5  /* |error| of the double path, in units of the last digit */

    /* The integers in [lo, hi] at scale 10^q, and the one closest to v (ties to even).
       Returns 0 if none, 1 if found (*c set), -1 if the double arithmetic cannot decide. */
    static int osprey_fast(double lo, double v, double hi, int q, uint64_t* c) {
        double a = osprey_scale10(lo, -q), b = osprey_scale10(hi, -q), m = osprey_scale10(v, -q);
        double ca = ceil(a), fb = floor(b), fm = floor(m);
        if (ca - a < OSPREY_SLACK || b - fb < OSPREY_SLACK) return -1;  /* near an endpoint */
        if (ca > fb) return 0;
        double frac = m - fm;
        if (fabs(frac - 0.5) < OSPREY_SLACK) return -1;
        double r = frac > 0.5 ? fm + 1 : fm;
        if (r < ca) r = ca;
        if (r > fb) r = fb;
        *c = (uint64_t)r;
        return 1;
    }

    static int osprey_exact(uint64_t L, uint64_t M4, uint64_t H, int E, int inclusive, int q,
                            uint64_t* c) {
        osprey_u128 N, D, cmin, cmax, cm, r;
        osprey_ratio(L, E, q, &N, &D);
        cmin = N / D;
        if (N % D != 0 || !inclusive) cmin += 1;
        osprey_ratio(H, E, q, &N, &D);
        cmax = N / D;
        if (N % D == 0 && !inclusive) {
            if (cmax == 0) return 0;
            cmax -= 1;
        }
        if (cmin > cmax) return 0;
        osprey_ratio(M4, E, q, &N, &D);
        cm = N / D;
        r = N % D;
        if (2 * r > D || (2 * r == D && (cm & 1))) cm += 1;
        if (cm < cmin) cm = cmin;
        if (cm > cmax) cm = cmax;
        *c = (uint64_t)cm;
        return 1;
    }

    static int osprey_try(double lo, double v, double hi, uint64_t L, uint64_t M4,
                          uint64_t H, int E, int inclusive, int q, int exact_only,
                          uint64_t* c) {
        int got = exact_only ? -1 : osprey_fast(lo, v, hi, q, c);
        if (got < 0) got = osprey_exact(L, M4, H, E, inclusive, q, c);
        return got > 0;
    }

    /* Writes the float32 f (finite, |f| >= 2^-99) as Python's repr writes the double
       nearest to its shortest round-trip decimal; returns the length. ``exact_only``
       skips the double fast path (for tests). */
    static int osprey_f32_repr(float f, char* out, int exact_only) {
        uint32_t bits;
        memcpy(&bits, &f, 4);
        int neg = bits >> 31, exp = (bits >> 23) & 0xFF, n = 0;
        uint32_t frac = bits & 0x7FFFFF;
        uint64_t m = frac | 0x800000u;
        int E = exp - 150 - 2;
        uint64_t M4 = 4 * m, H = 4 * m + 2, L = (frac == 0 && exp > 1) ? 4 * m - 1 : 4 * m - 2;
        int inclusive = (m % 2) == 0;
        double v = ldexp((double)M4, E), lo = ldexp((double)L, E), hi = ldexp((double)H, E);
        int k = (int)floor(log10(v));
        uint64_t c = 0, c_up = 0;
        /* The shortest decimal is at the largest q whose range holds an integer (a
           range that holds one at q holds one at every smaller q). Most float32 need 8
           or 9 digits: start at 8 and move up, or down, from there. */
        int q = k - 7;
        if (osprey_try(lo, v, hi, L, M4, H, E, inclusive, q, exact_only, &c)) {
            while (q < k + 2 && osprey_try(lo, v, hi, L, M4, H, E, inclusive, q + 1,
                                           exact_only, &c_up)) {
                q += 1;
                c = c_up;
            }
        } else {
            do {
                q -= 1;
                if (q < k - 12) return 0;
            } while (!osprey_try(lo, v, hi, L, M4, H, E, inclusive, q, exact_only, &c));
        }
        char digits[24];
        int nd = 0;
        while (c > 0) { digits[nd++] = (char)('0' + c % 10); c /= 10; }
        int z = 0;
        while (z < nd - 1 && digits[z] == '0') z++;
        int decpt = q + nd;  /* value = 0.D1D2... x 10^decpt */
        int count = nd - z;
        char d[24];
        for (int i = 0; i < count; i++) d[i] = digits[nd - 1 - i];
        if (neg) out[n++] = '-';
        if (decpt <= -4 || decpt > 16) {
            int e = decpt - 1;
            out[n++] = d[0];
            if (count > 1) { out[n++] = '.'; memcpy(out + n, d + 1, count - 1); n += count - 1; }
            out[n++] = 'e';
            out[n++] = e < 0 ? '-' : '+';
            if (e < 0) e = -e;
            if (e >= 100) { out[n++] = (char)('0' + e / 100); e %= 100; out[n++] = (char)('0' + e / 10); }
            else { out[n++] = (char)('0' + e / 10); }
            out[n++] = (char)('0' + e % 10);
        } else if (decpt <= 0) {
            out[n++] = '0'; out[n++] = '.';
            for (int i = 0; i < -decpt; i++) out[n++] = '0';
            memcpy(out + n, d, count); n += count;
        } else if (decpt >= count) {
            memcpy(out + n, d, count); n += count;
            for (int i = count; i < decpt; i++) out[n++] = '0';
            out[n++] = '.'; out[n++] = '0';
        } else {
            memcpy(out + n, d, decpt); n += decpt;
            out[n++] = '.';
            memcpy(out + n, d + decpt, count - decpt); n += count - decpt;
        }
        return n;
    }
    """
    int osprey_f32_repr(float f, char* out, int exact_only) nogil


# float32 values at least this large (2^-99, exponent field 28) are written as their
# shortest decimal; smaller ones (and zero) as the double ``repr`` writes them.
cdef int F32_MIN_EXPONENT_FIELD = 28


cdef struct Buf:
    char* data
    size_t size
    size_t cap


cdef int _grow(Buf* b, size_t extra) except -1:
    cdef size_t cap = b.cap
    cdef char* grown
    if b.size + extra <= cap:
        return 0
    while cap < b.size + extra:
        cap = cap * 2 if cap else 4096
    grown = <char*>realloc(b.data, cap)
    if grown == NULL:
        raise MemoryError("audit record buffer")
    b.data = grown
    b.cap = cap
    return 0


cdef inline int _put(Buf* b, const char* text, size_t n) except -1:
    if b.size + n > b.cap:
        _grow(b, n)
    memcpy(b.data + b.size, text, n)
    b.size += n
    return 0


cdef inline int _putc(Buf* b, char c) except -1:
    if b.size + 1 > b.cap:
        _grow(b, 1)
    b.data[b.size] = c
    b.size += 1
    return 0


cdef const char* HEX = "0123456789abcdef"


cdef int _put_str(Buf* b, str text) except -1:
    """A JSON string as ``json.dumps(text, ensure_ascii=False)`` writes it."""
    cdef Py_ssize_t n, i
    cdef const char* s = PyUnicode_AsUTF8AndSize(text, &n)
    cdef unsigned char c
    _grow(b, <size_t>n * 6 + 2)
    b.data[b.size] = b'"'
    b.size += 1
    for i in range(n):
        c = <unsigned char>s[i]
        if c >= 0x20 and c != b'"' and c != b'\\':
            b.data[b.size] = <char>c
            b.size += 1
            continue
        b.data[b.size] = b'\\'
        if c == b'"' or c == b'\\':
            b.data[b.size + 1] = <char>c
            b.size += 2
        elif c == b'\n':
            b.data[b.size + 1] = b'n'
            b.size += 2
        elif c == b'\r':
            b.data[b.size + 1] = b'r'
            b.size += 2
        elif c == b'\t':
            b.data[b.size + 1] = b't'
            b.size += 2
        elif c == 0x08:
            b.data[b.size + 1] = b'b'
            b.size += 2
        elif c == 0x0c:
            b.data[b.size + 1] = b'f'
            b.size += 2
        else:
            memcpy(b.data + b.size + 1, b"u00", 3)
            b.data[b.size + 4] = HEX[c >> 4]
            b.data[b.size + 5] = HEX[c & 15]
            b.size += 6
    b.data[b.size] = b'"'
    b.size += 1
    return 0


cdef int _put_int(Buf* b, long long value) except -1:
    cdef char tmp[24]
    cdef int n = snprintf(tmp, 24, "%lld", value)
    return _put(b, tmp, n)


cdef int _put_uint(Buf* b, unsigned long long value) except -1:
    cdef char tmp[24]
    cdef int n = snprintf(tmp, 24, "%llu", value)
    return _put(b, tmp, n)


cdef int _put_double(Buf* b, double value) except -1:
    cdef char* text
    cdef size_t n = 0
    if isnan(value):
        return _put(b, b'"NaN"', 5)
    if isinf(value):
        if value > 0:
            return _put(b, b'"Infinity"', 10)
        return _put(b, b'"-Infinity"', 11)
    text = PyOS_double_to_string(value, b'r', 0, Py_DTSF_ADD_DOT_0, NULL)
    while text[n] != 0:
        n += 1
    try:
        _put(b, text, n)
    finally:
        PyMem_Free(text)
    return 0


cdef int _put_optional_int(Buf* b, object value) except -1:
    if value is None:
        return _put(b, b"null", 4)
    return _put_int(b, value)


# -- time -----------------------------------------------------------------------------


cdef int _put_time(Buf* b, int64_t at_ns) except -1:
    """``at_ns`` (ns since the epoch, UTC) as ``datetime.isoformat(timespec=
    "microseconds")`` writes it: YYYY-MM-DDTHH:MM:SS.ffffff+00:00 (floored to µs)."""
    cdef int64_t us = at_ns // 1000 if at_ns >= 0 else -((-at_ns + 999) // 1000)
    cdef int64_t seconds = us // 1000000 if us >= 0 else -((-us + 999999) // 1000000)
    cdef int64_t micro = us - seconds * 1000000
    cdef int64_t days = seconds // 86400 if seconds >= 0 else -((-seconds + 86399) // 86400)
    cdef int64_t rest = seconds - days * 86400
    # civil_from_days (proleptic Gregorian), days since 1970-01-01
    cdef int64_t z = days + 719468
    cdef int64_t era = (z if z >= 0 else z - 146096) // 146097
    cdef int64_t doe = z - era * 146097
    cdef int64_t yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    cdef int64_t y = yoe + era * 400
    cdef int64_t doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    cdef int64_t mp = (5 * doy + 2) // 153
    cdef int64_t d = doy - (153 * mp + 2) // 5 + 1
    cdef int64_t m = mp + 3 if mp < 10 else mp - 9
    cdef char tmp[48]
    cdef int n
    if m <= 2:
        y += 1
    if y < 1 or y > 9999:
        raise ValueError(f"audit time out of range: {at_ns} ns")
    n = snprintf(tmp, 48, "\"%04lld-%02lld-%02lldT%02lld:%02lld:%02lld.%06lld+00:00\"",
                 <long long>y, <long long>m, <long long>d, <long long>(rest // 3600),
                 <long long>(rest % 3600 // 60), <long long>(rest % 60), <long long>micro)
    return _put(b, tmp, n)


# -- tensors --------------------------------------------------------------------------


cdef bint _native_dtype(cnp.ndarray array):
    cdef char kind = array.descr.kind
    cdef int size = array.descr.itemsize
    if kind == b'f':
        return size == 4 or size == 8
    if kind == b'i' or kind == b'u':
        return size == 1 or size == 2 or size == 4 or size == 8
    return kind == b'b'


cdef inline int _exponent_field(float value) noexcept:
    cdef unsigned int bits
    memcpy(&bits, &value, 4)
    return <int>((bits >> 23) & 0xFF)


cdef int _put_float32(Buf* b, float value) except -1:
    cdef int n
    cdef int field = _exponent_field(value)
    if field < F32_MIN_EXPONENT_FIELD or field == 0xFF:
        return _put_double(b, value)  # tiny, zero, NaN or infinite
    if b.size + 32 > b.cap:
        _grow(b, 32)
    n = osprey_f32_repr(value, b.data + b.size, 0)
    b.size += n
    return 0


def f32_repr(float value, bint exact_only=False):
    """The text the encoder writes for one float32 (``exact_only``: without the double
    fast path, to test the exact one)."""
    cdef char out[48]
    cdef int field = _exponent_field(value)
    if field < F32_MIN_EXPONENT_FIELD or field == 0xFF:
        return None
    return out[:osprey_f32_repr(value, out, exact_only)].decode()


cdef int _put_element(Buf* b, const char* p, char kind, int size) except -1:
    if kind == b'f':
        if size == 4:
            return _put_float32(b, (<const float*>p)[0])
        return _put_double(b, (<const double*>p)[0])
    if kind == b'b':
        if p[0]:
            return _put(b, b"true", 4)
        return _put(b, b"false", 5)
    if kind == b'i':
        if size == 1:
            return _put_int(b, (<const signed char*>p)[0])
        if size == 2:
            return _put_int(b, (<const short*>p)[0])
        if size == 4:
            return _put_int(b, (<const int*>p)[0])
        return _put_int(b, (<const long long*>p)[0])
    if size == 1:
        return _put_uint(b, (<const unsigned char*>p)[0])
    if size == 2:
        return _put_uint(b, (<const unsigned short*>p)[0])
    if size == 4:
        return _put_uint(b, (<const unsigned int*>p)[0])
    return _put_uint(b, (<const unsigned long long*>p)[0])


cdef int _put_nested(Buf* b, const char* p, cnp.npy_intp* shape, int ndim, int dim,
                     char kind, int size, Py_ssize_t* strides) except -1:
    cdef cnp.npy_intp i
    if dim == ndim:
        return _put_element(b, p, kind, size)
    _putc(b, b'[')
    for i in range(shape[dim]):
        if i:
            _putc(b, b',')
        _put_nested(b, p + i * strides[dim], shape, ndim, dim + 1, kind, size, strides)
    _putc(b, b']')
    return 0


cdef int _put_array(Buf* b, cnp.ndarray array) except -1:
    cdef Py_ssize_t strides[32]
    cdef int ndim = array.ndim
    cdef int k
    if not cnp.PyArray_ISNOTSWAPPED(array):
        array = array.astype(array.dtype.newbyteorder("="))
    for k in range(ndim):
        strides[k] = array.strides[k]
    return _put_nested(b, <const char*>cnp.PyArray_DATA(array), array.shape, ndim, 0,
                       array.descr.kind, array.descr.itemsize, strides)


cdef int _put_columns(Buf* b, dict columns, frozenset personal, object column_json) except -1:
    cdef bint first = True
    cdef str name
    _putc(b, b'{')
    for name in sorted(columns):
        if not first:
            _putc(b, b',')
        first = False
        _put_str(b, name)
        _putc(b, b':')
        value = columns[name]
        if (type(value) is np.ndarray and name not in personal and value.ndim <= 32
                and _native_dtype(value)):
            _put_array(b, value)
        else:
            text = column_json(value, name in personal)
            _put(b, text, len(text))
    _putc(b, b'}')
    return 0


def encode(entry, str stream_id, long long seq, object column_json):
    """The canonical bytes of ``entry`` as record ``seq`` of ``stream_id``.

    ``column_json(value, personal) -> bytes`` encodes a column this kernel leaves to
    Python (the same function the twin uses for every column)."""
    cdef Buf b
    b.data = NULL
    b.size = 0
    b.cap = 0
    personal = entry.personal
    try:
        _grow(&b, 1024)
        _put(&b, b'{"at":', 6)
        _put_time(&b, entry.at_ns)
        _put(&b, b',"caller":', 10)
        _put_str(&b, entry.caller)
        _put(&b, b',"decision_id":', 15)
        _put_str(&b, entry.decision_id)
        _put(&b, b',"error":', 9)
        _put_str(&b, entry.error)
        _put(&b, b',"inputs":', 10)
        _put_columns(&b, entry.inputs, personal, column_json)
        _put(&b, b',"latency_us":', 14)
        _put_int(&b, entry.latency_us)
        _put(&b, b',"model":', 9)
        _put_str(&b, entry.model)
        _put(&b, b',"outputs":', 11)
        _put_columns(&b, entry.outputs, frozenset(), column_json)
        _put(&b, b',"principal":', 13)
        _put_str(&b, entry.principal)
        _put(&b, b',"queue_us":', 12)
        _put_optional_int(&b, entry.queue_us)
        _put(&b, b',"request_id":', 14)
        _put_str(&b, entry.request_id)
        _put(&b, b',"route":', 9)
        _put_str(&b, entry.route)
        _put(&b, b',"routing_key":', 15)
        _put_str(&b, entry.routing_key)
        _put(&b, b',"rows":', 8)
        _put_int(&b, entry.rows)
        _put(&b, b',"seq":', 7)
        _put_int(&b, seq)
        _put(&b, b',"status":', 10)
        _put_str(&b, entry.status)
        _put(&b, b',"stream_id":', 13)
        _put_str(&b, stream_id)
        _put(&b, b',"trace_id":', 12)
        _put_str(&b, entry.trace_id)
        _put(&b, b',"version":', 11)
        _put_optional_int(&b, entry.version)
        _putc(&b, b'}')
        return PyBytes_FromStringAndSize(b.data, b.size)
    finally:
        free(b.data)


# -- split: the shipper's reading of a spool line ---------------------------------------

import json as _json


cdef inline Py_ssize_t _skip(const unsigned char* p, Py_ssize_t i, Py_ssize_t n) noexcept:
    while i < n and (p[i] == 32 or p[i] == 9 or p[i] == 10 or p[i] == 13):
        i += 1
    return i


cdef Py_ssize_t _string_end(const unsigned char* p, Py_ssize_t i, Py_ssize_t n,
                            bint* escaped) except -1:
    """``p[i]`` is an opening quote: the index after the closing one."""
    i += 1
    while i < n:
        if p[i] == 34:  # "
            return i + 1
        if p[i] == 92:  # backslash
            escaped[0] = True
            i += 2
            continue
        if p[i] < 32:
            raise ValueError(f"audit record: control character in a string at position {i}")
        i += 1
    raise ValueError(f"audit record: unterminated string at position {i}")


cdef object _string(const unsigned char* p, Py_ssize_t start, Py_ssize_t end, bint escaped):
    """The string whose quotes are at ``start`` and ``end - 1``."""
    if not escaped:
        return PyUnicode_DecodeUTF8(<const char*>p + start + 1, end - start - 2, NULL)
    try:
        return _json.loads(PyUnicode_DecodeUTF8(<const char*>p + start, end - start, NULL))
    except ValueError as exc:
        raise ValueError(f"audit record: bad string at position {start}: {exc}") from None


cdef Py_ssize_t _nested_end(const unsigned char* p, Py_ssize_t i, Py_ssize_t n) except -1:
    """``p[i]`` opens an object or array: the index after the bracket that closes it."""
    cdef int depth = 0
    cdef bint escaped = False
    cdef unsigned char c
    while i < n:
        c = p[i]
        if c == 34:
            i = _string_end(p, i, n, &escaped)
            continue
        if c == 123 or c == 91:  # { [
            depth += 1
        elif c == 125 or c == 93:  # } ]
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ValueError(f"audit record: unterminated object or array at position {i}")


cdef object _scalar(const unsigned char* p, Py_ssize_t start, Py_ssize_t end):
    cdef Py_ssize_t k
    cdef bint real = False
    cdef bytes text = PyBytes_FromStringAndSize(<const char*>p + start, end - start)
    if text == b"true":
        return True
    if text == b"false":
        return False
    if text == b"null":
        return None
    if end == start:
        raise ValueError(f"audit record: missing value at position {start}")
    for k in range(start, end):
        if p[k] == 46 or p[k] == 101 or p[k] == 69:  # . e E
            real = True
        elif not (48 <= p[k] <= 57 or p[k] == 45 or (
                p[k] == 43 and k > start and (p[k - 1] == 101 or p[k - 1] == 69))):
            raise ValueError(f"audit record: bad value at position {start}")
    try:
        return float(text) if real else int(text)
    except ValueError:
        raise ValueError(f"audit record: bad number at position {start}") from None


cdef dict _closed(const unsigned char* p, Py_ssize_t i, Py_ssize_t n, dict out):
    """``p[i]`` closes the object: ``out``, if nothing but whitespace follows."""
    i = _skip(p, i + 1, n)
    if i != n:
        raise ValueError(f"audit record: data after the object at position {i}")
    return out


def split(bytes line):
    """See ``native.audit_record_py.split``: the same values for every line."""
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(line)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(line)
    cdef Py_ssize_t i, start, end
    cdef bint escaped
    cdef dict out = {}
    i = _skip(p, 0, n)
    if i >= n or p[i] != 123:
        raise ValueError(f"audit record: expected '{{' at position {i}")
    i = _skip(p, i + 1, n)
    if i < n and p[i] == 125:
        return _closed(p, i, n, out)
    while True:
        if i >= n or p[i] != 34:
            raise ValueError(f"audit record: expected a key at position {i}")
        escaped = False
        end = _string_end(p, i, n, &escaped)
        key = _string(p, i, end, escaped)
        i = _skip(p, end, n)
        if i >= n or p[i] != 58:  # :
            raise ValueError(f"audit record: expected ':' at position {i}")
        i = _skip(p, i + 1, n)
        if i >= n:
            raise ValueError(f"audit record: missing value at position {i}")
        start = i
        if p[i] == 34:
            escaped = False
            end = _string_end(p, i, n, &escaped)
            out[key] = _string(p, start, end, escaped)
        elif p[i] == 123 or p[i] == 91:
            end = _nested_end(p, i, n)
            out[key] = PyUnicode_DecodeUTF8(<const char*>p + start, end - start, NULL)
        else:
            end = i
            while end < n and p[end] != 44 and p[end] != 125 and p[end] != 93 and not (
                    p[end] == 32 or p[end] == 9 or p[end] == 10 or p[end] == 13):
                end += 1
            out[key] = _scalar(p, start, end)
        i = _skip(p, end, n)
        if i < n and p[i] == 44:  # ,
            i = _skip(p, i + 1, n)
            continue
        if i < n and p[i] == 125:
            return _closed(p, i, n, out)
        raise ValueError(f"audit record: expected ',' or '}}' at position {i}")
