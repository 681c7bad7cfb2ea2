"""``osprey serve --workers 2``: one port, two processes, answers for the whole server.

Which worker answered is read from the ``osprey-worker`` trailing metadata
("<index>/<pid>") that multi-worker servers attach to ModelInfer. Every channel is
opened with its own subchannel pool, so each is its own TCP connection; SO_REUSEPORT
hashes connections to workers, so the test opens channels until both workers have
been reached (almost always within four) and then works with two per worker.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc

from .clientutil import metrics_text
from .onnx_models import add_sub_graph, write_model
from .process import ServerProcess

OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


class Channel:
    """One TCP connection to the server, and the worker behind it."""

    def __init__(self, url: str) -> None:
        self.grpc = grpc.insecure_channel(url, options=OWN_CONNECTION)
        self.stub = service_pb2_grpc.GRPCInferenceServiceStub(self.grpc)
        self.worker, self.pid = self.infer()

    def infer(self, value: float = 1.0) -> tuple[int, int]:
        """One 1-row add_sub request; returns (worker index, pid) that answered it."""
        request = service_pb2.ModelInferRequest(model_name="add_sub")
        row = np.full((1, 16), value, dtype=np.float32)
        for name in ("INPUT0", "INPUT1"):
            request.inputs.add(name=name, datatype="FP32", shape=[1, 16])
            request.raw_input_contents.append(row.tobytes())
        response, call = self.stub.ModelInfer.with_call(request, timeout=10)
        out = np.frombuffer(response.raw_output_contents[0], dtype=np.float32)
        assert np.array_equal(out, np.full(16, 2 * value, dtype=np.float32))
        trailing = dict(call.trailing_metadata() or ())
        index, pid = trailing["osprey-worker"].split("/")
        return int(index), int(pid)

    def call(self, method: str, request: Any) -> Any:
        return getattr(self.stub, method)(request, timeout=30)

    def close(self) -> None:
        self.grpc.close()


def open_channels(url: str, per_worker: int = 2, limit: int = 40) -> dict[int, list[Channel]]:
    by_worker: dict[int, list[Channel]] = {0: [], 1: []}
    opened = []
    for _ in range(limit):
        channel = Channel(url)
        opened.append(channel)
        if len(by_worker[channel.worker]) < per_worker:
            by_worker[channel.worker].append(channel)
        else:
            channel.close()
        if all(len(v) == per_worker for v in by_worker.values()):
            return by_worker
    raise AssertionError(
        f"{limit} connections all reached worker(s) {sorted({c.worker for c in opened})}"
    )


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("workers_repo")
    write_model(repo, "add_sub", add_sub_graph(16), {"max_batch_size": 8})
    return repo


@pytest.fixture
def server(repo: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(repo, tmp_path, "--workers", "2")
    yield proc
    proc.stop()


def _stats(channel: Channel) -> Any:
    return channel.call("ModelStatistics", service_pb2.ModelStatisticsRequest(name="add_sub"))


def test_four_channels_reach_both_workers_and_statistics_add_up(server: ServerProcess) -> None:
    channels = open_channels(server.url)
    four = channels[0] + channels[1]
    assert {c.worker for c in four} == {0, 1}
    assert channels[0][0].pid != channels[1][0].pid
    before = _stats(four[0]).model_stats[0].inference_count
    sent = 0
    for i, channel in enumerate(four):
        for _ in range(5 + i):
            worker, _ = channel.infer(float(i))
            assert worker == channel.worker  # a connection stays with its worker
            sent += 1
    # Asked of either worker, the statistics cover both.
    for channel in (channels[0][0], channels[1][0]):
        stats = _stats(channel).model_stats[0]
        assert stats.inference_count - before == sent
        assert stats.inference_stats.success.count >= sent
    text = metrics_text(server.metrics_port)
    line = next(
        ln for ln in text.splitlines()
        if ln.startswith("nv_inference_count{") and 'model="add_sub"' in ln
    )
    assert float(line.rsplit(" ", 1)[1]) == _stats(four[0]).model_stats[0].inference_count
    assert "osprey_workers 2.0" in text
    for channel in four:
        ready = channel.call("ServerReady", service_pb2.ServerReadyRequest())
        assert ready.ready


def test_unload_and_load_act_on_every_worker(server: ServerProcess) -> None:
    channels = open_channels(server.url, per_worker=1)
    headers = getattr(server, "admin_metadata", ())
    channels[0][0].stub.RepositoryModelUnload(
        service_pb2.RepositoryModelUnloadRequest(model_name="add_sub"), timeout=30,
        metadata=headers,
    )
    for worker in (0, 1):
        channel = channels[worker][0]
        ready = channel.call("ModelReady", service_pb2.ModelReadyRequest(name="add_sub"))
        assert not ready.ready
        with pytest.raises(grpc.RpcError) as err:
            channel.infer()
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    channels[1][0].stub.RepositoryModelLoad(
        service_pb2.RepositoryModelLoadRequest(model_name="add_sub"), timeout=60,
        metadata=headers,
    )
    for worker in (0, 1):
        assert channels[worker][0].infer()[0] == worker


def test_a_killed_worker_does_not_fail_the_other_and_comes_back(server: ServerProcess) -> None:
    channels = open_channels(server.url, per_worker=1)
    victim, survivor = channels[0][0], channels[1][0]
    os.kill(victim.pid, signal.SIGKILL)
    deadline = time.monotonic() + 3
    served = 0
    while time.monotonic() < deadline:  # the other worker keeps answering throughout
        assert survivor.infer()[0] == 1
        served += 1
    assert served > 10
    # The supervisor restarts worker 0 under a new pid, on the same port.
    deadline = time.monotonic() + 60
    while True:
        try:
            channel = Channel(server.url)
        except grpc.RpcError:
            channel = None
        if channel is not None and channel.worker == 0 and channel.pid != victim.pid:
            break
        assert time.monotonic() < deadline, "worker 0 did not come back"
        time.sleep(0.2)
    assert "osprey_worker_restarts_total 1.0" in metrics_text(server.metrics_port)
    assert "worker 0 (pid" in server.stderr and "restarting" in server.stderr


def test_sigterm_stops_every_worker(repo: Path, tmp_path: Path) -> None:
    proc = ServerProcess(repo, tmp_path, "--workers", "2")
    open_channels(proc.url, per_worker=1)
    assert proc.stop() == 0
    assert proc.stderr.count("INFO osprey.server: stopped") == 2


def test_a_served_port_is_refused(repo: Path, tmp_path: Path) -> None:
    taken = socket.socket()
    taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as grpcio does
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        proc = ServerProcess(
            repo, tmp_path, "--workers", "2", "--grpc-port", str(port), wait_ready=False
        )
        assert proc.wait_exit(60) != 0
        assert "address in use" in proc.stderr
    finally:
        taken.close()


def test_tritonclient_works_unchanged(server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(server.url)
    assert client.is_server_ready() and client.is_model_ready("add_sub")
    a = np.ones((3, 16), np.float32)
    inputs = [grpcclient.InferInput(n, [3, 16], "FP32") for n in ("INPUT0", "INPUT1")]
    for x in inputs:
        x.set_data_from_numpy(a)
    np.testing.assert_array_equal(client.infer("add_sub", inputs).as_numpy("OUTPUT0"), 2 * a)
