"""Every bad path: the gRPC status code and a message that names the problem.

Malformed requests go to the shared server; queueing, deadlines, cancellation,
message size and run-time failures use a server of their own (module scope).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc

from .clientutil import (
    Fired,
    expect_error,
    fire_all,
    make_inputs,
    metric,
    model_stats,
    sleep_request,
    status_of,
    wait_for,
)
from .extra_models import dynamic_width_graph, gather_graph, sleep_graph
from .onnx_models import write_model
from .process import ServerProcess

GENERIC_INTERNAL = "internal error; see the server log"
MAX_MESSAGE = 65536


@pytest.fixture()
def client(server: ServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    c = grpcclient.InferenceServerClient(server.url)
    yield c
    c.close()


@pytest.fixture()
def stub(server: ServerProcess) -> Iterator[Any]:
    """tritonclient's own generated stub, for requests its helpers refuse to build."""
    with grpc.insecure_channel(server.url) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _add_sub(rows: int = 1, dtype: Any = np.float32, width: int = 16) -> dict[str, np.ndarray]:
    a = np.arange(rows * width, dtype=dtype).reshape(rows, width)
    return {"INPUT0": a, "INPUT1": np.ones_like(a)}


def _raw_request(model: str, **tensors: tuple[str, list[int], bytes]) -> Any:
    request = service_pb2.ModelInferRequest(model_name=model)
    for name, (datatype, shape, raw) in tensors.items():
        request.inputs.add(name=name, datatype=datatype, shape=shape)
        request.raw_input_contents.append(raw)
    return request


def _rpc_error(call: Any, request: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=30)
    return info.value


def _infer_error(
    client: grpcclient.InferenceServerClient, model: str, arrays: dict[str, np.ndarray], **kw: Any
) -> tuple[str, str]:
    exc = expect_error(lambda: client.infer(model, make_inputs(arrays), **kw))
    return status_of(exc), exc.message()


# -- names and versions ---------------------------------------------------------------


def test_unknown_model(client: grpcclient.InferenceServerClient) -> None:
    code, message = _infer_error(client, "no_such_model", _add_sub())
    assert code == "NOT_FOUND"
    assert "no_such_model" in message


@pytest.mark.parametrize("version", ["7", "latest"])
def test_unknown_version(client: grpcclient.InferenceServerClient, version: str) -> None:
    code, message = _infer_error(client, "add_sub", _add_sub(), model_version=version)
    assert code == "NOT_FOUND"
    assert "add_sub" in message and version in message


def test_wrong_input_name(client: grpcclient.InferenceServerClient) -> None:
    arrays = _add_sub()
    arrays["INPUTX"] = arrays.pop("INPUT1")
    code, message = _infer_error(client, "add_sub", arrays)
    assert code == "INVALID_ARGUMENT"
    assert "'INPUTX'" in message and "INPUT1" in message


def test_missing_input(client: grpcclient.InferenceServerClient) -> None:
    arrays = _add_sub()
    del arrays["INPUT1"]
    code, message = _infer_error(client, "add_sub", arrays)
    assert code == "INVALID_ARGUMENT"
    assert "missing" in message and "'INPUT1'" in message


