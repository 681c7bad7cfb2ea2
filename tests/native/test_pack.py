"""Batch pack / split: the Cython kernel must agree with its pure-NumPy twin."""

from __future__ import annotations

import os
import subprocess
import sys
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from native import bytes_codec_py, pack, pack_py

try:
    from native import _pack
except ImportError:  # reported by test_extension_loaded
    _pack = None  # type: ignore[assignment]

IMPLEMENTATIONS = {"py": pack_py, "c": _pack}

try:
    import ml_dtypes

    BF16: list[np.dtype] = [np.dtype(ml_dtypes.bfloat16)]
except ImportError:  # pragma: no cover - depends on the environment
    BF16 = []

# Every KServe datatype as the server holds it (BYTES as object arrays of str), plus
# a big-endian spelling that must not be mixed with the little-endian one.
DTYPES = [
    np.dtype(t)
    for t in ("?", "<i1", "<i2", "<i4", "<i8", "<u1", "<u2", "<u4", "<u8", "<f2", "<f4", "<f8",
              ">f4", "O")
] + BF16


@pytest.fixture(params=["py", "c"])
def impl(request: pytest.FixtureRequest) -> ModuleType:
    module = IMPLEMENTATIONS[request.param]
    assert module is not None, "the Cython extension native._pack is not built"
    return module


def _c() -> ModuleType:
    assert _pack is not None, "the Cython extension native._pack is not built"
    return _pack


def test_extension_loaded() -> None:
    """Fails when the build silently skipped the extension (unless told to)."""
    if os.environ.get("OSPREY_NO_EXTENSIONS") == "1":
        assert not pack.EXTENSION_LOADED
        assert pack.pack is pack_py.pack
    else:
        assert pack.EXTENSION_LOADED, "native._pack failed to import"
        assert pack.pack is _c().pack


def test_no_extensions_switch_forces_the_twin() -> None:
    code = "from native import pack as p; print(p.EXTENSION_LOADED, p.split.__module__)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "OSPREY_NO_EXTENSIONS": "1"},
        capture_output=True, text=True, check=True,
    ).stdout.split()
    assert out == ["False", "native.pack_py"]


def test_offsets_are_int64() -> None:
    assert _c().OFFSET_DTYPE == pack_py.OFFSET_DTYPE == np.int64


# -- helpers -----------------------------------------------------------------------------


def _same_array(a: np.ndarray, b: np.ndarray) -> None:
    """Equal dtype, shape and contents, bit for bit (NaN payloads and -0.0 included)."""
    assert a.dtype == b.dtype
    assert a.shape == b.shape
    if a.dtype.hasobject:
        assert a.tolist() == b.tolist()
    else:
        assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def _raised(fn: Any, *args: Any) -> tuple[type[BaseException], str] | None:
    try:
        fn(*args)
    except (ValueError, TypeError) as exc:
        return type(exc), str(exc)
    return None


