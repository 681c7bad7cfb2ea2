"""Tensors on the wire: every datatype, raw and typed contents, outputs, ids, parameters.

Everything goes through the real server (the shared ``server`` fixture) with
tritonclient. Typed ``contents`` requests are built with tritonclient's own
``service_pb2`` and sent through the client's stub, because tritonclient itself
always sends ``raw_input_contents``.

BF16, decided by experiment (onnxruntime 1.32): ORT loads and runs a bfloat16
Identity graph, but only through ``OrtValue``s; its NumPy path rejects bfloat16
arrays ("Numpy_type 256 can't be converted to MLDataType") and cannot turn a
bfloat16 output back into NumPy. ``server/runtime.py`` therefore runs models with
BF16 tensors through ``OrtValue`` and the round trip is the test.

BYTES: ONNX string tensors hold text, and ORT's Python binding turns anything that is
not a ``str`` into ``str(item)`` (bytes ``b"ab"`` became the text ``"b'ab'"``). The
server therefore decodes BYTES elements as UTF-8 and refuses elements that are not
(INVALID_ARGUMENT naming the tensor and element). Binary elements that are valid
UTF-8 (NUL, control bytes) round-trip exactly.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import ml_dtypes
import numpy as np
import numpy.typing as npt
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException, deserialize_bytes_tensor

from .onnx_models import add_sub_graph, identity_bf16_graph, write_model
from .process import ServerProcess

NUMPY = {
    "BOOL": np.dtype(np.bool_),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}

# The typed InferTensorContents field of each datatype (FP16/BF16 have none).
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

BYTES_SAMPLE = [
    "héllo wörld".encode(),  # multi-byte UTF-8
    b"",  # empty
    "日本語テキスト".encode(),  # three-byte characters
    "😀".encode(),  # four-byte character
    b"a\x00b\x01\x7f",  # binary, NUL and control bytes (valid UTF-8)
    b"x" * 300,  # longer than one length byte
    b"\t\n",
    b"z",
]


def sample(datatype: str) -> npt.NDArray[Any]:
    """A [2, 4] array of ``datatype`` including its extremes."""
    if datatype == "BYTES":
        return np.array(BYTES_SAMPLE, dtype=object).reshape(2, 4)
    dt = NUMPY[datatype]
    if datatype == "BOOL":
        return np.array([True, False, False, True, True, True, False, False]).reshape(2, 4)
    if dt.kind in "iu":
        info = np.iinfo(dt)  # type: ignore[type-var]
        ints = [info.min, info.max, 0, 1, info.max - 1, info.min + 1, 7, 42]
        return np.array(ints, dtype=dt).reshape(2, 4)
    finfo = np.finfo(dt)  # type: ignore[type-var]
    values = [0.0, -0.0, 1.5, -2.25, float(finfo.max), float(finfo.tiny), np.inf, -np.inf]
    return np.array(values, dtype=dt).reshape(2, 4)


def raw_bytes(array: npt.NDArray[Any]) -> bytes:
    """The KServe raw encoding of ``array`` (BYTES: u32 LE length + payload)."""
    if array.dtype == object:
        return b"".join(struct.pack("<I", len(v)) + v for v in array.reshape(-1))
    return np.ascontiguousarray(array).tobytes()


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    c = grpcclient.InferenceServerClient(server.url)
    yield c
    c.close()


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    channel = grpc.insecure_channel(server.url)
    yield service_pb2_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


def typed_request(
    model: str, datatype: str, data: npt.NDArray[Any]
) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name="INPUT", datatype=datatype, shape=list(data.shape))
    values: list[Any] = [v.item() if hasattr(v, "item") else v for v in data.reshape(-1)]
    getattr(tensor.contents, CONTENTS_FIELD[datatype]).extend(values)
    return request


def decode_output(response: Any, index: int) -> npt.NDArray[Any]:
    out = response.outputs[index]
    raw = response.raw_output_contents[index]
    if out.datatype == "BYTES":
        return deserialize_bytes_tensor(raw).reshape(list(out.shape))
    return np.frombuffer(raw, dtype=NUMPY[out.datatype]).reshape(list(out.shape))


# -- every datatype, raw and typed ---------------------------------------------------


@pytest.mark.parametrize("datatype", list(NUMPY))
def test_raw_roundtrip(client: grpcclient.InferenceServerClient, datatype: str) -> None:
    data = sample(datatype)
    tensor = grpcclient.InferInput("INPUT", list(data.shape), datatype)
    tensor.set_data_from_numpy(data)
    result = client.infer(f"identity_{datatype.lower()}", [tensor])
    response = result.get_response()
    assert len(response.outputs) == 1
    assert response.outputs[0].datatype == datatype
    assert list(response.outputs[0].shape) == [2, 4]
    assert not response.outputs[0].HasField("contents"), "answers use raw_output_contents"
    assert response.raw_output_contents[0] == raw_bytes(data), "bit-exact round trip"
    out = result.as_numpy("OUTPUT")
    if datatype == "BYTES":
        assert out.tolist() == data.tolist()
    else:
        assert out.dtype == data.dtype
        assert out.tobytes() == data.tobytes()


@pytest.mark.parametrize("datatype", list(CONTENTS_FIELD))
def test_typed_contents_roundtrip(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, datatype: str
) -> None:
    data = sample(datatype)
    response = stub.ModelInfer(typed_request(f"identity_{datatype.lower()}", datatype, data))
    assert len(response.outputs) == 1
    assert not response.outputs[0].HasField("contents"), "answers use raw_output_contents"
    assert len(response.raw_output_contents) == 1
    assert response.outputs[0].datatype == datatype
    assert response.raw_output_contents[0] == raw_bytes(data)


@pytest.mark.parametrize("datatype", ["FP16", "BF16"])
def test_half_types_typed_contents_refused(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, datatype: str
) -> None:
    request = service_pb2.ModelInferRequest(model_name="identity_fp16")
    tensor = request.inputs.add(name="INPUT", datatype=datatype, shape=[1, 4])
    tensor.contents.fp32_contents.extend([1.0, 2.0, 3.0, 4.0])
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    message = err.value.details()
    assert "'INPUT'" in message and datatype in message and "raw" in message


def test_typed_value_out_of_range(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    request = service_pb2.ModelInferRequest(model_name="identity_int8")
    tensor = request.inputs.add(name="INPUT", datatype="INT8", shape=[1, 4])
    tensor.contents.int_contents.extend([1, 2, 300, 4])
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'INPUT'" in err.value.details() and "INT8" in err.value.details()


def test_typed_count_mismatch(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    request = service_pb2.ModelInferRequest(model_name="identity_fp32")
    tensor = request.inputs.add(name="INPUT", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend([1.0, 2.0, 3.0])
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = err.value.details()
    assert "'INPUT'" in details and "3 elements" in details and "needs 4" in details


def test_typed_contents_on_two_inputs(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    a = np.arange(16, dtype=np.float32).reshape(1, 16)
    b = np.full((1, 16), 0.5, dtype=np.float32)
    request = service_pb2.ModelInferRequest(model_name="add_sub")
    for name, value in (("INPUT0", a), ("INPUT1", b)):
        t = request.inputs.add(name=name, datatype="FP32", shape=[1, 16])
        t.contents.fp32_contents.extend(value.reshape(-1).tolist())
    response = stub.ModelInfer(request)
    assert [o.name for o in response.outputs] == ["OUTPUT0", "OUTPUT1"]
    np.testing.assert_array_equal(decode_output(response, 0), a + b)
    np.testing.assert_array_equal(decode_output(response, 1), a - b)


# -- BYTES details --------------------------------------------------------------------


def test_bytes_elements_exact(client: grpcclient.InferenceServerClient) -> None:
    """Multi-byte, empty and binary (valid UTF-8) elements come back byte for byte."""
    data = np.array(
        [
            b"",
            b"\x00",
            "ß".encode(),
            b"\x00\x00\x00\x00",
            "🦅osprey".encode(),
            b"",
            b"\x1b[0m",
            b" ",
        ],
        dtype=object,
    ).reshape(2, 4)
    tensor = grpcclient.InferInput("INPUT", [2, 4], "BYTES")
    tensor.set_data_from_numpy(data)
    result = client.infer("identity_bytes", [tensor])
    assert result.as_numpy("OUTPUT").tolist() == data.tolist()
    assert result.get_response().raw_output_contents[0] == raw_bytes(data)


def test_bytes_not_utf8_refused(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    """ONNX string tensors hold text: a non-UTF-8 element is refused, not mangled."""
    data = np.array([b"ok", b"\xff\xfe", b"", b"x"], dtype=object).reshape(1, 4)
    request = service_pb2.ModelInferRequest(model_name="identity_bytes")
    request.inputs.add(name="INPUT", datatype="BYTES", shape=[1, 4])
    request.raw_input_contents.append(raw_bytes(data))
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = err.value.details()
    assert "'INPUT'" in details and "element 1" in details and "UTF-8" in details


def test_bytes_typed_not_utf8_refused(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    request = service_pb2.ModelInferRequest(model_name="identity_bytes")
    tensor = request.inputs.add(name="INPUT", datatype="BYTES", shape=[1, 4])
    tensor.contents.bytes_contents.extend([b"a", b"b", b"c", b"\x80"])
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = err.value.details()
    assert "'INPUT'" in details and "element 3" in details and "UTF-8" in details


# -- outputs, ids, parameters ----------------------------------------------------------


def add_sub_inputs(
    rows: int = 2,
) -> tuple[list[grpcclient.InferInput], npt.NDArray[Any], npt.NDArray[Any]]:
    a = np.arange(rows * 16, dtype=np.float32).reshape(rows, 16)
    b = np.full((rows, 16), 3.0, dtype=np.float32)
    inputs = [
        grpcclient.InferInput("INPUT0", [rows, 16], "FP32"),
        grpcclient.InferInput("INPUT1", [rows, 16], "FP32"),
    ]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    return inputs, a, b


def test_outputs_in_model_order_by_default(client: grpcclient.InferenceServerClient) -> None:
    inputs, a, b = add_sub_inputs()
    response = client.infer("add_sub", inputs).get_response()
    assert [o.name for o in response.outputs] == ["OUTPUT0", "OUTPUT1"]
    assert len(response.raw_output_contents) == 2
    np.testing.assert_array_equal(decode_output(response, 0), a + b)
    np.testing.assert_array_equal(decode_output(response, 1), a - b)


def test_requested_outputs_subset_and_order(client: grpcclient.InferenceServerClient) -> None:
    inputs, a, b = add_sub_inputs()
    response = client.infer(
        "add_sub", inputs, outputs=[grpcclient.InferRequestedOutput("OUTPUT1")]
    ).get_response()
    assert [o.name for o in response.outputs] == ["OUTPUT1"]
    assert len(response.raw_output_contents) == 1
    np.testing.assert_array_equal(decode_output(response, 0), a - b)

    reversed_order = [
        grpcclient.InferRequestedOutput("OUTPUT1"),
        grpcclient.InferRequestedOutput("OUTPUT0"),
    ]
    response = client.infer("add_sub", inputs, outputs=reversed_order).get_response()
    assert [o.name for o in response.outputs] == ["OUTPUT1", "OUTPUT0"]
    np.testing.assert_array_equal(decode_output(response, 0), a - b)
    np.testing.assert_array_equal(decode_output(response, 1), a + b)


def test_unknown_requested_output(client: grpcclient.InferenceServerClient) -> None:
    inputs, _, _ = add_sub_inputs()
    with pytest.raises(InferenceServerException) as err:
        client.infer("add_sub", inputs, outputs=[grpcclient.InferRequestedOutput("OUTPUT9")])
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "OUTPUT9" in err.value.message()


def test_id_echoed(client: grpcclient.InferenceServerClient) -> None:
    inputs, _, _ = add_sub_inputs()
    response = client.infer("add_sub", inputs, request_id="req-ü-42").get_response()
    assert response.id == "req-ü-42"
    assert response.model_name == "add_sub"
    assert response.model_version == "1"
    assert client.infer("add_sub", inputs).get_response().id == ""


def test_decision_id_is_unique_uuid7(client: grpcclient.InferenceServerClient) -> None:
    inputs, _, _ = add_sub_inputs(1)
    seen = []
    for i in range(20):
        # tritonclient and perf_analyzer reuse ids: the decision id must not.
        response = client.infer("add_sub", inputs, request_id=str(i % 2)).get_response()
        param = response.parameters["osprey_decision_id"]
        assert param.WhichOneof("parameter_choice") == "string_param"
        decision = uuid.UUID(param.string_param)
        assert decision.version == 7
        assert decision.variant == uuid.RFC_4122
        assert str(decision) == param.string_param
        seen.append(decision)
    assert len(set(seen)) == len(seen)
    assert seen == sorted(seen), "UUIDv7 from one process are time-ordered"


def test_unknown_parameters_ignored(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    data = sample("INT32")
    request = typed_request("identity_int32", "INT32", data)
    request.parameters["triton_enable_empty_final_response"].bool_param = True
    request.parameters["some_future_option"].string_param = "whatever"
    request.parameters["binary_data_output"].bool_param = True
    request.inputs[0].parameters["unknown_tensor_option"].int64_param = 5
    request.id = "with-params"
    response = stub.ModelInfer(request)
    assert response.id == "with-params"
    assert response.raw_output_contents[0] == raw_bytes(data)


def test_raw_and_typed_together_refused(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    data = sample("INT32")
    request = typed_request("identity_int32", "INT32", data)
    request.raw_input_contents.append(raw_bytes(data))
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'INPUT'" in err.value.details() and "both" in err.value.details()


def test_raw_size_mismatch(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    request = service_pb2.ModelInferRequest(model_name="identity_fp64")
    request.inputs.add(name="INPUT", datatype="FP64", shape=[1, 4])
    request.raw_input_contents.append(b"\x00" * 31)
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = err.value.details()
    assert "'INPUT'" in details and "31 bytes" in details and "32 bytes" in details


# -- BF16 -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bf16_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    """A server of its own: a model that fails to load must not touch the shared one."""
    repo = tmp_path_factory.mktemp("bf16_repo")
    write_model(repo, "add_sub", add_sub_graph(16), {"max_batch_size": 8})
    proc = ServerProcess(repo, tmp_path_factory.mktemp("bf16_home"))
    yield proc, repo
    proc.stop()


def test_bf16_raw_roundtrip(bf16_server: tuple[ServerProcess, Path]) -> None:
    proc, repo = bf16_server
    write_model(repo, "identity_bf16", identity_bf16_graph(), {"max_batch_size": 8})
    client = grpcclient.InferenceServerClient(proc.url)
    client.load_model("identity_bf16", headers=proc.admin_headers)
    values = np.array([0.0, -1.5, 2.0, 3.25, 1e10, -1e-3, 65504.0, 7.0], dtype=np.float32)
    tensor = grpcclient.InferInput("INPUT", [2, 4], "BF16")
    bf16 = values.reshape(2, 4).astype(ml_dtypes.bfloat16)
    tensor.set_data_from_numpy(bf16)
    result = client.infer("identity_bf16", [tensor])
    response = result.get_response()
    assert response.outputs[0].datatype == "BF16"
    assert response.raw_output_contents[0] == tensor._get_content()
    np.testing.assert_array_equal(result.as_numpy("OUTPUT"), bf16)
