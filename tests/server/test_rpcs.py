"""Every RPC of ``inference.GRPCInferenceService`` through tritonclient, plus health,
reflection and metrics.

Read-only checks use the shared ``server``; run-time load/unload, version policies and
reflection use a server of this module (``own``) on a repository of its own, each
test on models no other test touches.
"""

from __future__ import annotations

import asyncio
import queue
import re
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from .onnx_models import add_sub_graph, offset_graph, write_model
from .process import ServerProcess

INFERENCE_SERVICE = "inference.GRPCInferenceService"
# Exactly the Triton extensions Osprey implements (see server/servicer.py).
EXTENSIONS = {
    "model_repository",
    "model_configuration",
    "schedule_policy",
    "parameters",
    "statistics",
}
NOT_IMPLEMENTED_EXTENSIONS = {
    "system_shared_memory",
    "cuda_shared_memory",
    "classification",
    "sequence",
    "trace",
    "logging",
    "binary_tensor_data",
}


# -- helpers ----------------------------------------------------------------------------


def add_sub_inputs(
    rows: int = 1, value: float = 1.0
) -> tuple[list[grpcclient.InferInput], npt.NDArray[Any]]:
    a = np.arange(rows * 16, dtype=np.float32).reshape(rows, 16)
    b = np.full((rows, 16), value, dtype=np.float32)
    inputs = [
        grpcclient.InferInput("INPUT0", [rows, 16], "FP32"),
        grpcclient.InferInput("INPUT1", [rows, 16], "FP32"),
    ]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    return inputs, a + b


def offset_input(value: float = 10.0) -> list[grpcclient.InferInput]:
    tensor = grpcclient.InferInput("INPUT", [1, 1], "FP32")
    tensor.set_data_from_numpy(np.array([[value]], dtype=np.float32))
    return [tensor]


def expect_error(
    call: Callable[[], object], status: str, *fragments: str
) -> InferenceServerException:
    """``call`` fails with ``status``; the message contains every fragment."""
    with pytest.raises(InferenceServerException) as err:
        call()
    assert err.value.status() == status, err.value
    for fragment in fragments:
        assert fragment in err.value.message(), (fragment, err.value.message())
    return err.value


def ready_index(client: grpcclient.InferenceServerClient) -> Any:
    """RepositoryIndex with ``ready=True`` (tritonclient's helper cannot ask for it)."""
    request = service_pb2.RepositoryIndexRequest(ready=True)
    return client._client_stub.RepositoryIndex(request, timeout=10)


def health_status(url: str, service: str) -> Any:
    with grpc.insecure_channel(url) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    c = grpcclient.InferenceServerClient(server.url)
    yield c
    c.close()


@dataclass
class Own:
    proc: ServerProcess
    repo: Path
    client: grpcclient.InferenceServerClient


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Own]:
    """A server of this module (with --reflection) whose repository the tests change."""
    repo = tmp_path_factory.mktemp("rpc_repo")
    write_model(repo, "toggle", add_sub_graph(16), {"max_batch_size": 8})
    write_model(repo, "guarded", offset_graph(1.0), {"max_batch_size": 8})
    write_model(repo, "growing", offset_graph(1.0), {"max_batch_size": 8})
    policies = {
        "latest2": {"latest": 2},
        "every_version": {"all": True},
        "picked": {"specific": [1, 3]},
    }
    for name, policy in policies.items():
        for version in (1, 2, 3):
            write_model(
                repo,
                name,
                offset_graph(float(version)),
                {"max_batch_size": 8, "version_policy": policy},
                version=version,
            )
    proc = ServerProcess(repo, tmp_path_factory.mktemp("rpc_home"), "--reflection")
    c = grpcclient.InferenceServerClient(proc.url)
    yield Own(proc, repo, c)
    c.close()
    proc.stop()


# -- liveness, readiness, metadata --------------------------------------------------------