def _random_part(rng: np.random.Generator, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    if dtype.hasobject:
        flat = np.empty(int(np.prod(shape)), dtype=object)
        flat[:] = [f"s{rng.integers(1000)}\u00e9" * int(rng.integers(0, 3)) for _ in flat]
        return flat.reshape(shape)
    raw = rng.bytes(int(np.prod(shape)) * dtype.itemsize)
    if dtype == np.bool_:
        return np.frombuffer(raw, dtype=np.uint8).astype(bool).reshape(shape)
    return np.frombuffer(raw, dtype=dtype).reshape(shape)  # like decode_infer_request


# -- pack ----------------------------------------------------------------------------------


@st.composite
def _batches(draw: st.DrawFn) -> list[np.ndarray]:
    dtype = draw(st.sampled_from(DTYPES))
    trailing = tuple(draw(st.lists(st.integers(0, 4), max_size=2)))
    rows = draw(st.lists(st.integers(0, 5), min_size=1, max_size=12))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    parts = []
    for n in rows:
        layout = draw(st.sampled_from(["raw", "raw", "strided", "fortran"]))
        if layout == "strided":  # every other row of a bigger array
            part = _random_part(rng, dtype, (2 * n, *trailing))[::2]
        elif layout == "fortran" and trailing:
            part = np.asfortranarray(_random_part(rng, dtype, (n, *trailing)))
        else:
            part = _random_part(rng, dtype, (n, *trailing))
        parts.append(part)
    return parts


@given(_batches())
def test_pack_parity(parts: list[np.ndarray]) -> None:
    batch, offsets = _c().pack(parts)
    twin_batch, twin_offsets = pack_py.pack(parts)
    _same_array(batch, twin_batch)
    # np.concatenate alone would turn '>f4' into the native byte order.
    _same_array(batch, np.concatenate(parts, dtype=parts[0].dtype))
    assert offsets.dtype == twin_offsets.dtype == np.int64
    assert offsets.tolist() == twin_offsets.tolist()
    assert offsets.tolist() == [0, *np.cumsum([p.shape[0] for p in parts]).tolist()]
    assert batch.flags.c_contiguous and batch.flags.writeable
    for part in parts:
        assert not np.shares_memory(batch, part)
    for view, part in zip(_c().split(batch, offsets), parts, strict=True):
        _same_array(view, part)


@given(_batches(), st.data())
def test_pack_error_parity(parts: list[Any], data: st.DataObject) -> None:
    """A batch with one odd part: both refuse it with the same error, naming that part."""
    i = data.draw(st.integers(0, len(parts) - 1))
    first = parts[0]
    odd = data.draw(st.sampled_from(["dtype", "byteorder", "trailing", "rank", "0-d", "list"]))
    if odd == "dtype":
        other = np.dtype("<f8") if first.dtype != np.dtype("<f8") else np.dtype("<i8")
        parts[i] = np.zeros(first.shape, dtype=other)
    elif odd == "byteorder":
        parts[i] = np.zeros(first.shape, dtype=first.dtype.newbyteorder("S"))
    elif odd == "trailing":
        wider = (*first.shape[1:-1], first.shape[-1] + 1) if first.ndim > 1 else (2,)
        parts[i] = np.zeros((1, *wider), dtype=first.dtype)
    elif odd == "rank":
        parts[i] = np.zeros((*first.shape, 1), dtype=first.dtype)
    elif odd == "0-d":
        parts[i] = np.zeros((), dtype=first.dtype)
    else:
        parts[i] = first.tolist()
    expected = _raised(pack_py.pack, parts)
    assert _raised(_c().pack, parts) == expected
    if expected is not None:  # some changes leave the batch valid (a symmetric byte order)
        assert expected[1].startswith(("part ", "pack "))


@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=4)))
def test_split_parity(batch: np.ndarray) -> None:
    cuts = sorted(np.random.default_rng(batch.size).integers(0, batch.shape[0] + 1, 3).tolist())
    offsets = [0, *cuts, batch.shape[0]]
    views = _c().split(batch, offsets)
    twin = pack_py.split(batch, offsets)
    assert len(views) == len(twin) == len(offsets) - 1
    for view, expected in zip(views, twin, strict=True):
        _same_array(view, expected)
        assert view.strides == expected.strides
        assert view.flags.writeable == expected.flags.writeable
        assert view.size == 0 or np.shares_memory(view, batch)


def test_pack_one_part_is_a_copy(impl: ModuleType) -> None:
    part = np.arange(6, dtype=np.float32).reshape(2, 3)
    batch, offsets = impl.pack([part])
    _same_array(batch, part)
    assert offsets.tolist() == [0, 2]
    assert not np.shares_memory(batch, part)


def test_pack_zero_row_parts(impl: ModuleType) -> None:
    empty = np.empty((0, 3), dtype=np.int64)
    batch, offsets = impl.pack([empty, np.ones((2, 3), np.int64), empty, empty])
    assert batch.shape == (2, 3) and batch.dtype == np.int64
    assert offsets.tolist() == [0, 0, 2, 2, 2]
    batch, offsets = impl.pack([empty, empty])
    assert batch.shape == (0, 3) and offsets.tolist() == [0, 0, 0]
    assert [v.shape for v in impl.split(batch, offsets)] == [(0, 3), (0, 3)]


