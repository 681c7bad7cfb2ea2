"""The load generator's open loop against a real Osprey server: requests go out at the
arrival rate whatever the server does, and one due while the outstanding bound is
reached is counted as an error, never sent late."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.grpc.aio as aioclient

from bench.loadgen import LoadResult, Scenario, reference_payload, run_scenario
from bench.models import write_decided_mlp
from bench.reference import OrtReference
from bench.server_process import BenchServer


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BenchServer, Path]]:
    root = tmp_path_factory.mktemp("loadgen")
    onnx_path = write_decided_mlp(root / "models")
    server = BenchServer(root / "models", root, [], "WARNING", ["--audit", "off"])
    try:
        server.wait_ready()
        yield server, onnx_path
    finally:
        assert server.stop() == 0, server.stderr_tail()


def _drive(server: BenchServer, onnx_path: Path, scenario: Scenario) -> LoadResult:
    payload = reference_payload(OrtReference(onnx_path), rows=1)

    async def go() -> LoadResult:
        client = aioclient.InferenceServerClient(server.url)
        try:
            return await run_scenario(client, "mlp", payload, scenario, 1.0, 0.2, 1)
        finally:
            await client.close()

    return asyncio.run(go())


def test_open_loop_sends_at_the_arrival_rate(served: tuple[BenchServer, Path]) -> None:
    result = _drive(*served, Scenario("open", 1, 256, 300.0))
    assert result.errors == 0 and result.wrong == 0, result.error_samples
    assert 240 <= result.requests <= 330, result.requests  # ~300 in the 1 s window
    assert result.checked >= result.requests  # every answer compared with ORT
    assert 0 < result.latency.p50_ms < 50


def test_a_request_due_with_the_bound_reached_is_an_error(
    served: tuple[BenchServer, Path],
) -> None:
    """One request outstanding at most, due every 0.1 ms: a 1-row answer takes longer,
    so most requests find the slot taken and count as errors."""
    result = _drive(*served, Scenario("open", 1, 1, 10_000.0))
    assert result.errors > result.requests
    assert any("1 requests outstanding when the next was due" in s
               for s in result.error_samples), result.error_samples