def test_server_live_and_ready(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_server_live() is True
    assert client.is_server_ready() is True


def test_model_ready(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_model_ready("add_sub") is True
    assert client.is_model_ready("add_sub", "1") is True
    assert client.is_model_ready("add_sub", "2") is False
    assert client.is_model_ready("add_sub", "latest") is False
    assert client.is_model_ready("no_such_model") is False


def test_server_metadata(client: grpcclient.InferenceServerClient) -> None:
    meta = client.get_server_metadata()
    assert meta.name == "osprey"
    assert meta.version
    assert set(meta.extensions) == EXTENSIONS
    assert len(meta.extensions) == len(EXTENSIONS)
    assert not set(meta.extensions) & NOT_IMPLEMENTED_EXTENSIONS


def test_model_metadata_batching(client: grpcclient.InferenceServerClient) -> None:
    meta = client.get_model_metadata("add_sub")
    assert meta.name == "add_sub"
    assert list(meta.versions) == ["1"]
    assert meta.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        ("INPUT0", "FP32", [-1, 16]),
        ("INPUT1", "FP32", [-1, 16]),
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [
        ("OUTPUT0", "FP32", [-1, 16]),
        ("OUTPUT1", "FP32", [-1, 16]),
    ]
    assert client.get_model_metadata("add_sub", "1").name == "add_sub"


def test_model_metadata_not_batching(client: grpcclient.InferenceServerClient) -> None:
    meta = client.get_model_metadata("add_sub_nobatch")
    assert [list(t.shape) for t in meta.inputs] == [[16], [16]]
    assert [list(t.shape) for t in meta.outputs] == [[16], [16]]


def test_model_metadata_bytes_datatype(client: grpcclient.InferenceServerClient) -> None:
    meta = client.get_model_metadata("identity_bytes")
    assert meta.inputs[0].datatype == "BYTES"
    assert list(meta.inputs[0].shape) == [-1, 4]


def test_model_metadata_unknown(client: grpcclient.InferenceServerClient) -> None:
    expect_error(
        lambda: client.get_model_metadata("no_such_model"), "StatusCode.NOT_FOUND", "no_such_model"
    )
    expect_error(
        lambda: client.get_model_metadata("add_sub", "7"), "StatusCode.NOT_FOUND", "add_sub", "7"
    )


def test_model_config_batching(client: grpcclient.InferenceServerClient) -> None:
    """The fields perf_analyzer and tritonclient users read."""
    config = client.get_model_config("add_sub").config
    assert config.name == "add_sub"
    assert config.platform == "onnxruntime_onnx"
    assert config.backend == "onnxruntime"
    assert config.max_batch_size == 8
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [
        ("INPUT0", mc.TYPE_FP32, [16]),
        ("INPUT1", mc.TYPE_FP32, [16]),
    ]
    assert [(t.name, t.data_type, list(t.dims)) for t in config.output] == [
        ("OUTPUT0", mc.TYPE_FP32, [16]),
        ("OUTPUT1", mc.TYPE_FP32, [16]),
    ]
    assert config.HasField("dynamic_batching")
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000
    assert len(config.instance_group) == 1
    assert config.instance_group[0].count == 1
    assert config.instance_group[0].kind in (
        mc.ModelInstanceGroup.KIND_CPU,
        mc.ModelInstanceGroup.KIND_GPU,
    )
    assert config.model_transaction_policy.decoupled is False
    assert config.version_policy.latest.num_versions == 1
    assert config.parameters["max_request_rows"].string_value == "100"
    # the JSON form that perf_analyzer-style tooling parses
    as_json = client.get_model_config("add_sub", as_json=True)["config"]
    assert as_json["max_batch_size"] == 8
    assert as_json["input"][0]["data_type"] == "TYPE_FP32"
    assert as_json["input"][0]["dims"] == ["16"]
    assert "dynamic_batching" in as_json


def test_model_config_not_batching(client: grpcclient.InferenceServerClient) -> None:
    config = client.get_model_config("add_sub_nobatch").config
    assert config.max_batch_size == 0
    assert [list(t.dims) for t in config.input] == [[16], [16]]
    assert not config.HasField("dynamic_batching")
    assert config.model_transaction_policy.decoupled is False


def test_model_config_priorities_and_types(client: grpcclient.InferenceServerClient) -> None:
    slow = client.get_model_config("slow").config
    assert slow.dynamic_batching.priority_levels == 2
    assert slow.dynamic_batching.default_priority_level == 2
    assert slow.dynamic_batching.default_queue_policy.max_queue_size == 2
    assert slow.dynamic_batching.max_queue_delay_microseconds == 0
    assert client.get_model_config("identity_bytes").config.input[0].data_type == mc.TYPE_STRING
    assert client.get_model_config("identity_fp16").config.input[0].data_type == mc.TYPE_FP16
    assert client.get_model_config("identity_uint64").config.input[0].data_type == mc.TYPE_UINT64
    assert client.get_model_config("identity_bool").config.input[0].data_type == mc.TYPE_BOOL


def test_model_config_unknown(client: grpcclient.InferenceServerClient) -> None:
    expect_error(
        lambda: client.get_model_config("no_such_model"), "StatusCode.NOT_FOUND", "no_such_model"
    )


# -- statistics ---------------------------------------------------------------------------


def _stats(client: grpcclient.InferenceServerClient, name: str, version: str = "") -> Any:
    response = client.get_inference_statistics(name, version)
    assert len(response.model_stats) == 1
    return response.model_stats[0]


def test_model_statistics_move(client: grpcclient.InferenceServerClient) -> None:
    before = _stats(client, "add_sub")
    rows = 3
    for _ in range(4):
        inputs, _ = add_sub_inputs(rows)
        client.infer("add_sub", inputs)
    after = _stats(client, "add_sub", "1")
    assert after.name == "add_sub" and after.version == "1"
    inf, was = after.inference_stats, before.inference_stats
    assert inf.success.count == was.success.count + 4
    assert inf.success.ns > was.success.ns
    assert inf.fail.count == was.fail.count
    assert after.inference_count == before.inference_count + 4 * rows
    # sequential requests never share a batch
    assert after.execution_count == before.execution_count + 4
    assert inf.queue.count == was.queue.count + 4 and inf.queue.ns > was.queue.ns
    for part in ("compute_input", "compute_infer", "compute_output"):
        now, then = getattr(inf, part), getattr(was, part)
        assert now.count == then.count + 4, part
        assert now.ns > then.ns, part
    assert after.last_inference >= before.last_inference
    assert after.last_inference > 1_600_000_000_000  # ms since the epoch
    batch = {b.batch_size: b for b in after.batch_stats}
    old = {b.batch_size: b for b in before.batch_stats}
    assert rows in batch
    done = batch[rows].compute_infer.count - (old[rows].compute_infer.count if rows in old else 0)
    assert done == 4
    assert batch[rows].compute_infer.ns > 0 and batch[rows].compute_input.ns > 0


def test_model_statistics_failures_count(client: grpcclient.InferenceServerClient) -> None:
    before = _stats(client, "add_sub")
    bad = grpcclient.InferInput("INPUT0", [1, 16], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 16), dtype=np.float32))
    with pytest.raises(InferenceServerException):
        client.infer("add_sub", [bad])  # INPUT1 missing
    after = _stats(client, "add_sub")
    assert after.inference_stats.fail.count == before.inference_stats.fail.count + 1
    assert after.inference_stats.success.count == before.inference_stats.success.count