def test_pack_many_parts(impl: ModuleType) -> None:
    rng = np.random.default_rng(3)
    parts = [_random_part(rng, np.dtype("<f4"), (int(n), 30)) for n in rng.integers(0, 4, 2000)]
    batch, offsets = impl.pack(parts)
    _same_array(batch, np.concatenate(parts))
    for view, part in zip(impl.split(batch, offsets), parts, strict=True):
        _same_array(view, part)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_pack_dtypes_large(impl: ModuleType, dtype: np.dtype) -> None:
    """Batches past NOGIL_MIN_BYTES take the GIL-free copy; the result is the same."""
    rng = np.random.default_rng(5)
    rows = 1 + _c().NOGIL_MIN_BYTES // (8 * dtype.itemsize * 16)
    parts = [_random_part(rng, dtype, (rows, 16)) for _ in range(3)]
    batch, _ = impl.pack(parts)
    _same_array(batch, np.concatenate(parts, dtype=dtype))


def test_pack_accepts_any_iterable_and_equivalent_dtypes(impl: ModuleType) -> None:
    native = np.dtype("=f4").newbyteorder("=")
    parts = (np.ones((1, 2), dtype="<f4"), np.zeros((2, 2), dtype=native))
    batch, offsets = impl.pack(p for p in parts)
    assert batch.tolist() == [[1, 1], [0, 0], [0, 0]]
    assert offsets.tolist() == [0, 1, 3]


