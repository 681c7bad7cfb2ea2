"""Serving from the registry, against real servers and real databases.

Each model version answers OUTPUT = INPUT + its number, so every response says
which version computed it (and must agree with the ``model_version`` it names).
Deployment changes are made through ``registry.service.Registry`` in the test
process, as the CLI does; the servers follow them by polling (every 0.3 s here)
and, on PostgreSQL, by LISTEN/NOTIFY.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from onnx import TensorProto, helper, numpy_helper
from sqlalchemy import select
from sqlalchemy.engine import make_url

from registry import migrate
from registry.artifacts import LocalArtifactStore
from registry.db import Database
from registry.models import AuditRequest
from registry.service import Registry
from tests.postgres import PgServer
from tests.tcp_proxy import TcpProxy

from .clientutil import metrics_text
from .onnx_models import offset_graph, write_model
from .process import ServerProcess

POLL = "0.3"
WHO = {"actor": "test@ops", "reason": "test"}
CONFIG = {"max_batch_size": 64, "max_queue_delay_us": 500, "warmup_batch_sizes": [1]}


@dataclass
class Deployed:
    url: str
    registry: Registry
    home: Path

    def serve(self, *args: str, url: str | None = None, **kwargs: Any) -> ServerProcess:
        return ServerProcess(None, self.home, "--database-url", url or self.url,
                             "--registry-poll-seconds", POLL, *args, **kwargs)


def _database(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'osprey.db'}"
    server: PgServer = request.getfixturevalue("pg_server")
    return server.create(f"serving_{len(server.created)}")


def _deploy(url: str, tmp_path: Path, versions: int = 3) -> tuple[Database, Registry]:
    """Migrate ``url`` and register fraud v1..vN (answers INPUT + k), v1 stable."""
    db = Database(url)
    migrate.upgrade(db)
    registry = Registry(db, tmp_path / "home")
    for k in range(1, versions + 1):
        path = write_model(tmp_path / "onnx", f"v{k}", offset_graph(float(k)), None)
        registry.register("fraud", path, settings=CONFIG, **WHO)
    registry.set_stable("fraud", 1, **WHO)
    return db, registry


@pytest.fixture(params=["sqlite", "postgresql"])
def deployed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deployed]:
    """A registry with fraud v1..v3 (answers INPUT + 1, + 2, + 3), v1 stable."""
    url = _database(str(request.param), tmp_path, request)
    db, registry = _deploy(url, tmp_path)
    yield Deployed(url, registry, tmp_path / "home")
    db.dispose()


def _inputs(x: float = 0.0) -> list[grpcclient.InferInput]:
    tensor = grpcclient.InferInput("INPUT", [1, 1], "FP32")
    tensor.set_data_from_numpy(np.full((1, 1), x, np.float32))
    return [tensor]


def ask(client: grpcclient.InferenceServerClient, key: str | None = None,
        request_id: str = "") -> int:
    """The version that answered (checked against the answer itself)."""
    params = {"osprey_routing_key": key} if key is not None else None
    result = client.infer("fraud", _inputs(), parameters=params, request_id=request_id)
    version = int(result.get_response().model_version)
    assert float(result.as_numpy("OUTPUT")[0, 0]) == float(version)
    return version


def wait_for(predicate: Any, timeout: float = 20.0, what: str = "") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or predicate}")


def _all_ready(registry: Registry, version: int, replicas: int) -> bool:
    live = registry.status("fraud").replicas
    return len(live) >= replicas and all(
        version in r.holds["fraud"]["ready"] for r in live)


# -- zero downtime --------------------------------------------------------------------


@dataclass
class Answer:
    sent: float
    done: float
    version: int | None
    error: str | None


def _hammer(url: str, stop: threading.Event, out: list[Answer], index: int) -> None:
    client = grpcclient.InferenceServerClient(url)
    n = 0
    try:
        while not stop.is_set():
            sent = time.monotonic()
            try:
                version = ask(client, key=f"client-{index}-{n}")
                out.append(Answer(sent, time.monotonic(), version, None))
            except Exception as exc:
                out.append(Answer(sent, time.monotonic(), None, str(exc)))
            n += 1
    finally:
        client.close()


@pytest.mark.slow
def test_blue_green_switch_and_rollback_fail_no_request(deployed: Deployed) -> None:
    """--workers 2, 8 clients for 30 s; a blue-green switch to v2, then a rollback."""
    server = deployed.serve("--workers", "2")
    answers: list[list[Answer]] = [[] for _ in range(8)]
    stop = threading.Event()
    threads = [threading.Thread(target=_hammer, args=(server.url, stop, answers[i], i))
               for i in range(8)]
    try:
        start = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(5)
        deployed.registry.start_rollout("fraud", 2, "blue_green", **WHO)
        wait_for(lambda: _all_ready(deployed.registry, 2, 2), what="v2 ready on 2 workers")
        deployed.registry.promote("fraud", **WHO)
        promoted = time.monotonic()
        time.sleep(max(0.0, start + 18 - time.monotonic()))
        deployed.registry.rollback("fraud", **WHO)
        rolled_back = time.monotonic()
        time.sleep(max(0.0, start + 31 - time.monotonic()))
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        exit_code = server.stop()
    flat = [a for per in answers for a in per]
    errors = [a.error for a in flat if a.error is not None]
    assert not errors, f"{len(errors)} failed requests, e.g. {errors[:3]}"
    assert len(flat) > 1000
    assert {a.version for a in flat} == {1, 2}
    settle = float(POLL) * 2 + 1.0
    after_switch = [a.version for a in flat if promoted + settle < a.sent and a.done < rolled_back]
    after_rollback = [a.version for a in flat if a.sent > rolled_back + settle]
    assert after_switch and set(after_switch) == {2}
    assert after_rollback and set(after_rollback) == {1}
    assert exit_code == 0


# -- canary and shadow ------------------------------------------------------------------


async def _many(url: str, requests: list[dict[str, Any]], concurrency: int = 16) -> list[int]:
    client = aioclient.InferenceServerClient(url)
    out: list[int] = [0] * len(requests)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(requests)):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            tensor = aioclient.InferInput("INPUT", [1, 1], "FP32")
            tensor.set_data_from_numpy(np.zeros((1, 1), np.float32))
            result = await client.infer("fraud", [tensor], **requests[i])
            out[i] = int(result.get_response().model_version)
            assert float(result.as_numpy("OUTPUT")[0, 0]) == float(out[i])

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await client.close()
    return out


def test_canary_split_is_weighted_and_sticky(deployed: Deployed) -> None:
    server = deployed.serve()
    try:
        deployed.registry.start_rollout("fraud", 2, "canary", weight=20, **WHO)
        client = grpcclient.InferenceServerClient(server.url)
        wait_for(lambda: _all_ready(deployed.registry, 2, 1), what="v2 ready")
        time.sleep(float(POLL) * 2)
        keyed = asyncio.run(_many(server.url, [
            {"parameters": {"osprey_routing_key": f"account-{i}"}} for i in range(5000)]))
        share = keyed.count(2) / len(keyed)
        assert abs(share - 0.20) <= 0.03, share
        # the same key always lands on the same version
        for i in range(0, 5000, 97):
            assert {ask(client, key=f"account-{i}") for _ in range(3)} == {keyed[i]}
        # no key, empty client id: routed by the decision id, still split by weight
        anonymous = asyncio.run(_many(server.url, [{} for _ in range(2000)]))
        assert abs(anonymous.count(2) / 2000 - 0.20) <= 0.04
        # a repeated client id (tritonclient/perf_analyzer send "0", "1", ...) is a key
        for request_id in ("0", "1", "7"):
            assert len({ask(client, request_id=request_id) for _ in range(10)}) == 1
        # a version named explicitly is served when loaded, NOT_FOUND otherwise
        named = client.infer("fraud", _inputs(), model_version="2")
        assert named.get_response().model_version == "2"
        with pytest.raises(Exception, match="version 3 is not loaded"):
            client.infer("fraud", _inputs(), model_version="3")
        client.close()
    finally:
        server.stop()


def test_shadow_answers_are_recorded_never_returned(deployed: Deployed) -> None:
    server = deployed.serve()
    try:
        client = grpcclient.InferenceServerClient(server.url)
        for _ in range(50):
            ask(client)

        def p50() -> float:
            times = []
            for i in range(300):
                t0 = time.perf_counter()
                assert ask(client, key=f"k{i}") == 1
                times.append(time.perf_counter() - t0)
            return float(np.median(times))

        before = p50()
        deployed.registry.start_rollout("fraud", 2, "shadow", **WHO)
        wait_for(lambda: _all_ready(deployed.registry, 2, 1), what="v2 ready")
        time.sleep(float(POLL) * 2)
        during = p50()  # every answer still from v1 (asserted in p50)
        # the candidate's answers are in the audit log (route shadow), never returned
        db = deployed.registry.db

        def shadowed() -> list[tuple[int | None, dict[str, Any], str]]:
            with db.read() as s:
                return [(r.version, r.outputs, r.decision_id) for r in s.scalars(
                    select(AuditRequest).where(AuditRequest.route == "shadow"))]

        wait_for(lambda: len(shadowed()) >= 250, what="shadow answers audited")
        results = shadowed()
        assert {version for version, _, _ in results} == {2}
        assert all(outputs == {"OUTPUT": [[2.0]]} for _, outputs, _ in results)
        with db.read() as s:  # each shadow answer shares its request's decision id
            answered = set(s.scalars(select(AuditRequest.decision_id).where(
                AuditRequest.route == "stable")))
        assert {d for _, _, d in results} <= answered
        # the copy runs after the answer: latency within noise of no shadow at all
        assert during <= before * 1.5 + 0.002, (before, during)
        client.close()
    finally:
        server.stop()


# -- many servers, database outages, bad artifacts ------------------------------------


def _health(url: str, service: str) -> int:
    with grpc.insecure_channel(url) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return int(stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status)


def _unreachable(server: ServerProcess) -> float:
    found = re.search(r"^osprey_registry_unreachable (\S+)$", metrics_text(server.metrics_port),
                      re.M)
    assert found is not None
    return float(found.group(1))


def _serves(server: ServerProcess, version: int) -> bool:
    client = grpcclient.InferenceServerClient(server.url)
    try:
        return all(ask(client, key=f"k{i}") == version for i in range(20))
    finally:
        client.close()


def test_two_servers_converge_and_survive_an_outage(
    pg_server: PgServer, tmp_path: Path
) -> None:
    url = pg_server.create("outage")
    db, registry = _deploy(url, tmp_path)
    parsed = make_url(url)
    assert parsed.host is not None and parsed.port is not None
    proxy = TcpProxy(parsed.host, parsed.port)
    via_proxy = parsed.set(port=proxy.port).render_as_string(hide_password=False)
    deployed = Deployed(url, registry, tmp_path / "home")
    first = deployed.serve(url=via_proxy)
    second: ServerProcess | None = None
    try:
        registry.set_stable("fraud", 2, **WHO)
        wait_for(lambda: _serves(first, 2), what="the first server on v2")
        second = deployed.serve(url=via_proxy)  # started later: catches up at once
        assert _serves(second, 2)
        registry.start_rollout("fraud", 3, "canary", weight=100, **WHO)
        wait_for(lambda: _serves(first, 3) and _serves(second, 3), what="both on v3")
        registry.abort("fraud", **WHO)
        wait_for(lambda: _serves(first, 2) and _serves(second, 2), what="both back on v2")

        proxy.cut()
        wait_for(lambda: _health(first.url, "osprey.registry") == 2 and
                 _health(second.url, "osprey.registry") == 2, what="degraded health")
        registry.set_stable("fraud", 1, **WHO)  # made directly, unseen by the servers
        for _ in range(3):
            assert _serves(first, 2) and _serves(second, 2)  # still serving, no errors
            time.sleep(0.5)
        assert _health(first.url, "") == 1  # SERVING: it serves, only the registry is away
        assert _unreachable(first) == 1 and _unreachable(second) == 1
        proxy.restore()
        wait_for(lambda: _serves(first, 1) and _serves(second, 1), what="caught up")
        wait_for(lambda: _health(first.url, "osprey.registry") == 1, what="healthy again")
        assert _unreachable(first) == 0
    finally:
        for s in (first, second):
            if s is not None:
                s.stop()
        proxy.close()
        db.dispose()


def test_postgres_notify_wakes_replicas_before_the_poll(
    pg_server: PgServer, tmp_path: Path
) -> None:
    url = pg_server.create("notify")
    db, registry = _deploy(url, tmp_path, versions=2)
    server = ServerProcess(None, tmp_path / "home", "--database-url", url,
                           "--registry-poll-seconds", "60")
    try:
        time.sleep(1.0)  # the LISTEN connection is up
        changed = time.monotonic()
        registry.set_stable("fraud", 2, **WHO)
        wait_for(lambda: _serves(server, 2), timeout=10.0, what="woken by NOTIFY")
        assert time.monotonic() - changed < 10.0  # far before the 60 s poll
    finally:
        server.stop()
        db.dispose()


def test_corrupt_artifact_is_refused_and_the_stable_keeps_serving(deployed: Deployed) -> None:
    server = deployed.serve()
    try:
        record = deployed.registry.version("fraud", 2)
        stored = LocalArtifactStore(deployed.home / "artifacts").path_for(record.sha256)
        stored.write_bytes(stored.read_bytes()[:-8])  # truncated on disk
        deployed.registry.start_rollout("fraud", 2, "canary", weight=100, **WHO)
        wait_for(lambda: deployed.registry.version("fraud", 2).status == "rejected",
                 what="v2 rejected")
        assert _serves(server, 1)
        v2 = deployed.registry.version("fraud", 2)
        assert "has sha256" in v2.status_reason and record.sha256 in v2.status_reason
        events = deployed.registry.history("fraud")
        assert any(e.kind == "version_rejected" and e.version == 2 and
                   e.actor.startswith("replica ") for e in events)
        status = deployed.registry.status("fraud")
        held = status.replicas[0].holds["fraud"]
        assert held["ready"] == [1] and "2" in held["failed"]
        # the CLI shows it (`osprey models show`, `osprey rollout status`)
        from registry.cli import _status_text, _version_rows

        rows = _version_rows(status.versions, status.deployment)
        assert rows[1][1] == "rejected"
        assert f"{status.replicas[0].id}: version 2 not loaded: " in _status_text(status)
    finally:
        server.stop()


def _fixed_batch_graph() -> onnx.GraphProto:
    """OUTPUT = INPUT + 2 with a fixed batch of 1: loads, but not with batching on."""
    return helper.make_graph(
        [helper.make_node("Add", ["INPUT", "TWO"], ["OUTPUT"])], "fixed",
        [helper.make_tensor_value_info("INPUT", TensorProto.FLOAT, [1, 1])],
        [helper.make_tensor_value_info("OUTPUT", TensorProto.FLOAT, [1, 1])],
        initializer=[numpy_helper.from_array(np.array([2.0], np.float32), "TWO")],
    )


def test_version_that_fails_to_load_leaves_the_stable_serving(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'osprey.db'}"
    db = Database(url)
    migrate.upgrade(db)
    registry = Registry(db, tmp_path / "home")
    unbatched = {"max_batch_size": 0}
    registry.register("fraud", write_model(tmp_path / "onnx", "v1", offset_graph(1.0), None),
                      settings=unbatched, **WHO)
    registry.register("fraud", write_model(tmp_path / "onnx", "v2", _fixed_batch_graph(), None),
                      **WHO)
    registry.set_stable("fraud", 1, **WHO)
    registry.set_settings("fraud", CONFIG, **WHO)  # batching on: v2 cannot load any more
    server = Deployed(url, registry, tmp_path / "home").serve()
    try:
        registry.start_rollout("fraud", 2, "canary", weight=100, allow_signature_change=True,
                               **WHO)
        wait_for(lambda: any(e.kind == "version_load_failed"
                             for e in registry.history("fraud")), what="the failure event")
        event = next(e for e in registry.history("fraud") if e.kind == "version_load_failed")
        assert event.version == 2 and event.actor.startswith("replica ")
        assert "without a dynamic first (batch) dimension" in event.reason
        assert _serves(server, 1)  # every request still answered, by v1
        held = registry.status("fraud").replicas[0].holds["fraud"]
        assert held["ready"] == [1] and "2" in held["failed"]
        assert registry.version("fraud", 2).status == "ready"  # a load problem, not a bad file
    finally:
        server.stop()
        db.dispose()


def test_out_of_date_schema_refuses_to_start(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    proc = ServerProcess(None, tmp_path / "home", "--database-url", url, wait_ready=False)
    code = proc.proc.wait(60)
    proc.stop()
    assert code != 0
    assert "run `osprey db upgrade`" in "".join(proc.stderr_lines)