def test_model_statistics_all_models(client: grpcclient.InferenceServerClient) -> None:
    stats = client.get_inference_statistics().model_stats
    index = ready_index(client)
    served = sorted((m.name, m.version) for m in index.models)
    assert sorted((s.name, s.version) for s in stats) == served
    assert len(stats) >= 16


def test_model_statistics_unknown(client: grpcclient.InferenceServerClient) -> None:
    expect_error(
        lambda: client.get_inference_statistics("no_such_model"),
        "StatusCode.NOT_FOUND",
        "no_such_model",
    )
    expect_error(
        lambda: client.get_inference_statistics("add_sub", "9"),
        "StatusCode.NOT_FOUND",
        "add_sub",
        "9",
    )
    expect_error(
        lambda: client.get_inference_statistics("", "1"),
        "StatusCode.NOT_FOUND",
        "version",
        "without a model name",
    )


# -- repository -----------------------------------------------------------------------------


def test_repository_index(client: grpcclient.InferenceServerClient) -> None:
    everything = client.get_model_repository_index()
    ready = ready_index(client)
    names = {m.name for m in everything.models}
    assert {"add_sub", "add_sub_nobatch", "slow", "identity_fp32", "identity_bytes"} <= names
    assert all(m.state == "READY" and m.version == "1" for m in ready.models)
    add_sub = [m for m in everything.models if m.name == "add_sub"]
    assert [(m.version, m.state) for m in add_sub] == [("1", "READY")]


