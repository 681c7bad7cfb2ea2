"""Server lifecycle: graceful SIGTERM, ports in use, broken models, readiness, grace."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .clientutil import Fired, make_inputs, metric, sleep_request, wait_for
from .extra_models import gather_graph, sleep_graph
from .onnx_models import add_sub_graph, slow_graph, write_model
from .process import READY, REPO_ROOT, ServerProcess

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SLEEP_CONFIG = {"max_batch_size": 1, "max_queue_delay_us": 0, "max_queue_size": 16}


@pytest.fixture(scope="module")
def sleep_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("lifecycle_models")
    write_model(repo, "sleep", sleep_graph(), SLEEP_CONFIG)
    return repo


def _pending(server: ServerProcess) -> float:
    return metric(server.metrics_port, "nv_inference_pending_request_count", model="sleep",
                  version="1")


def _connect_refused(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) != 0


class HealthWatch:
    """A grpc.health.v1 Watch stream whose statuses are collected in a thread."""

    def __init__(self, url: str, service: str = "") -> None:
        self.channel = grpc.insecure_channel(url)
        stub = health_pb2_grpc.HealthStub(self.channel)
        self.call: Any = stub.Watch(health_pb2.HealthCheckRequest(service=service))
        self.statuses: queue.Queue[int] = queue.Queue()
        self.ended = threading.Event()  # the server ended the stream (status OK)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for response in self.call:
                self.statuses.put(response.status)
            self.ended.set()
        except grpc.RpcError:
            pass

    def next(self, timeout: float = 10.0) -> int:
        return self.statuses.get(timeout=timeout)

    def close(self) -> None:
        self.call.cancel()
        self.channel.close()


def test_sigterm_drains_in_flight_requests(sleep_repo: Path, tmp_path: Path) -> None:
    """Health NOT_SERVING, listener closed, queued and running calls all answered, exit 0."""
    proc = ServerProcess(sleep_repo, tmp_path, "--grace-seconds", "20")
    try:
        client = grpcclient.InferenceServerClient(proc.url)
        client.infer("sleep", make_inputs(sleep_request(0.0)))
        watch = HealthWatch(proc.url)
        assert watch.next() == SERVING
        fired = Fired()
        for i in range(4):
            fired.send(client, "sleep", sleep_request(0.4, marker=i))
        wait_for(lambda: _pending(proc) == 3, 5, "three queued behind one running")

        proc.proc.send_signal(signal.SIGTERM)
        assert watch.next() == NOT_SERVING
        # New connections are refused while the queued work still drains.
        wait_for(lambda: _connect_refused(proc.grpc_port), 1.0, "the listener to close")
        assert fired.completed() < 4, "the in-flight work was already done: nothing was tested"
        outcomes = fired.wait(30)
        assert [o.error for o in outcomes] == [None] * 4
        assert sorted(float(o.output("OUTPUT")[0, 0]) for o in outcomes) == [0, 1, 2, 3]
        assert proc.wait_exit(30) == 0, proc.stderr
        assert "stopped" in proc.stderr
        assert _connect_refused(proc.grpc_port)
        assert watch.ended.is_set()
        watch.close()
        client.close()
    finally:
        proc.stop()


def test_open_health_watches_do_not_hold_shutdown(sleep_repo: Path, tmp_path: Path) -> None:
    """Watch streams (gRPC client-side health checking) hear NOT_SERVING, then end."""
    proc = ServerProcess(sleep_repo, tmp_path, "--grace-seconds", "20")
    try:
        model_service = "inference.GRPCInferenceService/sleep"
        leaving, staying = HealthWatch(proc.url), HealthWatch(proc.url)
        model_watch = HealthWatch(proc.url, model_service)
        unknown = HealthWatch(proc.url, "no.such.Service")
        assert leaving.next() == staying.next() == model_watch.next() == SERVING
        assert unknown.next() == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        leaving.close()  # one watcher of "" leaves; the other must still hear the news
        time.sleep(0.2)
        start = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        assert staying.next(5) == NOT_SERVING
        assert model_watch.next(5) == NOT_SERVING
        assert proc.wait_exit(30) == 0, proc.stderr
        took = time.monotonic() - start
        assert took < 5, f"open watches held the shutdown for {took:.1f}s (grace 20s)"
        for watch in (staying, model_watch, unknown):
            assert watch.ended.wait(5)
            watch.close()
    finally:
        proc.stop()


def test_grace_seconds_bounds_the_drain(sleep_repo: Path, tmp_path: Path) -> None:
    """Grace 1 s with ~6 s of queued work: exit soon after the grace, in-flight calls end."""
    proc = ServerProcess(sleep_repo, tmp_path, "--grace-seconds", "1")
    try:
        client = grpcclient.InferenceServerClient(proc.url)
        client.infer("sleep", make_inputs(sleep_request(0.0)))
        fired = Fired()
        for i in range(6):
            fired.send(client, "sleep", sleep_request(1.0, marker=i))
        wait_for(lambda: _pending(proc) == 5, 5, "five queued behind one running")
        start = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        code = proc.wait_exit(30)
        took = time.monotonic() - start
        assert code == 0, proc.stderr
        # grace + the execution that is running when it ends + process exit
        assert took < 1 + 1.2 + 2, f"exit took {took:.1f}s with --grace-seconds 1"
        outcomes = fired.wait(10)
        failed = [o for o in outcomes if o.error is not None]
        assert len(failed) >= 4, "queued calls past the grace must be ended, not served"
        client.close()
    finally:
        proc.stop()


def test_a_thread_that_never_returns_does_not_hold_the_stopped_process() -> None:
    """After the orderly stop, a thread blocked for ever (a database that stopped
    answering mid-query) gets THREADS_AT_EXIT_SECONDS; then the process exits, saying
    where the thread was. Without the watchdog this process would never exit: the
    executor's thread is joined at exit."""
    script = (
        "import asyncio, logging, threading, sys\n"
        "from server.app import exit_if_threads_hang\n"
        "logging.basicConfig(stream=sys.stderr)\n"
        "def blocked_query():\n"
        "    threading.Event().wait()\n"
        "async def main():\n"
        "    asyncio.get_running_loop().run_in_executor(None, blocked_query)\n"
        "    await asyncio.sleep(0.1)\n"
        "    exit_if_threads_hang(0.5)\n"
        "asyncio.run(main())\n"
    )
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - start < 15
    assert "thread(s) did not finish in 0.5s; exiting without them" in done.stderr, done.stderr
    assert "blocked_query" in done.stderr, done.stderr


