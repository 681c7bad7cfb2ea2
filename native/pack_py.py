"""Pure-NumPy twin of ``native._pack``: batch packing and splitting.

``pack`` gathers the tensors that several requests sent for one input (each
``[n_i, ...]``, same dtype and trailing shape) into one contiguous ``[sum n_i, ...]``
batch plus int64 row offsets ``[k + 1]``; ``split`` turns a model output and those
offsets back into per-request views (no copy). ``pack_bytes`` concatenates KServe
BYTES buffers (4-byte little-endian length + payload per element) after checking
that each holds exactly its declared element count, returning element offsets.

This module is the specification the Cython kernel is tested against; it is
vectorised per part (never per row), except for walking BYTES length prefixes.
``native.pack`` picks one of the two.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from itertools import accumulate

import numpy as np
import numpy.typing as npt

OFFSET_DTYPE = np.dtype(np.int64)  # mirrors ``offset_t`` in _pack.pyx

_LENGTH = struct.Struct("<I")


def _offsets(sizes: list[int]) -> npt.NDArray[np.int64]:
    """``[0, s0, s0 + s1, ...]`` as int64 (running sums of ``sizes``)."""
    return np.fromiter(accumulate(sizes, initial=0), dtype=OFFSET_DTYPE, count=len(sizes) + 1)


def _check_parts(parts: list[np.ndarray]) -> None:
    """ValueError/TypeError naming the first part that cannot join part 0."""
    if len(parts) == 0:
        raise ValueError("pack needs at least one part")
    first = parts[0]
    for i, part in enumerate(parts):
        if not isinstance(part, np.ndarray):
            raise TypeError(f"part {i} is a {type(part).__name__}, not a NumPy array")
        if part.ndim == 0:
            raise ValueError(f"part {i} is 0-d; parts need a leading row dimension")
        if i == 0:
            continue
        if part.dtype != first.dtype:
            raise ValueError(f"part {i} has dtype {part.dtype}, part 0 has dtype {first.dtype}")
        if part.shape[1:] != first.shape[1:]:
            raise ValueError(
                f"part {i} has trailing shape {part.shape[1:]}, "
                f"part 0 has trailing shape {first.shape[1:]}"
            )


def pack(parts: Iterable[np.ndarray]) -> tuple[np.ndarray, npt.NDArray[np.int64]]:
    """Concatenate ``parts`` along axis 0 into one new C-contiguous array.

    Returns ``(batch, offsets)``: part ``i`` is ``batch[offsets[i]:offsets[i + 1]]``.
    Parts must share dtype (``<f4`` and ``=f4`` agree; ``>f4`` does not) and
    trailing shape; a non-contiguous part is gathered by NumPy.
    ValueError names the part that differs (TypeError for a part that is not an
    array).
    """
    parts = list(parts)
    # NumPy checks ranks, trailing shapes and (with casting="no") dtypes itself; only
    # a batch it refuses is walked part by part, to name the part that differs.
    if not parts or not all(issubclass(t, np.ndarray) for t in set(map(type, parts))):
        _check_parts(parts)
    try:
        rows = list(map(len, parts))  # TypeError for a 0-d part
        batch = np.concatenate(parts, axis=0, dtype=parts[0].dtype, casting="no")
    except (TypeError, ValueError):
        _check_parts(parts)
        raise
    return batch, _offsets(rows)


def _check_offsets(batch: np.ndarray, offsets: npt.ArrayLike) -> npt.NDArray[np.int64]:
    if not isinstance(batch, np.ndarray):
        raise TypeError(f"batch is a {type(batch).__name__}, not a NumPy array")
    if batch.ndim == 0:
        raise ValueError("batch is 0-d; it needs a leading row dimension")
    arr = np.asarray(offsets)
    if arr.ndim != 1 or arr.shape[0] == 0 or arr.dtype.kind not in "iu":
        raise ValueError(
            f"offsets must be a 1-D integer array with at least one entry "
            f"(got shape {arr.shape}, dtype {arr.dtype})"
        )
    arr = arr.astype(OFFSET_DTYPE, casting="unsafe", copy=False)
    if arr[0] != 0:
        raise ValueError(f"offsets must start at 0 (offsets[0] is {int(arr[0])})")
    drops = np.flatnonzero(arr[1:] < arr[:-1])
    if drops.size:
        i = int(drops[0])
        raise ValueError(
            f"offsets are not monotonic: offsets[{i + 1}] = {int(arr[i + 1])} < "
            f"offsets[{i}] = {int(arr[i])}"
        )
    if arr[-1] != batch.shape[0]:
        raise ValueError(f"offsets end at {int(arr[-1])} but the batch has {batch.shape[0]} rows")
    return arr


def split(batch: np.ndarray, offsets: npt.ArrayLike) -> list[np.ndarray]:
    """Views ``batch[offsets[i]:offsets[i + 1]]`` for each part (no copy).

    ``offsets`` must start at 0, never decrease and end at ``batch.shape[0]``;
    ValueError says which of these fails.
    """
    arr = _check_offsets(batch, offsets)
    bounds = arr.tolist()
    return [batch[bounds[i] : bounds[i + 1]] for i in range(len(bounds) - 1)]


def pack_bytes(
    buffers: Iterable[bytes | bytearray | memoryview], counts: Iterable[int]
) -> tuple[bytes, npt.NDArray[np.int64]]:
    """Concatenate KServe BYTES buffers; part ``i`` must hold exactly ``counts[i]``.

    Returns ``(buffer, offsets)`` where part ``i``'s elements are numbers
    ``offsets[i]`` to ``offsets[i + 1]`` of the concatenated buffer. ValueError names
    the part (and element) that is malformed.
    """
    buffers, counts = list(buffers), list(counts)
    if len(buffers) != len(counts):
        raise ValueError(f"pack_bytes got {len(buffers)} buffers but {len(counts)} counts")
    for i, (buf, count) in enumerate(zip(buffers, counts, strict=True)):
        if count < 0:
            raise ValueError(f"BYTES part {i}: count {count} is negative")
        view = memoryview(buf).cast("B")
        pos, end = 0, len(view)
        for j in range(count):
            if pos + 4 > end:
                raise ValueError(
                    f"BYTES part {i}: element {j} has a truncated length prefix "
                    f"(needs 4 bytes at offset {pos}, buffer is {end} bytes)"
                )
            (length,) = _LENGTH.unpack_from(view, pos)
            pos += 4
            if length > end - pos:
                raise ValueError(
                    f"BYTES part {i}: element {j} declares {length} bytes at offset {pos} "
                    f"but only {end - pos} remain"
                )
            pos += length
        if pos != end:
            raise ValueError(
                f"BYTES part {i}: holds more than the {count} elements declared "
                f"({end - pos} bytes left over)"
            )
    return b"".join(buffers), _offsets(counts)
