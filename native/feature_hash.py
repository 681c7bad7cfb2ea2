"""``osprey-fnv1a64-mix``: the seeded 64-bit hash of categorical values.

Definition (all arithmetic modulo 2**64, bytes as unsigned)::

    mix64(z):   z ^= z >> 30; z *= 0xBF58476D1CE4E5B9
                z ^= z >> 27; z *= 0x94D049BB133111EB
                z ^= z >> 31                      # the splitmix64 finalizer
    init(seed): 0xCBF29CE484222325 ^ mix64(seed)  # FNV-1a 64 offset basis, seeded
    hash(data, seed):
        h = init(seed)
        for b in data: h ^= b; h *= 0x100000001B3 # FNV-1a 64 (prime 2**40 + 0x1B3)
        return mix64(h)

``seed`` is an integer in [0, 2**64). The seed enters through ``mix64`` so that
neighbouring seeds (0, 1, 2...) start from unrelated states; the finalizer spreads
FNV's weak low bits over the whole word, so ``hash % buckets`` is uniform. The hash
is stable across runs, hosts and Python versions (no ``PYTHONHASHSEED``). It is not
a cryptographic hash: lookups verify the bytes, and personal data is keyed elsewhere.

``hash_bytes`` is the scalar reference (Python integers); ``hash_elements`` is the
vectorised form the NumPy twin uses: one pass per byte position, never per element.
The Cython kernel computes ``init(seed)`` nowhere: the plan stores it per column.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FNV_OFFSET_BASIS = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
MIX_MULTIPLIER_1 = 0xBF58476D1CE4E5B9
MIX_MULTIPLIER_2 = 0x94D049BB133111EB
MASK64 = (1 << 64) - 1
HASH_NAME = "osprey-fnv1a64-mix"

_U64 = np.uint64


def mix64(z: int) -> int:
    """The splitmix64 finalizer on a Python integer (taken modulo 2**64)."""
    z &= MASK64
    z = ((z ^ (z >> 30)) * MIX_MULTIPLIER_1) & MASK64
    z = ((z ^ (z >> 27)) * MIX_MULTIPLIER_2) & MASK64
    return z ^ (z >> 31)


def hash_init(seed: int) -> int:
    """The starting state for ``seed``: what a plan stores as ``hash_init``."""
    if not 0 <= seed <= MASK64:
        raise ValueError(f"hash seed must be in [0, 2**64), got {seed}")
    return FNV_OFFSET_BASIS ^ mix64(seed)


def hash_bytes(data: bytes, seed: int = 0) -> int:
    """The hash of one value: the scalar reference the vectorised forms must equal."""
    h = hash_init(seed)
    for b in data:
        h = ((h ^ b) * FNV_PRIME) & MASK64
    return mix64(h)


def mix64_array(z: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """``mix64`` element-wise on a uint64 array (returns a new array)."""
    z = z.copy()
    z ^= z >> _U64(30)
    z *= _U64(MIX_MULTIPLIER_1)
    z ^= z >> _U64(27)
    z *= _U64(MIX_MULTIPLIER_2)
    z ^= z >> _U64(31)
    return z


def active_counts(lengths_desc: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """For lengths sorted descending, how many elements are longer than each position.

    ``active[p]`` is the number of elements with ``length > p``, for p in
    ``[0, max length)``: since the lengths are sorted descending, those elements are
    exactly the first ``active[p]``, so a byte-position loop can work on a prefix.
    """
    if lengths_desc.size == 0 or lengths_desc[0] == 0:
        return np.zeros(0, dtype=np.int64)
    ascending = lengths_desc[::-1]
    positions = np.arange(int(lengths_desc[0]), dtype=np.int64)
    below_or_at = np.searchsorted(ascending, positions, side="right")
    return (lengths_desc.size - below_or_at).astype(np.int64)


def hash_elements(
    data: npt.NDArray[np.uint8],
    starts: npt.NDArray[np.int64],
    lengths: npt.NDArray[np.int64],
    init: int,
) -> npt.NDArray[np.uint64]:
    """Hash every element ``data[starts[i] : starts[i] + lengths[i]]`` from state ``init``.

    Vectorised over elements: the elements are ordered longest first, and position
    ``p`` updates the prefix of elements longer than ``p`` in one array operation.
    """
    n = starts.shape[0]
    order = np.argsort(-lengths, kind="stable")
    lengths_desc = lengths[order]
    cursor = starts[order].astype(np.int64, copy=True)
    state = np.full(n, init, dtype=np.uint64)
    prime = _U64(FNV_PRIME)
    for k in active_counts(lengths_desc).tolist():
        head = state[:k]
        head ^= data[cursor[:k]].astype(np.uint64)
        head *= prime
        cursor[:k] += 1
    out = np.empty(n, dtype=np.uint64)
    out[order] = mix64_array(state)
    return out


def equal_elements(
    data: npt.NDArray[np.uint8],
    starts: npt.NDArray[np.int64],
    lengths: npt.NDArray[np.int64],
    keys: npt.NDArray[np.uint8],
    key_starts: npt.NDArray[np.int64],
    key_lengths: npt.NDArray[np.int64],
) -> npt.NDArray[np.bool_]:
    """Element-wise: does element ``i`` of ``data`` equal key ``i`` of ``keys``, byte for byte?"""
    equal = lengths == key_lengths
    rows = np.flatnonzero(equal)
    order = rows[np.argsort(-lengths[rows], kind="stable")]
    cursor = starts[order].astype(np.int64, copy=True)
    key_cursor = key_starts[order].astype(np.int64, copy=True)
    same = np.ones(order.shape[0], dtype=np.bool_)
    for k in active_counts(lengths[order]).tolist():
        same[:k] &= data[cursor[:k]] == keys[key_cursor[:k]]
        cursor[:k] += 1
        key_cursor[:k] += 1
    equal[order] = same
    return equal
