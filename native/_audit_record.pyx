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
the Schubfach algorithm (three 64x64-bit products per value, ~15 ns; the twin finds
them with exact fractions). Any other column (BYTES, personal data, object arrays) is
encoded by the ``column_json`` callback, so the bytes are the twin's in every case;
the tests compare them.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DecodeUTF8
from libc.math cimport isinf, isnan
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memchr, memcmp, memcpy

import numpy as np

cimport numpy as cnp

cnp.import_array()


cdef extern from "Python.h":
    char* PyOS_double_to_string(double val, char format_code, int precision, int flags,
                                int* ptype) except NULL
    int Py_DTSF_ADD_DOT_0


cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>

    /* Schubfach (R. Giulietti, "The Schubfach way to render doubles", 2020), float32
       variant: the shortest decimal in the float's rounding interval, the closest such
       one (ties to even), from three 64x64-bit multiplications. OSPREY_G1[k + 45] is
       the high 63 bits of floor(beta) + 1, where 10^-k = beta * 2^r and
       2^125 <= beta < 2^126, for k in [-45, 31]; tests/native/test_audit_record.py
       recomputes it with Python integers. */
    static const uint64_t OSPREY_G1[77] = {
        0x59aedfc10d7279c5ULL, 0x47bf19673df52e37ULL, 0x72cb5bd86321e38cULL,
        0x5bd5e313828182d6ULL, 0x4977e8dc68679bdfULL, 0x758ca7c70d7292feULL,
        0x5e0a1fd271287598ULL, 0x4b3b4ca85a86c47aULL, 0x785ee10d5da46d90ULL,
        0x604be73de4838ad9ULL, 0x4d0985cb1d3608aeULL, 0x7b426fab61f00de3ULL,
        0x629b8c891b267182ULL, 0x4ee2d6d415b85aceULL, 0x7e37be2022c0914bULL,
        0x64f964e68233a76fULL, 0x50c783eb9b5c85f2ULL, 0x409f9cbc7c4a04c2ULL,
        0x6765c793fa10079dULL, 0x52b7d2dcc80cd2e4ULL, 0x422ca8b0a00a4250ULL,
        0x69e10de76676d080ULL, 0x54b40b1f852bda00ULL, 0x43c33c1937564800ULL,
        0x6c6b935b8bbd4000ULL, 0x56bc75e2d6310000ULL, 0x4563918244f40000ULL,
        0x6f05b59d3b200000ULL, 0x58d15e1762800000ULL, 0x470de4df82000000ULL,
        0x71afd498d0000000ULL, 0x5af3107a40000000ULL, 0x48c2739500000000ULL,
        0x746a528800000000ULL, 0x5d21dba000000000ULL, 0x4a817c8000000000ULL,
        0x7735940000000000ULL, 0x5f5e100000000000ULL, 0x4c4b400000000000ULL,
        0x7a12000000000000ULL, 0x61a8000000000000ULL, 0x4e20000000000000ULL,
        0x7d00000000000000ULL, 0x6400000000000000ULL, 0x5000000000000000ULL,
        0x4000000000000000ULL, 0x6666666666666666ULL, 0x51eb851eb851eb85ULL,
        0x4189374bc6a7ef9dULL, 0x68db8bac710cb295ULL, 0x53e2d6238da3c211ULL,
        0x431bde82d7b634daULL, 0x6b5fca6af2bd215eULL, 0x55e63b88c230e77eULL,
        0x44b82fa09b5a52cbULL, 0x6df37f675ef6eadfULL, 0x57f5ff85e592557fULL,
        0x465e6604b7a84465ULL, 0x709709a125da0709ULL, 0x5a126e1a84ae6c07ULL,
        0x480ebe7b9d58566cULL, 0x734aca5f6226f0adULL, 0x5c3bd5191b525a24ULL,
        0x49c97747490eae83ULL, 0x760f253edb4ab0d2ULL, 0x5e72843249088d75ULL,
        0x4b8ed0283a6d3df7ULL, 0x78e480405d7b9658ULL, 0x60b6cd004ac94513ULL,
        0x4d5f0a66a23a9da9ULL, 0x7bcb43d769f762a8ULL, 0x63090312bb2c4eedULL,
        0x4f3a68dbc8f03f24ULL, 0x7ec3daf941806506ULL, 0x65697bfa9acd1d9fULL,
        0x51212ffbaf0a7e18ULL, 0x40e7599625a1fe7aULL
    };

    static inline int64_t osprey_flog10pow2(int64_t e) { return (e * 661971961083LL) >> 41; }
    static inline int64_t osprey_flog10_three_quarters_pow2(int64_t e) {
        return (e * 661971961083LL - 274743187321LL) >> 41;
    }
    static inline int64_t osprey_flog2pow10(int64_t e) { return (e * 913124641741LL) >> 38; }

    /* The high part of g * cp, rounded to odd (a sticky bit for what was cut off). */
    static inline int64_t osprey_rop(uint64_t g, uint64_t cp) {
        uint64_t x1 = (uint64_t)(((unsigned __int128)g * cp) >> 64);
        return (int64_t)((x1 >> 31) | (((x1 & 0xFFFFFFFFULL) + 0xFFFFFFFFULL) >> 32));
    }

    /* float32 c * 2^q (c < 2^24 normal, q >= -149) as decimal *f * 10^*e, shortest. */
    static void osprey_schubfach(int64_t c, int64_t q, uint64_t* f, int* e) {
        int64_t out = c & 1, cb = c << 2, cbr = cb + 2, cbl, k;
        if (c != (1 << 23) || q == -149) {
            cbl = cb - 2;
            k = osprey_flog10pow2(q);
        } else {  /* a power of two: the interval below is half as wide */
            cbl = cb - 1;
            k = osprey_flog10_three_quarters_pow2(q);
        }
        int64_t h = q + osprey_flog2pow10(-k) + 33;
        uint64_t g = OSPREY_G1[k + 45] + 1;
        int64_t vb = osprey_rop(g, (uint64_t)cb << h);
        int64_t vbl = osprey_rop(g, (uint64_t)cbl << h);
        int64_t vbr = osprey_rop(g, (uint64_t)cbr << h);
        int64_t s = vb >> 2;
        *e = (int)k;
        if (s >= 100) {  /* one digit fewer, if a multiple of 10 is in the interval */
            int64_t sp10 = 10 * (s / 10), tp10 = sp10 + 10;
            int upin = vbl + out <= sp10 << 2, wpin = (tp10 << 2) + out <= vbr;
            if (upin != wpin) { *f = (uint64_t)(upin ? sp10 : tp10); return; }
        }
        int64_t t = s + 1;
        int uin = vbl + out <= s << 2, win = (t << 2) + out <= vbr;
        if (uin != win) { *f = (uint64_t)(uin ? s : t); return; }
        int64_t cmp = vb - ((s + t) << 1);  /* both in: the closer, ties to even */
        *f = (uint64_t)(cmp < 0 || (cmp == 0 && (s & 1) == 0) ? s : t);
    }

    /* Writes the float32 f (finite, |f| >= 2^-99) as Python's repr writes the double
       nearest to its shortest round-trip decimal; returns the length. */
    static int osprey_f32_repr(float f, char* out) {
        uint32_t bits;
        memcpy(&bits, &f, 4);
        int neg = bits >> 31, exp = (bits >> 23) & 0xFF, n = 0;
        uint64_t c;
        int q;
        osprey_schubfach((int64_t)((bits & 0x7FFFFF) | 0x800000u), (int64_t)exp - 150, &c, &q);
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
    int osprey_f32_repr(float f, char* out) nogil


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


cdef int _put_uint(Buf* b, unsigned long long value) except -1:
    """Decimal digits, written backwards into a scratch buffer (no printf: its format
    parsing cost more than the digits)."""
    cdef char tmp[24]
    cdef int i = 24
    while True:
        i -= 1
        tmp[i] = <char>(48 + value % 10)
        value //= 10
        if value == 0:
            break
    return _put(b, tmp + i, 24 - i)


cdef int _put_int(Buf* b, long long value) except -1:
    if value < 0:
        _putc(b, b'-')
        return _put_uint(b, <unsigned long long>0 - <unsigned long long>value)
    return _put_uint(b, <unsigned long long>value)


cdef inline void _digits(char* out, int64_t value, int width) noexcept:
    """``value`` (0 <= value < 10^width) as exactly ``width`` digits."""
    cdef int i
    for i in range(width - 1, -1, -1):
        out[i] = <char>(48 + value % 10)
        value //= 10


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
    if m <= 2:
        y += 1
    if y < 1 or y > 9999:
        raise ValueError(f"audit time out of range: {at_ns} ns")
    memcpy(tmp, b'"0000-00-00T00:00:00.000000+00:00"', 34)
    _digits(tmp + 1, y, 4)
    _digits(tmp + 6, m, 2)
    _digits(tmp + 9, d, 2)
    _digits(tmp + 12, rest // 3600, 2)
    _digits(tmp + 15, rest % 3600 // 60, 2)
    _digits(tmp + 18, rest % 60, 2)
    _digits(tmp + 21, micro, 6)
    return _put(b, tmp, 34)


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
    n = osprey_f32_repr(value, b.data + b.size)
    b.size += n
    return 0


def f32_repr(float value):
    """The text the encoder writes for one float32; None where it leaves the value to
    ``repr`` (|value| < 2^-99, zero, NaN, infinities)."""
    cdef char out[48]
    cdef int field = _exponent_field(value)
    if field < F32_MIN_EXPONENT_FIELD or field == 0xFF:
        return None
    return out[:osprey_f32_repr(value, out)].decode()


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


def frame(bytes body, bytes chain, bytes declared):
    """See ``native.audit_record_py.frame``: the spool line of a signed record."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(body), c = PyBytes_GET_SIZE(chain)
    cdef Py_ssize_t d = PyBytes_GET_SIZE(declared), k
    cdef const unsigned char* h = <const unsigned char*>PyBytes_AS_STRING(chain)
    cdef bytes out
    cdef char* o
    if n < 2 or PyBytes_AS_STRING(body)[n - 1] != b'}':
        raise ValueError("audit record: the body is not a JSON object")
    out = PyBytes_FromStringAndSize(NULL, n - 1 + 10 + 2 * c + 13 + d + 2)
    o = PyBytes_AS_STRING(out)
    memcpy(o, PyBytes_AS_STRING(body), n - 1)
    o += n - 1
    memcpy(o, b',"chain":"', 10)
    o += 10
    for k in range(c):
        o[2 * k] = HEX[h[k] >> 4]
        o[2 * k + 1] = HEX[h[k] & 15]
    o += 2 * c
    memcpy(o, b'","declared":', 13)
    o += 13
    memcpy(o, PyBytes_AS_STRING(declared), d)
    o += d
    o[0] = b'}'
    o[1] = b'\n'
    return out


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
    """A JSON literal or number; integers of up to 18 digits without a bytes object."""
    cdef Py_ssize_t k, length = end - start, first
    cdef bint real = False
    cdef long long value = 0
    if length == 4 and memcmp(p + start, b"true", 4) == 0:
        return True
    if length == 5 and memcmp(p + start, b"false", 5) == 0:
        return False
    if length == 4 and memcmp(p + start, b"null", 4) == 0:
        return None
    if length == 0:
        raise ValueError(f"audit record: missing value at position {start}")
    for k in range(start, end):
        if p[k] == 46 or p[k] == 101 or p[k] == 69:  # . e E
            real = True
        elif not (48 <= p[k] <= 57 or p[k] == 45 or (
                p[k] == 43 and k > start and (p[k - 1] == 101 or p[k - 1] == 69))):
            raise ValueError(f"audit record: bad value at position {start}")
    if not real:
        first = start + 1 if p[start] == 45 else start
        if 0 < end - first <= 18:
            for k in range(first, end):
                if p[k] < 48 or p[k] > 57:
                    break
                value = value * 10 + (p[k] - 48)
            else:
                return -value if first > start else value
    text = PyBytes_FromStringAndSize(<const char*>p + start, length)
    try:
        return float(text) if real else int(text)
    except ValueError:
        raise ValueError(f"audit record: bad number at position {start}") from None


cdef object _value(const unsigned char* p, Py_ssize_t i, Py_ssize_t n, Py_ssize_t* end):
    """The ``: value`` after a key that ends at ``i``: strings, numbers, booleans and
    null as Python values, objects and arrays as their exact text; ``end[0]`` is the
    index after the value."""
    cdef Py_ssize_t start, stop
    cdef bint escaped = False
    i = _skip(p, i, n)
    if i >= n or p[i] != 58:  # :
        raise ValueError(f"audit record: expected ':' at position {i}")
    i = _skip(p, i + 1, n)
    if i >= n:
        raise ValueError(f"audit record: missing value at position {i}")
    start = i
    if p[i] == 34:
        stop = _string_end(p, i, n, &escaped)
        end[0] = stop
        return _string(p, start, stop, escaped)
    if p[i] == 123 or p[i] == 91:
        stop = _nested_end(p, i, n)
        end[0] = stop
        return PyUnicode_DecodeUTF8(<const char*>p + start, stop - start, NULL)
    stop = i
    while stop < n and p[stop] != 44 and p[stop] != 125 and p[stop] != 93 and not (
            p[stop] == 32 or p[stop] == 9 or p[stop] == 10 or p[stop] == 13):
        stop += 1
    end[0] = stop
    return _scalar(p, start, stop)


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
    cdef Py_ssize_t i, end
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
        out[key] = _value(p, end, n, &end)
        i = _skip(p, end, n)
        if i < n and p[i] == 44:  # ,
            i = _skip(p, i + 1, n)
            continue
        if i < n and p[i] == 125:
            return _closed(p, i, n, out)
        raise ValueError(f"audit record: expected ',' or '}}' at position {i}")


# -- records: a whole segment's lines, the fields the shipper wants, as tuples ---------------

cdef enum:
    ORDER_SLOTS = 64


cdef class _Fields:
    """The wanted keys as UTF-8, and the order the previous line gave them in (a spool's
    lines share one layout, so each key is matched at its first comparison)."""
    cdef tuple names
    cdef list encoded
    cdef const char** text
    cdef Py_ssize_t* length
    cdef Py_ssize_t count
    cdef Py_ssize_t order[ORDER_SLOTS]

    def __cinit__(self, tuple names):
        cdef Py_ssize_t i
        self.names = names
        self.count = len(names)
        self.encoded = [str(name).encode() for name in names]
        self.text = <const char**>malloc(max(1, self.count) * sizeof(char*))
        self.length = <Py_ssize_t*>malloc(max(1, self.count) * sizeof(Py_ssize_t))
        if self.text == NULL or self.length == NULL:
            raise MemoryError("audit record fields")
        for i in range(self.count):
            self.text[i] = PyBytes_AS_STRING(self.encoded[i])
            self.length[i] = PyBytes_GET_SIZE(self.encoded[i])
        for i in range(ORDER_SLOTS):
            self.order[i] = -1

    def __dealloc__(self):
        free(self.text)
        free(self.length)

    cdef Py_ssize_t find(self, const unsigned char* key, Py_ssize_t n, Py_ssize_t position):
        """The index of the key ``key[:n]`` (unescaped UTF-8), or -1."""
        cdef Py_ssize_t i
        if position < ORDER_SLOTS:
            i = self.order[position]
            if i >= 0 and self.length[i] == n and memcmp(self.text[i], key, n) == 0:
                return i
        for i in range(self.count):
            if self.length[i] == n and memcmp(self.text[i], key, n) == 0:
                if position < ORDER_SLOTS:
                    self.order[position] = i
                return i
        return -1


cdef tuple _record(const unsigned char* p, Py_ssize_t n, _Fields fields):
    """One line as the tuple of ``fields`` (None where a key is absent); every value
    is read and checked, wanted or not, as ``split`` reads it."""
    cdef list values = [None] * fields.count
    cdef Py_ssize_t i, end, slot, position = 0
    cdef bint escaped
    i = _skip(p, 0, n)
    if i >= n or p[i] != 123:
        raise ValueError(f"audit record: expected '{{' at position {i}")
    i = _skip(p, i + 1, n)
    if i < n and p[i] == 125:
        _closed(p, i, n, None)
        return tuple(values)
    while True:
        if i >= n or p[i] != 34:
            raise ValueError(f"audit record: expected a key at position {i}")
        escaped = False
        end = _string_end(p, i, n, &escaped)
        if escaped:
            key = _string(p, i, end, True)
            slot = fields.names.index(key) if key in fields.names else -1
        else:
            slot = fields.find(p + i + 1, end - i - 2, position)
            if slot < 0:
                _string(p, i, end, False)  # still UTF-8, as split would find
        position += 1
        value = _value(p, end, n, &end)
        if slot >= 0:
            values[slot] = value
        i = _skip(p, end, n)
        if i < n and p[i] == 44:  # ,
            i = _skip(p, i + 1, n)
            continue
        if i < n and p[i] == 125:
            _closed(p, i, n, None)
            return tuple(values)
        raise ValueError(f"audit record: expected ',' or '}}' at position {i}")


def records(bytes data, tuple fields):
    """See ``native.audit_record_py.records``: the same tuples for every segment."""
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t start = 0, end, line = 0
    cdef const unsigned char* newline
    cdef _Fields wanted = _Fields(fields)
    cdef list out = []
    while n > 0 and p[n - 1] == 0:
        n -= 1
    while start < n:
        newline = <const unsigned char*>memchr(p + start, 10, n - start)
        end = newline - p if newline != NULL else n
        line += 1
        if end > start:
            try:
                out.append(_record(p + start, end - start, wanted))
            except ValueError as exc:
                if newline == NULL:  # the last line, cut short by a crash
                    return out, end - start
                raise ValueError(f"line {line}: {exc}") from None
        start = end + 1
    return out, 0