def test_no_watchdog_message_when_every_thread_finishes() -> None:
    script = (
        "import asyncio, logging, sys, time\n"
        "from server.app import exit_if_threads_hang\n"
        "logging.basicConfig(stream=sys.stderr)\n"
        "async def main():\n"
        "    await asyncio.get_running_loop().run_in_executor(None, time.sleep, 0.1)\n"
        "    exit_if_threads_hang(0.5)\n"
        "asyncio.run(main())\n"
        "time.sleep(1.0)\n"  # past the watchdog's time: it must not fire on a clean exit
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "did not finish" not in done.stderr, done.stderr


# -- ports ------------------------------------------------------------------------------


def _listening_socket(reuseport: bool) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if reuseport:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as grpcio does
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def _fails_with_address_in_use(repo: Path, home: Path, *args: str) -> str:
    proc = ServerProcess(repo, home, *args, wait_ready=False)
    try:
        code = proc.wait_exit(60)
    finally:
        proc.stop()
    assert code != 0
    assert "address in use" in proc.stderr, proc.stderr
    assert not proc.stdout_lines or not any(READY.search(line) for line in proc.stdout_lines)
    return proc.stderr


@pytest.mark.parametrize("reuseport", [True, False])
def test_grpc_port_in_use(sleep_repo: Path, tmp_path: Path, reuseport: bool) -> None:
    with _listening_socket(reuseport) as s:
        port = s.getsockname()[1]
        stderr = _fails_with_address_in_use(sleep_repo, tmp_path, "--grpc-port", str(port))
    assert str(port) in stderr


def test_grpc_port_of_another_osprey(
    server: ServerProcess, sleep_repo: Path, tmp_path: Path
) -> None:
    _fails_with_address_in_use(sleep_repo, tmp_path, "--grpc-port", str(server.grpc_port))
    assert grpcclient.InferenceServerClient(server.url).is_server_ready()  # unharmed


def test_metrics_port_in_use(sleep_repo: Path, tmp_path: Path) -> None:
    with _listening_socket(reuseport=True) as s:
        port = s.getsockname()[1]
        stderr = _fails_with_address_in_use(sleep_repo, tmp_path, "--metrics-port", str(port))
    assert "metrics" in stderr and str(port) in stderr


def test_metrics_port_of_another_osprey(
    server: ServerProcess, sleep_repo: Path, tmp_path: Path
) -> None:
    stderr = _fails_with_address_in_use(
        sleep_repo, tmp_path, "--metrics-port", str(server.metrics_port)
    )
    assert "metrics" in stderr


# -- models at start-up -------------------------------------------------------------------


def test_broken_model_stops_start_up(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_model(repo, "fine", add_sub_graph(4), {"max_batch_size": 4})
    (repo / "broken" / "1").mkdir(parents=True)
    (repo / "broken" / "1" / "model.onnx").write_bytes(b"this is not an ONNX model\x00\x01")
    proc = ServerProcess(repo, tmp_path / "home", wait_ready=False)
    code = proc.wait_exit(60)
    assert code != 0
    assert "'broken'" in proc.stderr and "model.onnx" in proc.stderr, proc.stderr
    assert not any(READY.search(line) for line in proc.stdout_lines)


def test_failing_warmup_stops_start_up(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_model(repo, "empty_table", gather_graph(table=0), {"max_batch_size": 4})
    proc = ServerProcess(repo, tmp_path / "home", wait_ready=False)
    code = proc.wait_exit(60)
    assert code != 0
    assert "'empty_table'" in proc.stderr and "warmup" in proc.stderr, proc.stderr


def test_ready_only_after_warmup(tmp_path: Path) -> None:
    """Live but not ready while a model warms up; the ready line follows the load log."""
    repo = tmp_path / "repo"
    # Forty warmup runs of the slow model: a few seconds of live-but-not-ready.
    write_model(
        repo, "slow_warmup", slow_graph(),
        {"max_batch_size": 4, "warmup_batch_sizes": [1] * 40},
    )
    cmd = [
        sys.executable, "-m", "server", "serve", "--home", str(tmp_path / "home"),
        "--model-repository", str(repo), "--grpc-port", "0", "--metrics-port", "0",
    ]
    proc = subprocess.Popen(
        cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        listening = re.compile(r"gRPC listening on [^:\s]+:(\d+)")
        port = 0
        for line in proc.stdout:
            lines.append(line)
            m = listening.search(line)
            if m:
                port = int(m.group(1))
                break
        assert port, "".join(lines)
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        assert client.is_server_live()
        assert not client.is_server_ready()
        assert not client.is_model_ready("slow_warmup")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert check.status == NOT_SERVING
        for line in proc.stdout:
            lines.append(line)
            if READY.search(line):
                break
        text = "".join(lines)
        assert READY.search(text), text
        served = text.index("model 'slow_warmup' serving version")
        assert served < READY.search(text).start()  # type: ignore[union-attr]
        assert client.is_server_ready() and client.is_model_ready("slow_warmup")
        client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