def test_duplicate_input(stub: Any) -> None:
    row = np.ones(16, np.float32).tobytes()
    request = _raw_request("add_sub", INPUT0=("FP32", [1, 16], row), INPUT1=("FP32", [1, 16], row))
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 16])
    request.raw_input_contents.append(row)
    error = _rpc_error(stub.ModelInfer, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'INPUT0'" in error.details() and "more than once" in error.details()


# -- datatypes, shapes, sizes -----------------------------------------------------------


def test_wrong_datatype(client: grpcclient.InferenceServerClient) -> None:
    code, message = _infer_error(client, "add_sub", _add_sub(dtype=np.float64))
    assert code == "INVALID_ARGUMENT"
    assert "'INPUT0'" in message and "FP32" in message and "FP64" in message


def test_unknown_datatype(stub: Any) -> None:
    row = np.ones(16, np.float32).tobytes()
    request = _raw_request("add_sub", INPUT0=("FP8", [1, 16], row), INPUT1=("FP32", [1, 16], row))
    error = _rpc_error(stub.ModelInfer, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'INPUT0'" in error.details() and "FP8" in error.details()


def test_wrong_rank(client: grpcclient.InferenceServerClient) -> None:
    arrays = {"INPUT0": np.ones(16, np.float32), "INPUT1": np.ones(16, np.float32)}
    code, message = _infer_error(client, "add_sub", arrays)
    assert code == "INVALID_ARGUMENT"
    assert "'INPUT0'" in message and "[-1, 16]" in message and "[16]" in message


def test_wrong_dimension(client: grpcclient.InferenceServerClient) -> None:
    code, message = _infer_error(client, "add_sub", _add_sub(rows=2, width=15))
    assert code == "INVALID_ARGUMENT"
    assert "'INPUT0'" in message and "[-1, 16]" in message and "[2, 15]" in message


def test_inputs_disagree_on_rows(client: grpcclient.InferenceServerClient) -> None:
    arrays = {"INPUT0": np.ones((2, 16), np.float32), "INPUT1": np.ones((3, 16), np.float32)}
    code, message = _infer_error(client, "add_sub", arrays)
    assert code == "INVALID_ARGUMENT"
    assert "'INPUT1'" in message and "3 rows" in message and "2" in message


def test_raw_size_mismatch(stub: Any) -> None:
    good = np.ones(16, np.float32).tobytes()
    request = _raw_request(
        "add_sub", INPUT0=("FP32", [1, 16], good[:60]), INPUT1=("FP32", [1, 16], good)
    )
    error = _rpc_error(stub.ModelInfer, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error.details()
    assert "'INPUT0'" in details and "60 bytes" in details and "64 bytes" in details


def test_typed_contents_count_mismatch(stub: Any) -> None:
    request = service_pb2.ModelInferRequest(model_name="add_sub")
    for name, count in (("INPUT0", 15), ("INPUT1", 16)):
        tensor = request.inputs.add(name=name, datatype="FP32", shape=[1, 16])
        tensor.contents.fp32_contents.extend([1.0] * count)
    error = _rpc_error(stub.ModelInfer, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'INPUT0'" in error.details() and "15" in error.details() and "16" in error.details()


def test_raw_and_typed_contents_together(stub: Any) -> None:
    row = np.ones(16, np.float32).tobytes()
    request = _raw_request("add_sub", INPUT0=("FP32", [1, 16], row), INPUT1=("FP32", [1, 16], row))
    request.inputs[0].contents.fp32_contents.extend([1.0] * 16)
    error = _rpc_error(stub.ModelInfer, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'INPUT0'" in error.details()
    assert "raw" in error.details() and "typed" in error.details()


def test_bytes_truncated_length_prefix(stub: Any) -> None:
    elements = b"".join(struct.pack("<I", len(s)) + s for s in (b"ab", b"", b"xyz"))
    raw = elements + b"\x05\x00"  # the fourth element's prefix is cut after 2 bytes
    request = _raw_request("identity_bytes", INPUT=("BYTES", [1, 4], raw))
    error = _rpc_error(stub.ModelInfer, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'INPUT'" in error.details() and "truncated length prefix" in error.details()


def test_zero_rows(client: grpcclient.InferenceServerClient) -> None:
    """The documented answer to a 0-row batch: INVALID_ARGUMENT "0 rows"."""
    code, message = _infer_error(client, "add_sub", _add_sub(rows=0))
    assert code == "INVALID_ARGUMENT"
    assert "0 rows" in message


def test_rows_beyond_the_cap(client: grpcclient.InferenceServerClient) -> None:
    code, message = _infer_error(client, "add_sub", _add_sub(rows=101))
    assert code == "INVALID_ARGUMENT"
    assert "101 rows" in message and "100" in message and "max_request_rows" in message


def test_rows_at_the_cap_are_served(client: grpcclient.InferenceServerClient) -> None:
    arrays = _add_sub(rows=100)
    result = client.infer("add_sub", make_inputs(arrays))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), arrays["INPUT0"] + 1)


# -- outputs and parameters -------------------------------------------------------------


def test_unknown_requested_output(client: grpcclient.InferenceServerClient) -> None:
    outputs = [grpcclient.InferRequestedOutput("NOPE")]
    code, message = _infer_error(client, "add_sub", _add_sub(), outputs=outputs)
    assert code == "INVALID_ARGUMENT"
    assert "'NOPE'" in message and "OUTPUT0" in message


def test_output_requested_twice(client: grpcclient.InferenceServerClient) -> None:
    outputs = [grpcclient.InferRequestedOutput("OUTPUT0") for _ in range(2)]
    code, message = _infer_error(client, "add_sub", _add_sub(), outputs=outputs)
    assert code == "INVALID_ARGUMENT"
    assert "more than once" in message


def test_priority_out_of_range(client: grpcclient.InferenceServerClient) -> None:
    arrays = {"INPUT": np.ones((1, 1), np.float32)}
    code, message = _infer_error(client, "slow", arrays, priority=3)
    assert code == "INVALID_ARGUMENT"
    assert "priority" in message and "3" in message and "2 priority level" in message


def test_negative_timeout_parameter(client: grpcclient.InferenceServerClient) -> None:
    code, message = _infer_error(client, "add_sub", _add_sub(), timeout=-5)
    assert code == "INVALID_ARGUMENT"
    assert "'timeout'" in message and "-5" in message


# -- queueing -------------------------------------------------------------------------------


def test_full_queue(client: grpcclient.InferenceServerClient) -> None:
    """slow: max_queue_size 2; a burst gets some UNAVAILABLE "queue full", the rest answers."""
    requests = [{"INPUT": np.full((1, 1), i, np.float32)} for i in range(16)]
    outcomes = fire_all(client, "slow", requests)
    refused = [o for o in outcomes if o.error is not None]
    served = [o for o in outcomes if o.error is None]
    assert refused and served
    for o in refused:
        assert o.error is not None
        assert status_of(o.error) == "UNAVAILABLE", o.error
        assert "queue full" in o.error.message() and "slow" in o.error.message()
    for o in served:
        assert o.output("OUTPUT")[0, 0] == o.index


# -- a server of its own: deadlines, cancellation, message size, internal errors ----------


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repo = tmp_path_factory.mktemp("error_models")
    write_model(
        repo, "sleep", sleep_graph(),
        {"max_batch_size": 1, "max_queue_delay_us": 0, "max_queue_size": 8},
    )
    write_model(repo, "gather", gather_graph(), {"max_batch_size": 8, "max_queue_delay_us": 0})
    write_model(repo, "dynamic", dynamic_width_graph(), {"max_batch_size": 4096})
    write_model(
        repo, "gather_batched", gather_graph(), {"max_batch_size": 8, "max_queue_delay_us": 300_000}
    )
    proc = ServerProcess(
        repo, tmp_path_factory.mktemp("error_home"), "--max-message-bytes", str(MAX_MESSAGE)
    )
    yield proc
    assert proc.stop() == 0, proc.stderr


@pytest.fixture()
def own_client(own_server: ServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    c = grpcclient.InferenceServerClient(own_server.url)
    c.infer("sleep", make_inputs(sleep_request(0.0)))  # connection and first-call costs
    yield c
    c.close()


def _pending(server: ServerProcess, model: str) -> float:
    return metric(server.metrics_port, "nv_inference_pending_request_count", model=model,
                  version="1")


def _failures(server: ServerProcess, model: str, reason: str) -> float:
    """nv_inference_request_failure{reason}; either spelling (test_metrics checks names)."""
    return sum(
        metric(server.metrics_port, name, model=model, version="1", reason=reason)
        for name in ("nv_inference_request_failure", "nv_inference_request_failure_total")
    )


def _busy(client: grpcclient.InferenceServerClient, seconds: float) -> Fired:
    """Keep the sleep model executing for ``seconds`` (returns once it runs)."""
    fired = Fired()
    fired.send(client, "sleep", sleep_request(seconds, marker=-1))
    time.sleep(0.1)
    return fired


def test_grpc_deadline_expires_in_the_queue(
    own_server: ServerProcess, own_client: grpcclient.InferenceServerClient
) -> None:
    before = model_stats(own_client, "sleep")
    blocker = _busy(own_client, 1.0)
    start = time.monotonic()
    exc = expect_error(
        lambda: own_client.infer("sleep", make_inputs(sleep_request(0.0)), client_timeout=0.2)
    )
    assert status_of(exc) == "DEADLINE_EXCEEDED", exc
    assert time.monotonic() - start < 0.8
    wait_for(lambda: _pending(own_server, "sleep") == 0, 0.5, "the request to leave the queue")
    (done,) = blocker.wait()
    assert done.error is None
    after = model_stats(own_client, "sleep")
    assert after.execution_count - before.execution_count == 1  # the blocker only
    assert after.inference_stats.fail.count - before.inference_stats.fail.count == 1
    assert after.inference_stats.success.count - before.inference_stats.success.count == 1


def test_timeout_parameter_expires_in_the_queue(
    own_server: ServerProcess, own_client: grpcclient.InferenceServerClient
) -> None:
    before = model_stats(own_client, "sleep")
    rejected = _failures(own_server, "sleep", "REJECTED")
    blocker = _busy(own_client, 1.0)
    start = time.monotonic()
    exc = expect_error(
        lambda: own_client.infer("sleep", make_inputs(sleep_request(0.0)), timeout=200_000)
    )
    elapsed = time.monotonic() - start
    assert status_of(exc) == "DEADLINE_EXCEEDED", exc
    assert "waited" in exc.message() and "queue" in exc.message() and "sleep" in exc.message()
    assert 0.15 < elapsed < 0.8, f"evicted after {elapsed:.3f}s; the timeout was 0.2s"
    assert _pending(own_server, "sleep") == 0
    (done,) = blocker.wait()
    assert done.error is None
    after = model_stats(own_client, "sleep")
    assert after.execution_count - before.execution_count == 1
    assert after.inference_stats.fail.count - before.inference_stats.fail.count == 1
    assert _failures(own_server, "sleep", "REJECTED") == rejected + 1


def test_timeout_parameter_not_reached(own_client: grpcclient.InferenceServerClient) -> None:
    result = own_client.infer(
        "sleep", make_inputs(sleep_request(0.0, marker=3)), timeout=10_000_000
    )
    assert result.as_numpy("OUTPUT")[0, 0] == 3


def test_cancelled_call_leaves_the_queue(
    own_server: ServerProcess, own_client: grpcclient.InferenceServerClient
) -> None:
    before = model_stats(own_client, "sleep")
    cancelled = _failures(own_server, "sleep", "CANCELED")
    blocker = _busy(own_client, 1.0)
    victim = Fired()
    victim.send(own_client, "sleep", sleep_request(0.0))
    wait_for(lambda: _pending(own_server, "sleep") == 1, 0.5, "the request to queue")
    victim.handles[0].cancel()
    (outcome,) = victim.wait()
    assert outcome.error is not None and "cancel" in outcome.error.message().lower()
    # It leaves the queue while the blocker still runs, not when its turn comes.
    wait_for(lambda: _pending(own_server, "sleep") == 0, 0.5, "the request to leave the queue")
    wait_for(lambda: _failures(own_server, "sleep", "CANCELED") == cancelled + 1, 2)
    (done,) = blocker.wait()
    assert done.error is None
    after = model_stats(own_client, "sleep")
    assert after.execution_count - before.execution_count == 1  # never executed
    assert after.inference_count - before.inference_count == 1


def test_message_larger_than_the_limit(own_client: grpcclient.InferenceServerClient) -> None:
    index = np.zeros((MAX_MESSAGE // 8 + 16, 1), np.int64)  # > 64 KiB of INT64
    exc = expect_error(lambda: own_client.infer("gather", make_inputs({"INDEX": index})))
    assert status_of(exc) == "RESOURCE_EXHAUSTED", exc
    assert "larger than max" in exc.message() and str(MAX_MESSAGE) in exc.message()
    small = own_client.infer("gather", make_inputs({"INDEX": np.array([[2]], np.int64)}))
    assert small.as_numpy("OUTPUT")[0, 0] == 20


def test_response_larger_than_the_limit(own_client: grpcclient.InferenceServerClient) -> None:
    """60 kB in, 66 kB out (SUM and DOUBLE): the answer is refused, not truncated."""
    x = np.ones((1500, 10), np.float32)
    exc = expect_error(lambda: own_client.infer("dynamic", make_inputs({"INPUT": x})))
    assert status_of(exc) == "RESOURCE_EXHAUSTED", exc
    assert "larger than max" in exc.message() and str(MAX_MESSAGE) in exc.message()


def test_unexpected_failure_is_internal_and_generic(
    own_server: ServerProcess, own_client: grpcclient.InferenceServerClient
) -> None:
    """ONNX Runtime fails at run time (index out of range): INTERNAL, details in the log."""
    exc = expect_error(
        lambda: own_client.infer("gather", make_inputs({"INDEX": np.array([[9]], np.int64)}))
    )
    assert status_of(exc) == "INTERNAL", exc
    assert exc.message() == GENERIC_INTERNAL
    wait_for(lambda: "out of data bounds" in own_server.stderr, 5, "the log to name the cause")
    assert "Traceback" in own_server.stderr
    ok = own_client.infer("gather", make_inputs({"INDEX": np.array([[1], [3]], np.int64)}))
    np.testing.assert_array_equal(ok.as_numpy("OUTPUT"), [[10.0], [30.0]])


def test_a_failing_request_does_not_fail_its_batch_mates(
    own_client: grpcclient.InferenceServerClient,
) -> None:
    """Requests that shared an execution with a request that breaks it are still answered."""
    before = model_stats(own_client, "gather_batched")
    indexes = [[[1]], [[9]], [[2], [3]], [[0]]]
    outcomes = fire_all(
        own_client, "gather_batched", [{"INDEX": np.array(i, np.int64)} for i in indexes]
    )
    after = model_stats(own_client, "gather_batched")
    bad = outcomes[1]
    assert bad.error is not None and status_of(bad.error) == "INTERNAL"
    assert bad.error.message() == GENERIC_INTERNAL
    for i in (0, 2, 3):
        expected = np.array(indexes[i], np.float32) * 10
        np.testing.assert_array_equal(outcomes[i].output("OUTPUT"), expected)
    assert after.inference_stats.success.count - before.inference_stats.success.count == 3
    assert after.inference_stats.fail.count - before.inference_stats.fail.count == 1
    assert after.inference_count - before.inference_count == 4  # the rows that ran