def test_unload_then_load_back(own: Own) -> None:
    c = own.client
    inputs, expected = add_sub_inputs()
    np.testing.assert_array_equal(c.infer("toggle", inputs).as_numpy("OUTPUT0"), expected)
    health = f"{INFERENCE_SERVICE}/toggle"
    assert health_status(own.proc.url, health) == health_pb2.HealthCheckResponse.SERVING

    c.unload_model("toggle", headers=own.proc.admin_headers)
    try:
        _check_unloaded(own, inputs, health)
    finally:
        c.load_model("toggle", headers=own.proc.admin_headers)
    assert c.is_model_ready("toggle") is True
    np.testing.assert_array_equal(c.infer("toggle", inputs).as_numpy("OUTPUT0"), expected)
    assert wait_for(
        lambda: health_status(own.proc.url, health) == health_pb2.HealthCheckResponse.SERVING
    )


def _check_unloaded(own: Own, inputs: list[grpcclient.InferInput], health: str) -> None:
    c = own.client
    assert c.is_model_ready("toggle") is False
    expect_error(lambda: c.infer("toggle", inputs), "StatusCode.NOT_FOUND", "toggle")
    rows = [m for m in c.get_model_repository_index().models if m.name == "toggle"]
    assert len(rows) == 1 and rows[0].state != "READY"
    assert "toggle" not in {m.name for m in ready_index(c).models}
    assert wait_for(
        lambda: health_status(own.proc.url, health) == health_pb2.HealthCheckResponse.NOT_SERVING
    )
    # the rest of the server is untouched
    assert c.is_server_ready() is True
    assert health_status(own.proc.url, "") == health_pb2.HealthCheckResponse.SERVING


def test_load_and_unload_unknown(own: Own) -> None:
    admin = own.proc.admin_headers
    expect_error(
        lambda: own.client.load_model("no_such_model", headers=admin),
        "StatusCode.NOT_FOUND",
        "no_such_model",
    )
    expect_error(
        lambda: own.client.unload_model("no_such_model", headers=admin),
        "StatusCode.NOT_FOUND",
        "no_such_model",
    )


def test_load_with_config_override_refused(own: Own) -> None:
    expect_error(
        lambda: own.client.load_model(
            "toggle", config='{"max_batch_size": 2}', headers=own.proc.admin_headers
        ),
        "StatusCode.UNIMPLEMENTED",
        "parameters",
    )
    assert own.client.is_model_ready("toggle") is True


def test_corrupt_new_version_keeps_old_serving(own: Own) -> None:
    c = own.client
    assert c.infer("guarded", offset_input(10.0)).as_numpy("OUTPUT")[0, 0] == 11.0
    corrupt = own.repo / "guarded" / "2" / "model.onnx"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"\x00garbage, not an ONNX protobuf\xff" * 10)
    with pytest.raises(InferenceServerException) as err:
        c.load_model("guarded", headers=own.proc.admin_headers)
    assert err.value.status() not in (None, "StatusCode.OK", "StatusCode.INTERNAL")
    assert "guarded" in err.value.message() and "version 2" in err.value.message()
    # version 1 is still the one answering
    result = c.infer("guarded", offset_input(10.0))
    assert result.get_response().model_version == "1"
    assert result.as_numpy("OUTPUT")[0, 0] == 11.0
    assert c.is_model_ready("guarded") is True
    assert c.is_model_ready("guarded", "2") is False
    assert list(c.get_model_metadata("guarded").versions) == ["1"]
    assert health_status(own.proc.url, f"{INFERENCE_SERVICE}/guarded") == (
        health_pb2.HealthCheckResponse.SERVING
    )


