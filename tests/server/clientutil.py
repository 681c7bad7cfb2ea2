"""Client-side helpers for the batching, error and lifecycle tests (tritonclient only)."""

from __future__ import annotations

import functools
import queue
import re
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

Arrays = dict[str, np.ndarray]


def make_inputs(arrays: Arrays) -> list[grpcclient.InferInput]:
    """One InferInput per array (raw contents), datatype from the NumPy dtype."""
    inputs = []
    for name, array in arrays.items():
        datatype = np_to_triton_dtype(array.dtype)
        infer_input = grpcclient.InferInput(name, list(array.shape), datatype)
        infer_input.set_data_from_numpy(array)
        inputs.append(infer_input)
    return inputs


@dataclass
class Outcome:
    """What one asynchronous request came back with, and when (time.monotonic())."""

    index: int
    result: Any  # tritonclient InferResult or None
    error: InferenceServerException | None
    done_at: float

    def output(self, name: str) -> np.ndarray:
        assert self.error is None, f"request {self.index} failed: {self.error}"
        out = self.result.as_numpy(name)
        assert out is not None, f"request {self.index} has no output {name}"
        return out


class Fired:
    """Requests sent with ``async_infer``; ``wait`` collects them in completion order."""

    def __init__(self) -> None:
        self._done: queue.Queue[Outcome] = queue.Queue()
        self.handles: list[Any] = []
        self.count = 0

    def send(
        self, client: grpcclient.InferenceServerClient, model: str, arrays: Arrays, **kwargs: Any
    ) -> int:
        index = self.count
        self.count += 1

        def callback(result: Any, error: Any) -> None:
            self._done.put(Outcome(index, result, error, time.monotonic()))

        self.handles.append(
            client.async_infer(model, make_inputs(arrays), callback, **kwargs)
        )
        return index

    def completed(self) -> int:
        """How many have come back so far (before ``wait``)."""
        return self._done.qsize()

    def wait(self, timeout: float = 60.0) -> list[Outcome]:
        """Every outcome, in the order they completed."""
        deadline = time.monotonic() + timeout
        outcomes: list[Outcome] = []
        while len(outcomes) < self.count:
            outcomes.append(self._done.get(timeout=max(deadline - time.monotonic(), 0.01)))
        return outcomes


def fire_all(
    client: grpcclient.InferenceServerClient,
    model: str,
    requests: Sequence[Arrays],
    **kwargs: Any,
) -> list[Outcome]:
    """Send every request at once; outcomes in request order."""
    fired = Fired()
    for arrays in requests:
        fired.send(client, model, arrays, **kwargs)
    return sorted(fired.wait(), key=lambda o: o.index)


def expect_error(call: Callable[[], Any]) -> InferenceServerException:
    """Run ``call`` and return the InferenceServerException it raises."""
    try:
        call()
    except InferenceServerException as exc:
        return exc
    raise AssertionError("the call succeeded; an error was expected")


def status_of(exc: InferenceServerException) -> str:
    """'NOT_FOUND' and the like."""
    return str(exc.status()).removeprefix("StatusCode.")


def model_stats(client: grpcclient.InferenceServerClient, model: str, version: str = "") -> Any:
    """The ModelStatistics message of one version (tritonclient's protobuf)."""
    response = client.get_inference_statistics(model, version)
    assert len(response.model_stats) == 1, response
    return response.model_stats[0]


def batch_sizes(stats: Any) -> dict[int, int]:
    """Executions by batch size (rows)."""
    return {int(b.batch_size): int(b.compute_infer.count) for b in stats.batch_stats}


def metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def metric(port: int, name: str, **labels: str) -> float:
    """The value of one sample on /metrics (0 when the series does not exist yet)."""
    total = 0.0
    pattern = re.compile(rf"^{re.escape(name)}\{{(?P<labels>[^}}]*)\}} (?P<value>\S+)$", re.M)
    for m in pattern.finditer(metrics_text(port)):
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group("labels")))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group("value"))
    return total


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.02)


@functools.cache
def seconds_per_round() -> float:
    """How long one round of ``extra_models.sleep_graph`` takes on this machine."""
    import onnxruntime as ort
    from onnx import helper

    from .extra_models import sleep_graph
    from .onnx_models import OPSET

    model = helper.make_model(sleep_graph(), opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    feeds = {"INPUT": np.zeros((1, 1), np.float32), "WORK": np.full((1, 1), 300, np.int64)}
    session.run(None, feeds)
    start = time.perf_counter()
    session.run(None, feeds)
    return (time.perf_counter() - start) / 300


def sleep_request(seconds: float, marker: float = 0.0, rows: int = 1) -> Arrays:
    """Inputs for the sleep model that keep it busy about ``seconds``."""
    rounds = max(int(seconds / seconds_per_round()), 0)
    return {
        "INPUT": np.full((rows, 1), marker, np.float32),
        "WORK": np.full((rows, 1), rounds, np.int64),
    }