@pytest.mark.parametrize(
    ("parts", "error", "message"),
    [
        ([], ValueError, "pack needs at least one part"),
        ([[1.0]], TypeError, "part 0 is a list, not a NumPy array"),
        ([np.ones((1, 2)), (1, 2)], TypeError, "part 1 is a tuple, not a NumPy array"),
        ([np.float32(1.0)], TypeError, "part 0 is a float32, not a NumPy array"),
        (
            [np.ones(2), np.array(1.0)],
            ValueError,
            "part 1 is 0-d; parts need a leading row dimension",
        ),
        (
            [np.ones((1, 2), "<f4"), np.ones((1, 2), "<f4"), np.ones((1, 2), "<f8")],
            ValueError,
            "part 2 has dtype float64, part 0 has dtype float32",
        ),
        (
            [np.ones((1, 2), "<f4"), np.ones((1, 2), ">f4")],
            ValueError,
            "part 1 has dtype >f4, part 0 has dtype float32",
        ),
        (
            [np.ones((1, 2), bool), np.ones((1, 2), np.uint8)],
            ValueError,
            "part 1 has dtype uint8, part 0 has dtype bool",
        ),
        (
            [np.ones((1, 2), object), np.ones((1, 2), "<f4")],
            ValueError,
            "part 1 has dtype float32, part 0 has dtype object",
        ),
        (
            [np.ones((3, 2)), np.ones((1, 3))],
            ValueError,
            r"part 1 has trailing shape (3,), part 0 has trailing shape (2,)",
        ),
        (
            [np.ones((3, 2)), np.ones((1, 2, 1))],
            ValueError,
            r"part 1 has trailing shape (2, 1), part 0 has trailing shape (2,)",
        ),
        (
            [np.ones(3), np.ones((1, 1))],
            ValueError,
            r"part 1 has trailing shape (1,), part 0 has trailing shape ()",
        ),
    ],
)
def test_pack_refuses(
    impl: ModuleType, parts: list[Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as caught:
        impl.pack(parts)
    assert str(caught.value) == message
    assert _raised(pack_py.pack, parts) == _raised(_c().pack, parts)


# -- split -----------------------------------------------------------------------------------


def test_split_is_zero_copy(impl: ModuleType) -> None:
    batch = np.arange(20, dtype=np.float32).reshape(10, 2)
    views = impl.split(batch, np.array([0, 3, 3, 10]))
    assert [v.shape for v in views] == [(3, 2), (0, 2), (7, 2)]
    views[2][0, 0] = -1.0
    assert batch[3, 0] == -1.0
    for view, reference in zip(views, np.split(batch, [3, 3]), strict=True):
        _same_array(view, reference)
        assert view.base is reference.base


def test_split_keeps_layout_and_read_only(impl: ModuleType) -> None:
    transposed = np.arange(12, dtype=np.int64).reshape(3, 4).T  # F-order [4, 3]
    for view, reference in zip(impl.split(transposed, [0, 1, 4]), [transposed[:1], transposed[1:]],
                               strict=True):
        _same_array(view, reference)
        assert view.strides == reference.strides
    frozen = np.frombuffer(bytes(range(8)), dtype=np.uint8).reshape(4, 2)
    assert not any(v.flags.writeable for v in impl.split(frozen, [0, 2, 4]))
    reversed_rows = np.arange(6)[::-1]
    assert [v.tolist() for v in impl.split(reversed_rows, [0, 2, 6])] == [[5, 4], [3, 2, 1, 0]]
    strings = np.array(["a", "b", "c"], dtype=object)
    assert [v.tolist() for v in impl.split(strings, [0, 1, 3])] == [["a"], ["b", "c"]]


def test_split_single_part_and_unsigned_offsets(impl: ModuleType) -> None:
    batch = np.ones((4, 2))
    (only,) = impl.split(batch, np.array([0, 4], dtype=np.uint32))
    assert only.shape == (4, 2) and np.shares_memory(only, batch)
    assert impl.split(np.empty((0, 2)), [0]) == []


@pytest.mark.parametrize(
    ("batch", "offsets", "error", "message"),
    [
        ([1, 2], [0, 2], TypeError, "batch is a list, not a NumPy array"),
        (np.array(3.0), [0, 1], ValueError, "batch is 0-d; it needs a leading row dimension"),
        (
            np.ones(3), [], ValueError,
            "offsets must be a 1-D integer array with at least one entry "
            "(got shape (0,), dtype float64)",
        ),
        (
            np.ones(3), [[0, 3]], ValueError,
            "offsets must be a 1-D integer array with at least one entry "
            "(got shape (1, 2), dtype int64)",
        ),
        (
            np.ones(3), [0.0, 3.0], ValueError,
            "offsets must be a 1-D integer array with at least one entry "
            "(got shape (2,), dtype float64)",
        ),
        (np.ones(3), [1, 3], ValueError, "offsets must start at 0 (offsets[0] is 1)"),
        (np.ones(3), [-1, 3], ValueError, "offsets must start at 0 (offsets[0] is -1)"),
        (
            np.ones(3), [0, 2, 1, 3], ValueError,
            "offsets are not monotonic: offsets[2] = 1 < offsets[1] = 2",
        ),
        (
            np.ones(3), [0, 1, 1, 0, 3], ValueError,
            "offsets are not monotonic: offsets[3] = 0 < offsets[2] = 1",
        ),
        (np.ones(3), [0, 2], ValueError, "offsets end at 2 but the batch has 3 rows"),
        (np.ones(3), [0, 1, 4], ValueError, "offsets end at 4 but the batch has 3 rows"),
        (np.ones((0, 2)), [0, 1], ValueError, "offsets end at 1 but the batch has 0 rows"),
    ],
)
def test_split_refuses(
    impl: ModuleType, batch: Any, offsets: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as caught:
        impl.split(batch, offsets)
    assert str(caught.value) == message


# -- pack_bytes -------------------------------------------------------------------------------


_ELEMENTS = st.lists(st.binary(max_size=12) | st.text(max_size=6), max_size=6)


@given(st.lists(_ELEMENTS, max_size=8), st.data())
def test_pack_bytes_parity(columns: list[list[bytes | str]], data: st.DataObject) -> None:
    buffers: list[bytes] = []
    counts: list[int] = []
    for items in columns:
        arr = np.empty(len(items), dtype=object)
        arr[:] = items
        buffers.append(bytes_codec_py.encode(arr))
        counts.append(len(items))
    # Sometimes damage one part: a wrong count, a cut buffer, a trailing byte.
    if data.draw(st.booleans()) and buffers:
        i = data.draw(st.integers(0, len(buffers) - 1))
        damage = data.draw(st.sampled_from(["count+1", "count-1", "cut", "extra", "neg"]))
        if damage == "count+1":
            counts[i] += 1
        elif damage == "count-1":
            counts[i] -= 1
        elif damage == "cut" and buffers[i]:
            buffers[i] = buffers[i][: data.draw(st.integers(0, len(buffers[i]) - 1))]
        elif damage == "extra":
            buffers[i] += b"\x00"
        elif damage == "neg":
            counts[i] = -1
    expected = _raised(pack_py.pack_bytes, buffers, counts)
    assert _raised(_c().pack_bytes, buffers, counts) == expected
    if expected is None:
        buf, offsets = _c().pack_bytes(buffers, counts)
        twin_buf, twin_offsets = pack_py.pack_bytes(buffers, counts)
        assert buf == twin_buf == b"".join(buffers)
        assert offsets.tolist() == twin_offsets.tolist() == [0, *np.cumsum(counts).tolist()]
        assert offsets.dtype == np.int64
        decoded = bytes_codec_py.decode(buf, int(offsets[-1]))
        for i, items in enumerate(columns):
            want = [x.encode() if isinstance(x, str) else x for x in items]
            assert decoded[offsets[i] : offsets[i + 1]].tolist() == want


def test_pack_bytes_buffers_of_any_kind(impl: ModuleType) -> None:
    one = b"\x02\x00\x00\x00ab"
    buf, offsets = impl.pack_bytes(
        [one, bytearray(one), memoryview(one), np.frombuffer(one, np.uint8), b""], [1, 1, 1, 1, 0]
    )
    assert buf == one * 4 and isinstance(buf, bytes)
    assert offsets.tolist() == [0, 1, 2, 3, 4, 4]
    empty, offsets = impl.pack_bytes([], [])
    assert empty == b"" and offsets.tolist() == [0]


def test_pack_bytes_large(impl: ModuleType) -> None:
    """Past NOGIL_MIN_BYTES the walk and the copy run without the GIL."""
    arr = np.empty(40_000, dtype=object)
    arr[:] = [b"abcdefgh"[: i % 9] for i in range(40_000)]
    part = bytes_codec_py.encode(arr)
    buf, offsets = impl.pack_bytes([part, part, b""], [40_000, 40_000, 0])
    assert buf == part * 2 and offsets.tolist() == [0, 40_000, 80_000, 80_000]
    with pytest.raises(ValueError, match="BYTES part 1: element 39999 declares 3 bytes at"):
        impl.pack_bytes([part, part[:-1]], [40_000, 40_000])


@pytest.mark.parametrize(
    ("buffers", "counts", "message"),
    [
        ([b""], [], "pack_bytes got 1 buffers but 0 counts"),
        ([b"", b""], [0, -2], "BYTES part 1: count -2 is negative"),
        (
            [b"", b"\x01\x00"], [0, 1],
            "BYTES part 1: element 0 has a truncated length prefix "
            "(needs 4 bytes at offset 0, buffer is 2 bytes)",
        ),
        (
            [b"\x01\x00\x00\x00a"], [2],
            "BYTES part 0: element 1 has a truncated length prefix "
            "(needs 4 bytes at offset 5, buffer is 5 bytes)",
        ),
        (
            [b"\x05\x00\x00\x00ab"], [1],
            "BYTES part 0: element 0 declares 5 bytes at offset 4 but only 2 remain",
        ),
        (
            [b"\xff\xff\xff\xff"], [1],
            "BYTES part 0: element 0 declares 4294967295 bytes at offset 4 but only 0 remain",
        ),
        (
            [b"\x01\x00\x00\x00ab"], [1],
            "BYTES part 0: holds more than the 1 elements declared (1 bytes left over)",
        ),
        (
            [b"\x00\x00\x00\x00"], [0],
            "BYTES part 0: holds more than the 0 elements declared (4 bytes left over)",
        ),
    ],
)
def test_pack_bytes_refuses(
    impl: ModuleType, buffers: list[bytes], counts: list[int], message: str
) -> None:
    with pytest.raises(ValueError) as caught:
        impl.pack_bytes(buffers, counts)
    assert str(caught.value) == message