def test_failed_load_of_new_model(own: Own) -> None:
    c = own.client
    bad = own.repo / "broken" / "1" / "model.onnx"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not onnx")
    with pytest.raises(InferenceServerException) as err:
        c.load_model("broken", headers=own.proc.admin_headers)
    assert "broken" in err.value.message()
    assert c.is_model_ready("broken") is False
    rows = [m for m in c.get_model_repository_index().models if m.name == "broken"]
    assert len(rows) == 1 and rows[0].state == "UNAVAILABLE" and rows[0].reason
    expect_error(lambda: c.infer("broken", offset_input()), "StatusCode.NOT_FOUND", "broken")
    assert c.is_server_ready() is True


def test_load_serves_a_new_version(own: Own) -> None:
    c = own.client
    assert c.infer("growing", offset_input(0.0)).as_numpy("OUTPUT")[0, 0] == 1.0
    write_model(own.repo, "growing", offset_graph(2.0), None, version=2)
    c.load_model("growing", headers=own.proc.admin_headers)
    result = c.infer("growing", offset_input(0.0))
    assert result.get_response().model_version == "2"
    assert result.as_numpy("OUTPUT")[0, 0] == 2.0
    assert c.is_model_ready("growing", "1") is False  # latest 1 by default
    assert list(c.get_model_metadata("growing").versions) == ["2"]


@pytest.mark.parametrize(
    ("model", "served"),
    [("latest2", ["2", "3"]), ("every_version", ["1", "2", "3"]), ("picked", ["1", "3"])],
)
def test_version_policy(own: Own, model: str, served: list[str]) -> None:
    c = own.client
    assert list(c.get_model_metadata(model).versions) == served
    for version in ("1", "2", "3"):
        assert c.is_model_ready(model, version) is (version in served), version
        if version in served:
            result = c.infer(model, offset_input(100.0), model_version=version)
            assert result.get_response().model_version == version
            assert result.as_numpy("OUTPUT")[0, 0] == 100.0 + int(version)
        else:
            expect_error(
                lambda v=version: c.infer(model, offset_input(), model_version=v),  # type: ignore[misc]
                "StatusCode.NOT_FOUND",
                model,
                f"version {version}",
            )
    # no version: the newest served one answers
    latest = c.infer(model, offset_input(0.0))
    assert latest.get_response().model_version == served[-1]
    index = [(m.version, m.state) for m in c.get_model_repository_index().models if m.name == model]
    assert index == [(v, "READY") for v in served]
    stats = c.get_inference_statistics(model).model_stats
    assert [s.version for s in stats] == served
    config = c.get_model_config(model).config
    if model == "latest2":
        assert config.version_policy.latest.num_versions == 2
    elif model == "every_version":
        assert config.version_policy.HasField("all")
    else:
        assert list(config.version_policy.specific.versions) == [1, 3]


# -- inference in every client style --------------------------------------------------------


def test_infer_sync(client: grpcclient.InferenceServerClient) -> None:
    inputs, expected = add_sub_inputs(2)
    result = client.infer("add_sub", inputs, request_id="sync")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), expected)
    assert result.get_response().id == "sync"
    result = client.infer("add_sub_nobatch", [_nobatch(0), _nobatch(1)])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), np.arange(16) + 1.0)


def _nobatch(which: int) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(f"INPUT{which}", [16], "FP32")
    data = np.arange(16, dtype=np.float32) if which == 0 else np.ones(16, dtype=np.float32)
    tensor.set_data_from_numpy(data)
    return tensor


