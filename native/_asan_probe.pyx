# cython: language_level=3, boundscheck=False, wraparound=False
"""A planted heap overflow, built only by ``make sanitize`` (OSPREY_SANITIZE=address).

The sanitizer target runs it and requires AddressSanitizer to abort with a
heap-buffer-overflow report: proof that the native tests really ran instrumented.
Never built into a normal install.
"""

from libc.stdlib cimport free, malloc


def read_past_end(Py_ssize_t n):
    """Read one byte past an ``n``-byte heap block (undefined behaviour on purpose)."""
    cdef unsigned char* block = <unsigned char*>malloc(n)
    cdef unsigned char value
    if block == NULL:
        raise MemoryError()
    for i in range(n):
        block[i] = <unsigned char>i
    value = block[n]
    free(block)
    return value
