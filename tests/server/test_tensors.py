"""KServe datatypes and encodings (``server.tensors``), in process."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from server.errors import InvalidInput
from server.tensors import (
    DATATYPES,
    datatype,
    datatype_of_array,
    decode_bytes_elements,
    element_count,
    encode_bytes_elements,
    from_contents,
    from_onnx_type,
    from_raw,
    to_raw,
)


def framed(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(i)) + i for i in items)


# -- the datatype table ---------------------------------------------------------------


def test_every_kserve_datatype_is_known() -> None:
    assert set(DATATYPES) == {
        "BOOL",
        "INT8",
        "INT16",
        "INT32",
        "INT64",
        "UINT8",
        "UINT16",
        "UINT32",
        "UINT64",
        "FP16",
        "BF16",
        "FP32",
        "FP64",
        "BYTES",
    }
    assert DATATYPES["FP16"].contents_field is None
    assert DATATYPES["BF16"].contents_field is None
    assert DATATYPES["BF16"].itemsize == 2
    assert DATATYPES["BYTES"].itemsize is None
    assert DATATYPES["INT64"].itemsize == 8


def test_unknown_datatype_lists_known_ones() -> None:
    with pytest.raises(InvalidInput) as err:
        datatype("FLOAT32")
    assert "'FLOAT32'" in err.value.message and "FP32" in err.value.message


def test_onnx_types() -> None:
    assert from_onnx_type("tensor(float)").name == "FP32"
    assert from_onnx_type("tensor(string)").name == "BYTES"
    assert from_onnx_type("tensor(bfloat16)").name == "BF16"
    with pytest.raises(ValueError, match=r"tensor\(complex64\)"):
        from_onnx_type("tensor(complex64)")


def test_datatype_of_array() -> None:
    assert datatype_of_array(np.zeros(2, dtype=np.float16)).name == "FP16"
    assert datatype_of_array(np.zeros(2, dtype=np.uint32)).name == "UINT32"
    assert datatype_of_array(np.array(["a"], dtype=object)).name == "BYTES"
    assert datatype_of_array(np.array(["a"])).name == "BYTES"
    with pytest.raises(ValueError, match="complex"):
        datatype_of_array(np.zeros(2, dtype=np.complex64))


def test_element_count() -> None:
    assert element_count([]) == 1
    assert element_count((2, 3, 4)) == 24
    assert element_count([5, 0]) == 0


# -- BYTES ------------------------------------------------------------------------------


def test_bytes_roundtrip() -> None:
    items = ["", "a", "héllo", "日本", "😀", "x" * 70000, "a\x00b"]
    buf = encode_bytes_elements(np.array(items, dtype=object))
    assert buf[:4] == b"\x00\x00\x00\x00"  # u32 little-endian length of ""
    assert buf[4:9] == b"\x01\x00\x00\x00a"
    decoded = decode_bytes_elements(buf, len(items), "T")
    assert decoded.dtype == object
    assert decoded.tolist() == items


def test_bytes_encode_accepts_bytes_and_str() -> None:
    arr = np.array([b"\x01\x02", "é"], dtype=object)
    assert encode_bytes_elements(arr) == framed(b"\x01\x02", "é".encode())
    assert encode_bytes_elements(np.array([], dtype=object)) == b""
    two_d = np.array([["a", "b"], ["c", "d"]], dtype=object)
    assert encode_bytes_elements(two_d) == framed(b"a", b"b", b"c", b"d")  # C order


def test_bytes_decode_empty_tensor() -> None:
    assert decode_bytes_elements(b"", 0, "T").shape == (0,)


def test_bytes_truncated_length_prefix() -> None:
    buf = framed(b"abc") + b"\x02\x00"
    with pytest.raises(InvalidInput) as err:
        decode_bytes_elements(buf, 2, "names")
    message = err.value.message
    assert "'names'" in message and "element 1" in message and "truncated length prefix" in message
    assert "offset 7" in message and "9 bytes" in message


def test_bytes_length_beyond_buffer() -> None:
    buf = struct.pack("<I", 10) + b"short"
    with pytest.raises(InvalidInput) as err:
        decode_bytes_elements(buf, 1, "names")
    message = err.value.message
    assert "'names'" in message and "element 0" in message
    assert "declares 10 bytes" in message and "only 5 remain" in message


def test_bytes_huge_length_prefix() -> None:
    with pytest.raises(InvalidInput) as err:
        decode_bytes_elements(b"\xff\xff\xff\xff", 1, "names")
    assert "declares 4294967295 bytes" in err.value.message


def test_bytes_leftover() -> None:
    buf = framed(b"a", b"b", b"c")
    with pytest.raises(InvalidInput) as err:
        decode_bytes_elements(buf, 2, "names")
    message = err.value.message
    assert "'names'" in message and "more than the 2 elements" in message
    assert "5 bytes left over" in message


def test_bytes_not_utf8() -> None:
    with pytest.raises(InvalidInput) as err:
        decode_bytes_elements(framed(b"ok", b"\xc3"), 2, "names")
    message = err.value.message
    assert "'names'" in message and "element 1" in message and "UTF-8" in message


def test_bytes_from_raw_keeps_shape() -> None:
    arr = from_raw(framed(b"a", b"b", b"c", b"d", b"e", b"f"), DATATYPES["BYTES"], (2, 3), "T")
    assert arr.shape == (2, 3)
    assert arr[1, 2] == "f"


def test_bytes_from_contents() -> None:
    arr = from_contents([b"x", "é".encode(), b""], DATATYPES["BYTES"], (1, 3), "T")
    assert arr.shape == (1, 3) and arr.tolist() == [["x", "é", ""]]
    with pytest.raises(InvalidInput) as err:
        from_contents([b"x", b"\xfe"], DATATYPES["BYTES"], (2,), "T")
    assert "'T'" in err.value.message and "element 1" in err.value.message


# -- fixed-size types ---------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in DATATYPES if n != "BYTES"])
def test_raw_roundtrip_every_fixed_type(name: str) -> None:
    dt = DATATYPES[name]
    source = np.arange(6).astype(dt.dtype).reshape(2, 3)
    buf = to_raw(source)
    assert len(buf) == 6 * (dt.itemsize or 0)
    back = from_raw(buf, dt, (2, 3), "T")
    assert back.dtype == dt.dtype and back.shape == (2, 3)
    assert back.tobytes() == source.tobytes()


def test_raw_size_mismatch_message() -> None:
    with pytest.raises(InvalidInput) as err:
        from_raw(b"\x00" * 10, DATATYPES["FP32"], (2, 2), "INPUT0")
    message = err.value.message
    assert "'INPUT0'" in message and "10 bytes" in message
    assert "[2, 2]" in message and "FP32" in message and "16 bytes" in message


def test_raw_is_little_endian() -> None:
    assert to_raw(np.array([1], dtype=">i4")) == b"\x01\x00\x00\x00"
    assert to_raw(np.array([1.0], dtype=">f8")) == np.array([1.0], dtype="<f8").tobytes()
    assert from_raw(b"\x01\x00", DATATYPES["INT16"], (1,), "T")[0] == 1


def test_to_raw_non_contiguous() -> None:
    arr = np.arange(12, dtype=np.int32).reshape(3, 4)[:, ::2]
    assert to_raw(arr) == np.ascontiguousarray(arr).tobytes()
    assert to_raw(np.asfortranarray(np.arange(6, dtype=np.int8).reshape(2, 3))) == bytes(range(6))


def test_from_contents_count_mismatch() -> None:
    with pytest.raises(InvalidInput) as err:
        from_contents([1, 2, 3], DATATYPES["INT32"], (2, 2), "INPUT")
    message = err.value.message
    assert "'INPUT'" in message and "int_contents" in message
    assert "3 elements" in message and "[2, 2]" in message and "needs 4" in message


def test_from_contents_overflow() -> None:
    with pytest.raises(InvalidInput) as err:
        from_contents([1, 256], DATATYPES["UINT8"], (2,), "INPUT")
    assert "'INPUT'" in err.value.message and "UINT8" in err.value.message
    with pytest.raises(InvalidInput):
        from_contents([-129], DATATYPES["INT8"], (1,), "INPUT")


def test_from_contents_values() -> None:
    arr = from_contents([True, False], DATATYPES["BOOL"], (2,), "T")
    assert arr.dtype == np.bool_ and arr.tolist() == [True, False]
    big = from_contents([2**64 - 1], DATATYPES["UINT64"], (1,), "T")
    assert big.dtype == np.uint64 and int(big[0]) == 2**64 - 1
    ints = from_contents([-(2**63)], DATATYPES["INT64"], (1,), "T")
    assert int(ints[0]) == -(2**63)
    floats = from_contents([0.1, -2.5], DATATYPES["FP64"], (1, 2), "T")
    assert floats.shape == (1, 2) and floats[0, 0] == 0.1