def test_infer_async_callback(client: grpcclient.InferenceServerClient) -> None:
    done: queue.Queue[tuple[Any, Any]] = queue.Queue()
    expected = {}
    for i in range(6):
        inputs, want = add_sub_inputs(1, value=float(i))
        expected[f"a{i}"] = want
        client.async_infer(
            "add_sub",
            inputs,
            lambda result, error: done.put((result, error)),
            request_id=f"a{i}",
        )
    seen = set()
    for _ in range(6):
        result, error = done.get(timeout=10)
        assert error is None
        rid = result.get_response().id
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), expected[rid])
        seen.add(rid)
    assert seen == set(expected)
    # an error arrives through the callback too
    client.async_infer(
        "no_such_model", add_sub_inputs()[0], lambda result, error: done.put((result, error))
    )
    result, error = done.get(timeout=10)
    assert result is None
    assert error.status() == "StatusCode.NOT_FOUND" and "no_such_model" in error.message()


async def test_infer_aio(server: ServerProcess) -> None:
    async with aioclient.InferenceServerClient(server.url) as c:
        assert await c.is_server_live()
        assert await c.is_model_ready("add_sub")
        assert (await c.get_model_metadata("add_sub")).name == "add_sub"
        calls = []
        wanted = []
        for i in range(8):
            inputs, want = add_sub_inputs(1, value=float(i))
            wanted.append(want)
            calls.append(c.infer("add_sub", inputs, request_id=f"aio{i}"))
        results = await asyncio.gather(*calls)
        for i, result in enumerate(results):
            assert result.get_response().id == f"aio{i}"
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), wanted[i])
        with pytest.raises(InferenceServerException) as err:
            await c.infer("no_such_model", add_sub_inputs()[0])
        assert err.value.status() == "StatusCode.NOT_FOUND"
        assert "no_such_model" in err.value.message()


async def test_stream_aio(server: ServerProcess) -> None:
    async def requests() -> AsyncIterator[dict[str, Any]]:
        for i in range(3):
            model = "no_such_model" if i == 1 else "add_sub"
            yield {
                "model_name": model,
                "inputs": add_sub_inputs(1, float(i))[0],
                "request_id": f"s{i}",
            }

    async with aioclient.InferenceServerClient(server.url) as c:
        answers = [answer async for answer in c.stream_infer(requests())]
    assert len(answers) == 3
    errors = [e for _, e in answers if e is not None]
    results = {r.get_response().id: r for r, _ in answers if r is not None}
    assert len(errors) == 1 and "no_such_model" in errors[0].message()
    assert set(results) == {"s0", "s2"}
    np.testing.assert_array_equal(results["s2"].as_numpy("OUTPUT0"), add_sub_inputs(1, 2.0)[1])


def test_stream_with_error_stays_open(server: ServerProcess) -> None:
    c = grpcclient.InferenceServerClient(server.url)
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    c.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        c.async_stream_infer("add_sub", add_sub_inputs(1, 1.0)[0], request_id="first")
        c.async_stream_infer("no_such_model", add_sub_inputs()[0], request_id="bad")
        bad_shape = grpcclient.InferInput("INPUT0", [1, 3], "FP32")
        bad_shape.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
        c.async_stream_infer("add_sub", [bad_shape, add_sub_inputs()[0][1]], request_id="shape")
        got = [answers.get(timeout=10) for _ in range(3)]
        results = {r.get_response().id: r for r, e in got if e is None}
        errors = [e for r, e in got if e is not None]
        assert set(results) == {"first"}
        messages = sorted(e.message() for e in errors)
        assert len(messages) == 2
        assert any("no_such_model" in m for m in messages)
        assert any("'INPUT0'" in m and "[1, 3]" in m for m in messages)
        # the stream is still open: later requests are answered
        for i in range(3):
            c.async_stream_infer(
                "add_sub",
                add_sub_inputs(1, float(i))[0],
                request_id=f"later{i}",
                enable_empty_final_response=True,  # a Triton parameter Osprey ignores
            )
        later = [answers.get(timeout=10) for _ in range(3)]
        assert all(e is None for _, e in later)
        by_id = {r.get_response().id: r for r, _ in later}
        assert set(by_id) == {"later0", "later1", "later2"}
        for i in range(3):
            np.testing.assert_array_equal(
                by_id[f"later{i}"].as_numpy("OUTPUT0"), add_sub_inputs(1, float(i))[1]
            )
            assert by_id[f"later{i}"].get_response().parameters["osprey_decision_id"].string_param
        assert answers.empty()
    finally:
        c.stop_stream()
        c.close()


