"""Where the dynamic batcher runs an execution: on the event loop or in its thread.

In process, with real ONNX Runtime sessions: the batcher's own ``_run_batch`` is
wrapped only to note the thread each execution ran in (the answers still come
from the real model and are checked against an unbatched session).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from server import batcher as batcher_module
from server.batcher import LONE_BATCHES, DynamicBatcher
from server.metrics import ServerMetrics
from server.model_config import ModelSettings
from server.runtime import OnnxModel
from server.stats import VersionStats

from .clientutil import sleep_request
from .extra_models import sleep_graph
from .onnx_models import mlp_graph, write_model

FEATURES = 32


def _batcher(path: Path, name: str, **settings: Any) -> DynamicBatcher:
    model = OnnxModel(name, 1, path, ModelSettings(**settings))
    model.warmup()
    return DynamicBatcher(model, VersionStats(ServerMetrics().for_version(name, 1), name, 1))


def _note_threads(batcher: DynamicBatcher) -> list[tuple[int, int]]:
    """(thread id, requests) of every execution from now on."""
    runs: list[tuple[int, int]] = []
    real: Callable[..., Any] = batcher._run_batch

    def noted(instance: int, parts: list[Any]) -> Any:
        runs.append((threading.get_ident(), len(parts)))
        return real(instance, parts)

    batcher._run_batch = noted  # type: ignore[method-assign]
    return runs


def _reference(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


# The tests of the mechanism raise the "fast" bound: on a slow or busy runner the MLP's
# execution can take over INLINE_BELOW_NS (100 µs), which is this server's tuning, not
# what the tests check.
GENEROUS_NS = 50_000_000


def test_lone_fast_requests_run_on_the_loop_and_concurrent_ones_batch_in_the_thread(
    tmp_path: Path, monkeypatch: Any,
) -> None:
    monkeypatch.setattr(batcher_module, "INLINE_BELOW_NS", GENEROUS_NS)
    path = write_model(tmp_path, "mlp", mlp_graph(FEATURES), None)
    reference = _reference(path)
    rng = np.random.default_rng(7)

    async def scenario() -> tuple[list[tuple[int, int]], int, int]:
        batcher = _batcher(path, "mlp", max_batch_size=16, max_queue_delay_us=0)
        runs = _note_threads(batcher)
        try:
            for _ in range(LONE_BATCHES + 6):  # one at a time: nothing to batch
                x = rng.standard_normal((1, FEATURES)).astype(np.float32)
                got = await batcher.infer({"INPUT": x}, 1, 0, None)
                np.testing.assert_allclose(got["PROBABILITY"], reference.run(None, {"INPUT": x})[0],
                                           rtol=1e-6)
            lone = len(runs)
            xs = [rng.standard_normal((2, FEATURES)).astype(np.float32) for _ in range(12)]
            answers = await asyncio.gather(*(batcher.infer({"INPUT": x}, 2, 0, None) for x in xs))
            for x, got in zip(xs, answers, strict=True):
                np.testing.assert_allclose(got["PROBABILITY"],
                                           reference.run(None, {"INPUT": x})[0], rtol=1e-6)
            return runs, lone, threading.get_ident()
        finally:
            await batcher.close()

    runs, lone, loop_thread = asyncio.run(scenario())
    sequential, concurrent = runs[:lone], runs[lone:]
    # until LONE_BATCHES batches in a row held one request, they go to the thread (and
    # measure the model) ...
    assert all(t != loop_thread for t, _ in sequential[:LONE_BATCHES - 1])
    # ... after which the lone 1-row executions run on the event loop
    assert all(t == loop_thread for t, _ in sequential[LONE_BATCHES - 1:]), sequential
    # requests arriving together share executions, and a shared one goes back to the thread
    assert len(concurrent) < 12
    first_shared = next(i for i, (_, n) in enumerate(concurrent) if n > 1)
    assert all(t != loop_thread for t, _ in concurrent[first_shared + 1:]), concurrent


def test_slow_executions_never_run_on_the_loop(tmp_path: Path, monkeypatch: Any) -> None:
    """A model measured slower than INLINE_BELOW_NS stays in its thread, lone or not."""
    path = write_model(tmp_path, "sleep", sleep_graph(), None)
    monkeypatch.setattr(batcher_module, "INLINE_BELOW_NS", 1_000)  # 1 µs: nothing is that fast

    async def scenario() -> tuple[list[tuple[int, int]], int]:
        batcher = _batcher(path, "sleep", max_batch_size=4, max_queue_delay_us=0)
        runs = _note_threads(batcher)
        try:
            for _ in range(LONE_BATCHES + 4):
                inputs = sleep_request(0.0005)
                got = await batcher.infer(inputs, 1, 0, None)
                np.testing.assert_array_equal(got["OUTPUT"], inputs["INPUT"])
            return runs, threading.get_ident()
        finally:
            await batcher.close()

    runs, loop_thread = asyncio.run(scenario())
    assert len(runs) == LONE_BATCHES + 4
    assert all(t != loop_thread for t, _ in runs)


def test_a_failing_execution_on_the_loop_fails_only_its_request(
    tmp_path: Path, monkeypatch: Any,
) -> None:
    """An execution run on the loop that raises answers its request with the error and
    leaves the batcher serving."""
    monkeypatch.setattr(batcher_module, "INLINE_BELOW_NS", GENEROUS_NS)
    path = write_model(tmp_path, "mlp", mlp_graph(FEATURES), None)

    async def scenario() -> tuple[str, np.ndarray]:
        batcher = _batcher(path, "mlp", max_batch_size=16, max_queue_delay_us=0)
        runs = _note_threads(batcher)
        ok = {"INPUT": np.ones((1, FEATURES), np.float32)}
        try:
            for _ in range(LONE_BATCHES + 1):
                await batcher.infer(ok, 1, 0, None)
            loop_thread = threading.get_ident()
            assert runs[-1][0] == loop_thread
            bad = {"INPUT": np.ones((1, FEATURES + 1), np.float32)}  # wrong width
            try:
                await batcher.infer(bad, 1, 0, None)
            except Exception as exc:  # ONNX Runtime's own error, passed through
                error = str(exc)
            else:
                raise AssertionError("a wrong-width execution succeeded")
            assert runs[-1][0] == loop_thread
            after = await batcher.infer(ok, 1, 0, None)
            return error, after["PROBABILITY"]
        finally:
            await batcher.close()

    error, after = asyncio.run(scenario())
    assert "INPUT" in error or "dimension" in error.lower(), error
    assert after.shape == (1, 1)
