"""KServe v2 tensor datatypes and their encodings.

One table maps each KServe datatype to its NumPy dtype, its ONNX type string and
the typed ``InferTensorContents`` field that may carry it. BYTES elements travel as
a 4-byte little-endian length followed by the bytes. Decoded, they are object arrays
of ``str``: ONNX string tensors hold UTF-8 text, and ONNX Runtime's Python binding
turns any element that is not a ``str`` into ``str(element)`` (``b"ab"`` would reach
the model as the text ``"b'ab'"``). So elements are decoded as UTF-8 here, per
request, and an element that is not UTF-8 is refused naming the tensor and element.
Outputs (``str`` from ONNX Runtime) are encoded back as UTF-8. FP16 and BF16 travel
only as raw bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from native import bytes_codec

from .errors import InvalidInput


@dataclass(frozen=True)
class Datatype:
    """One KServe datatype."""

    name: str
    dtype: np.dtype
    onnx_type: str
    contents_field: str | None  # InferTensorContents field, None when raw only

    @property
    def itemsize(self) -> int | None:
        """Bytes per element, or None for variable-length BYTES."""
        return None if self.name == "BYTES" else int(self.dtype.itemsize)


def _bf16_dtype() -> np.dtype:
    try:
        import ml_dtypes  # optional: shipped with tritonclient and onnx

        return np.dtype(ml_dtypes.bfloat16)
    except ImportError:  # pragma: no cover - depends on the environment
        return np.dtype("<u2")


DATATYPES: dict[str, Datatype] = {
    d.name: d
    for d in (
        Datatype("BOOL", np.dtype(np.bool_), "tensor(bool)", "bool_contents"),
        Datatype("INT8", np.dtype("<i1"), "tensor(int8)", "int_contents"),
        Datatype("INT16", np.dtype("<i2"), "tensor(int16)", "int_contents"),
        Datatype("INT32", np.dtype("<i4"), "tensor(int32)", "int_contents"),
        Datatype("INT64", np.dtype("<i8"), "tensor(int64)", "int64_contents"),
        Datatype("UINT8", np.dtype("<u1"), "tensor(uint8)", "uint_contents"),
        Datatype("UINT16", np.dtype("<u2"), "tensor(uint16)", "uint_contents"),
        Datatype("UINT32", np.dtype("<u4"), "tensor(uint32)", "uint_contents"),
        Datatype("UINT64", np.dtype("<u8"), "tensor(uint64)", "uint64_contents"),
        Datatype("FP16", np.dtype("<f2"), "tensor(float16)", None),
        Datatype("BF16", _bf16_dtype(), "tensor(bfloat16)", None),
        Datatype("FP32", np.dtype("<f4"), "tensor(float)", "fp32_contents"),
        Datatype("FP64", np.dtype("<f8"), "tensor(double)", "fp64_contents"),
        Datatype("BYTES", np.dtype(object), "tensor(string)", "bytes_contents"),
    )
}

_BY_ONNX = {d.onnx_type: d for d in DATATYPES.values()}


def datatype(name: str) -> Datatype:
    """The datatype called ``name``; InvalidInput naming the known ones otherwise."""
    try:
        return DATATYPES[name]
    except KeyError:
        raise InvalidInput(
            f"unknown datatype '{name}'; expected one of {', '.join(DATATYPES)}"
        ) from None


def from_onnx_type(onnx_type: str) -> Datatype:
    """The KServe datatype of an ONNX tensor type such as ``tensor(float)``."""
    try:
        return _BY_ONNX[onnx_type]
    except KeyError:
        raise ValueError(f"ONNX type {onnx_type} has no KServe v2 datatype") from None


def element_count(shape: tuple[int, ...] | list[int]) -> int:
    return math.prod(shape)


def _utf8(data: bytes, tensor: str, index: int) -> str:
    try:
        return str(data, "utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"input '{tensor}': BYTES element {index} is not valid UTF-8 ({exc.reason} at "
            f"byte {exc.start}); ONNX string tensors hold UTF-8 text"
        ) from None


def decode_bytes_elements(buf: bytes, expected: int, tensor: str) -> npt.NDArray[np.object_]:
    """Split a BYTES buffer (u32 LE length + payload, repeated) into ``expected`` UTF-8
    strings (native kernel, or its twin)."""
    try:
        return bytes_codec.decode(buf, expected, text=True)
    except ValueError as exc:
        raise InvalidInput(f"input '{tensor}': {exc}") from None


def encode_bytes_elements(array: npt.NDArray[np.object_]) -> bytes:
    """Serialise an array of ``bytes``/``str`` as KServe BYTES (u32 LE length + payload)."""
    return bytes_codec.encode(array)


def from_raw(buf: bytes, dt: Datatype, shape: tuple[int, ...], tensor: str) -> np.ndarray:
    """Decode one raw input buffer into an array of ``shape``, checking its size."""
    count = element_count(shape)
    if dt.name == "BYTES":
        return decode_bytes_elements(buf, count, tensor).reshape(shape)
    itemsize = dt.itemsize or 1
    expected = count * itemsize
    if len(buf) != expected:
        raise InvalidInput(
            f"input '{tensor}': raw content is {len(buf)} bytes but shape "
            f"{list(shape)} of {dt.name} needs {expected} bytes"
        )
    return np.frombuffer(buf, dtype=dt.dtype).reshape(shape)


def from_contents(values: object, dt: Datatype, shape: tuple[int, ...], tensor: str) -> np.ndarray:
    """Decode typed ``InferTensorContents`` values (already the right field) into an array."""
    seq = list(values)  # type: ignore[call-overload]
    count = element_count(shape)
    if len(seq) != count:
        raise InvalidInput(
            f"input '{tensor}': {dt.contents_field} holds {len(seq)} elements but shape "
            f"{list(shape)} needs {count}"
        )
    if dt.name == "BYTES":
        arr = np.empty(count, dtype=object)
        arr[:] = [_utf8(v, tensor, i) for i, v in enumerate(seq)]
        return arr.reshape(shape)
    try:
        return np.asarray(seq, dtype=dt.dtype).reshape(shape)
    except OverflowError:
        raise InvalidInput(
            f"input '{tensor}': a value in {dt.contents_field} does not fit {dt.name}"
        ) from None


def to_raw(array: np.ndarray) -> bytes:
    """Encode an output array as raw bytes (little-endian, C order)."""
    if array.dtype == object or array.dtype.kind in ("U", "S"):
        return encode_bytes_elements(np.asarray(array, dtype=object))
    arr = np.ascontiguousarray(array)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return arr.tobytes()


def datatype_of_array(array: np.ndarray) -> Datatype:
    """The KServe datatype of an output array produced by ONNX Runtime."""
    if array.dtype == object or array.dtype.kind in ("U", "S"):
        return DATATYPES["BYTES"]
    for d in DATATYPES.values():
        if d.name != "BYTES" and d.dtype == array.dtype:
            return d
    raise ValueError(f"no KServe datatype for NumPy dtype {array.dtype}")