def test_stream_error_names_its_request(server: ServerProcess) -> None:
    """Triton's wrapper: an error response carries ``error_message`` plus the failed
    request's model and id, so a client can tell which request failed."""
    ok = service_pb2.ModelInferRequest(model_name="identity_int32", id="fine")
    ok.inputs.add(name="INPUT", datatype="INT32", shape=[1, 4])
    ok.raw_input_contents.append(np.arange(4, dtype="<i4").tobytes())
    bad = service_pb2.ModelInferRequest(model_name="no_such_model", id="oops")
    bad.inputs.add(name="INPUT", datatype="INT32", shape=[1, 4])
    bad.raw_input_contents.append(np.arange(4, dtype="<i4").tobytes())
    with grpc.insecure_channel(server.url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        answers = list(stub.ModelStreamInfer(iter([bad, ok, bad]), timeout=10))
    assert len(answers) == 3
    failed = [a for a in answers if a.error_message]
    fine = [a for a in answers if not a.error_message]
    assert len(failed) == 2 and len(fine) == 1
    for a in failed:
        assert "no_such_model" in a.error_message
        assert a.infer_response.id == "oops"
        assert a.infer_response.model_name == "no_such_model"
    assert fine[0].infer_response.id == "fine"
    assert fine[0].infer_response.raw_output_contents[0] == np.arange(4, dtype="<i4").tobytes()


# -- not implemented --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rpc", "call"),
    [
        ("SystemSharedMemoryStatus", lambda c: c.get_system_shared_memory_status()),
        (
            "SystemSharedMemoryRegister",
            lambda c: c.register_system_shared_memory("region", "/osprey_shm", 64),
        ),
        ("SystemSharedMemoryUnregister", lambda c: c.unregister_system_shared_memory()),
        ("CudaSharedMemoryStatus", lambda c: c.get_cuda_shared_memory_status()),
        (
            "CudaSharedMemoryRegister",
            lambda c: c.register_cuda_shared_memory("region", b"\x00" * 64, 0, 64),
        ),
        ("CudaSharedMemoryUnregister", lambda c: c.unregister_cuda_shared_memory()),
        ("TraceSetting", lambda c: c.get_trace_settings()),
        ("TraceSetting", lambda c: c.update_trace_settings(settings={"trace_rate": "1"})),
        ("LogSettings", lambda c: c.get_log_settings()),
        ("LogSettings", lambda c: c.update_log_settings({"log_info": True})),
    ],
)
def test_unimplemented_rpcs(
    client: grpcclient.InferenceServerClient, rpc: str, call: Callable[[Any], object]
) -> None:
    err = expect_error(lambda: call(client), "StatusCode.UNIMPLEMENTED", rpc, "not implemented")
    if "SharedMemory" in rpc:
        assert "in the request" in err.message()


def test_shared_memory_input_refused(client: grpcclient.InferenceServerClient) -> None:
    tensor = grpcclient.InferInput("INPUT", [1, 4], "FP32")
    tensor.set_shared_memory("region", 16)
    expect_error(
        lambda: client.infer("identity_fp32", [tensor]),
        "StatusCode.UNIMPLEMENTED",
        "shared memory",
        "'INPUT'",
    )


# -- health and reflection ------------------------------------------------------------------


def test_health(server: ServerProcess) -> None:
    serving = health_pb2.HealthCheckResponse.SERVING
    assert health_status(server.url, "") == serving
    assert health_status(server.url, INFERENCE_SERVICE) == serving
    for model in ("add_sub", "identity_bytes", "slow"):
        assert health_status(server.url, f"{INFERENCE_SERVICE}/{model}") == serving
    with pytest.raises(grpc.RpcError) as err:
        health_status(server.url, f"{INFERENCE_SERVICE}/no_such_model")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def _reflection_services(url: str) -> list[str]:
    with grpc.insecure_channel(url) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        responses = list(stub.ServerReflectionInfo(iter([request]), timeout=5))
        return [s.name for s in responses[0].list_services_response.service]


def test_reflection_off_by_default(server: ServerProcess) -> None:
    with pytest.raises(grpc.RpcError) as err:
        _reflection_services(server.url)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_reflection_with_flag(own: Own) -> None:
    services = _reflection_services(own.proc.url)
    assert INFERENCE_SERVICE in services
    assert "grpc.health.v1.Health" in services
    with grpc.insecure_channel(own.proc.url) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        assert INFERENCE_SERVICE in set(database.get_services())
        found = database.FindFileContainingSymbol(f"{INFERENCE_SERVICE}")
        methods = {m.name for s in found.service for m in s.method}
        assert {"ModelInfer", "ModelStreamInfer", "ModelMetadata", "ModelStatistics"} <= methods


# -- metrics ----------------------------------------------------------------------------------


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return str(r.read().decode())


def sample_value(text: str, name: str, model: str, version: str = "1", **labels: str) -> float:
    """The value of series ``name`` (exact name) for model/version; KeyError if absent."""
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z_:][A-Za-z0-9_:]*)\{(.*)\} (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        want = {"model": model, "version": version, **labels}
        if all(found.get(k) == v for k, v in want.items()):
            return float(m.group(3))
    raise KeyError(f"{name}{{model={model},version={version},{labels}}}")


def counter_value(text: str, name: str, model: str, version: str = "1") -> float:
    """Like ``sample_value``, tolerating prometheus_client's ``_total`` suffix (see
    ``test_metrics_triton_names`` for the exact-name check)."""
    try:
        return sample_value(text, name, model, version)
    except KeyError:
        return sample_value(text, f"{name}_total", model, version)


TRITON_COUNTERS = (
    "nv_inference_request_success",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_input_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us",
)


def test_metrics_values_move(
    server: ServerProcess, client: grpcclient.InferenceServerClient
) -> None:
    assert server.metrics_port
    inputs, _ = add_sub_inputs(2)
    client.infer("add_sub", inputs)  # every series exists from here on
    before = scrape(server.metrics_port)
    for _ in range(3):
        client.infer("add_sub", inputs)
    after = scrape(server.metrics_port)
    delta = {
        name: counter_value(after, name, "add_sub") - counter_value(before, name, "add_sub")
        for name in TRITON_COUNTERS
    }
    assert delta["nv_inference_request_success"] == 3
    assert delta["nv_inference_count"] == 6  # rows
    assert delta["nv_inference_exec_count"] == 3
    for name in TRITON_COUNTERS[3:]:
        assert delta[name] > 0, name
    assert sample_value(after, "nv_inference_pending_request_count", "add_sub") == 0
    hist = "osprey_request_duration_seconds"
    assert (
        sample_value(after, f"{hist}_count", "add_sub")
        - sample_value(before, f"{hist}_count", "add_sub")
    ) == 3
    assert sample_value(after, f"{hist}_sum", "add_sub") > sample_value(
        before, f"{hist}_sum", "add_sub"
    )
    assert sample_value(after, f"{hist}_bucket", "add_sub", le="+Inf") == sample_value(
        after, f"{hist}_count", "add_sub"
    )
    for other in (
        "osprey_queue_duration_seconds",
        "osprey_compute_duration_seconds",
        "osprey_batch_size_rows",
    ):
        assert sample_value(after, f"{other}_count", "add_sub") > 0, other


def test_metrics_failure_reason(
    server: ServerProcess, client: grpcclient.InferenceServerClient
) -> None:
    bad = grpcclient.InferInput("INPUT0", [1, 16], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 16), dtype=np.float32))
    with pytest.raises(InferenceServerException):
        client.infer("add_sub_nobatch", [bad])
    text = scrape(server.metrics_port)
    try:
        value = sample_value(
            text, "nv_inference_request_failure", "add_sub_nobatch", reason="OTHER"
        )
    except KeyError:
        value = sample_value(
            text, "nv_inference_request_failure_total", "add_sub_nobatch", reason="OTHER"
        )
    assert value >= 1
