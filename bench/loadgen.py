"""Load generator over tritonclient's asyncio gRPC client: closed and open loop.

A closed-loop scenario runs ``concurrency`` workers for ``warmup_s + seconds``; each
worker sends its next request as soon as its previous answer arrives. Only requests
that complete inside the timed window (after the warm-up) count towards throughput and
latency.

An open-loop scenario (api ``open``) sends requests at a fixed arrival rate
(``Scenario.rate`` per second, evenly spaced) whatever the server does, and times each
one from the moment it was *due*, not the moment it went out: a server that falls
behind cannot hide its queue by slowing the client down (no coordinated omission). At
most ``concurrency`` requests are outstanding; a request due while that many are
still waiting is counted as an error (the server could not keep up), never delayed.

Streaming runs in one of two modes:

- ``per-worker`` (default): every worker owns one ``ModelStreamInfer`` stream and keeps
  one request outstanding on it. This is the same closed loop as unary (N independent
  clients, one request in flight each), so the unary and streaming rows differ only in
  the transport (a gRPC call per request vs a message on a long-lived stream); it is
  also how perf_analyzer's ``--streaming`` drives a server (one stream per context).
- ``shared``: one stream carries all ``concurrency`` outstanding requests, matched to
  their answers by request id: a backend multiplexing its traffic over one stream.

Inputs are prebuilt ``InferInput`` objects (NumPy → bytes once); what remains per
request is tritonclient building and serialising the protobuf, as in any client.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from .reference import Batch, OrtReference
from .stats import LatencySummary, summarize

Api = Literal["unary", "stream", "open"]
StreamMode = Literal["per-worker", "shared"]
STREAM_MODES: tuple[StreamMode, ...] = ("per-worker", "shared")
CpuClocks = dict[str, Callable[[], float]]

# Batched and unbatched executions may round differently in the last bits.
RTOL = 1e-5
ATOL = 1e-6
MAX_ERROR_SAMPLES = 5
_TIMER_RESOLUTION_S = 0.001


@dataclass(frozen=True)
class Scenario:
    """One measured cell: API, rows per request, concurrency (for ``open``: the most
    requests outstanding) and, for ``open``, the arrival rate (requests per second)."""

    api: Api
    rows: int
    concurrency: int
    rate: float | None = None


@dataclass(frozen=True)
class Payload:
    """Prebuilt requests of one size and the answers each must get."""

    rows: int
    inputs: list[list[grpcclient.InferInput]]
    expected: list[Batch]


def build_payload(batches: list[Batch], expected: list[Batch]) -> Payload:
    """Turn NumPy batches into reusable ``InferInput`` lists (serialised once)."""
    requests: list[list[grpcclient.InferInput]] = []
    for batch in batches:
        inputs = []
        for name, array in batch.items():
            datatype = np_to_triton_dtype(array.dtype)
            infer_input = grpcclient.InferInput(name, list(array.shape), datatype)
            infer_input.set_data_from_numpy(array)
            inputs.append(infer_input)
        requests.append(inputs)
    rows = next(iter(batches[0].values())).shape[0]
    return Payload(rows=rows, inputs=requests, expected=expected)


def reference_payload(ref: OrtReference, rows: int, count: int = 16,
                      seed: int | None = None) -> Payload:
    """``count`` distinct requests of ``rows`` rows for ``ref``'s model, each with the
    answer ORT gives it in process (what the load generator checks answers against)."""
    batches = ref.make_batches(rows, count, seed=rows if seed is None else seed)
    return build_payload(batches, [ref.run(b) for b in batches])


@dataclass(frozen=True)
class LoadResult:
    """What one scenario measured."""

    scenario: Scenario
    stream_mode: StreamMode | None
    seconds: float
    requests: int
    latency: LatencySummary
    errors: int
    checked: int
    wrong: int
    rows_per_execution: float | None
    cpu_busy: dict[str, float]
    error_samples: list[str]

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds

    @property
    def rows_per_s(self) -> float:
        return self.requests * self.scenario.rows / self.seconds


@dataclass
class _Recorder:
    """Collects completions; checks every ``check_every``-th answer against ORT."""

    payload: Payload
    warm_end: float
    end: float
    check_every: int
    latencies: list[float] = field(default_factory=list)
    completed: int = 0
    errors: int = 0
    checked: int = 0
    wrong: int = 0
    error_samples: list[str] = field(default_factory=list)

    def error(self, message: str) -> None:
        self.errors += 1
        if len(self.error_samples) < MAX_ERROR_SAMPLES:
            self.error_samples.append(message)

    def record(
        self,
        sent: float,
        index: int,
        result: grpcclient.InferResult | None,
        failure: Exception | None,
    ) -> None:
        done = time.perf_counter()
        if result is None:
            self.error(str(failure))
            return
        self.completed += 1
        if self.check_every and self.completed % self.check_every == 0:
            self.checked += 1
            if not self._correct(result, self.payload.expected[index]):
                self.wrong += 1
        if self.warm_end <= done <= self.end:
            self.latencies.append(done - sent)

    @staticmethod
    def _correct(result: grpcclient.InferResult, expected: Batch) -> bool:
        for name, want in expected.items():
            got = result.as_numpy(name)
            if got is None or got.shape != want.shape:
                return False
            if not np.allclose(got, want, rtol=RTOL, atol=ATOL):
                return False
        return True


async def _infer_once(client: aioclient.InferenceServerClient, model: str, rec: _Recorder,
                      index: int, since: float) -> None:
    """One unary request of the payload, recorded with its latency from ``since``."""
    try:
        result = await client.infer(model, rec.payload.inputs[index])
    except InferenceServerException as exc:
        rec.record(since, index, None, exc)
    else:
        rec.record(since, index, result, None)


async def _unary_worker(
    client: aioclient.InferenceServerClient, model: str, rec: _Recorder, first: int
) -> None:
    count = len(rec.payload.inputs)
    clock = time.perf_counter
    i = first
    while clock() < rec.end:
        await _infer_once(client, model, rec, i % count, clock())
        i += 1


async def _open_loop(
    client: aioclient.InferenceServerClient, model: str, rec: _Recorder, scenario: Scenario
) -> None:
    """Requests due every 1/rate seconds; each timed from when it was due."""
    assert scenario.rate, "an open-loop scenario needs a rate"
    count = len(rec.payload.inputs)
    clock = time.perf_counter
    interval = 1.0 / scenario.rate
    outstanding: set[asyncio.Task[None]] = set()
    start = clock()
    i = 0
    while True:
        due = start + i * interval
        if due >= rec.end:
            break
        wait = due - clock()
        if wait > _TIMER_RESOLUTION_S:  # epoll sleeps in whole milliseconds ...
            await asyncio.sleep(wait - _TIMER_RESOLUTION_S)
        # ... the rest is spent yielding (answers keep arriving): no timer waits < 1 ms
        while clock() < due:  # noqa: ASYNC110
            await asyncio.sleep(0)
        if len(outstanding) >= scenario.concurrency:
            if rec.warm_end <= due:
                rec.error(f"{scenario.concurrency} requests outstanding when the next was due")
        else:
            task = asyncio.create_task(_infer_once(client, model, rec, i % count, due))
            outstanding.add(task)
            task.add_done_callback(outstanding.discard)
        i += 1
    if outstanding:
        await asyncio.gather(*outstanding)


async def _stream_worker(
    client: aioclient.InferenceServerClient, model: str, rec: _Recorder, first: int
) -> None:
    """One stream, one request outstanding on it at a time."""
    inputs = rec.payload.inputs
    clock = time.perf_counter
    turn: asyncio.Queue[None] = asyncio.Queue()
    in_flight: deque[tuple[int, float]] = deque()

    async def requests() -> AsyncIterator[dict[str, Any]]:
        i = first
        while clock() < rec.end:
            index = i % len(inputs)
            in_flight.append((index, clock()))
            yield {"model_name": model, "inputs": inputs[index]}
            await turn.get()
            i += 1

    try:
        async for result, failure in client.stream_infer(requests()):
            index, sent = in_flight.popleft()
            rec.record(sent, index, result, failure)
            turn.put_nowait(None)
    except Exception as exc:  # the stream itself broke: count what it held
        for _ in range(max(1, len(in_flight))):
            rec.error(f"stream failed: {exc!r}")


async def _shared_stream(
    client: aioclient.InferenceServerClient, model: str, rec: _Recorder, concurrency: int
) -> None:
    """One stream, ``concurrency`` requests outstanding, matched by request id."""
    inputs = rec.payload.inputs
    clock = time.perf_counter
    slots = asyncio.Semaphore(concurrency)
    in_flight: dict[str, tuple[int, float]] = {}

    async def requests() -> AsyncIterator[dict[str, Any]]:
        i = 0
        while True:
            await slots.acquire()
            if clock() >= rec.end:
                return
            index = i % len(inputs)
            request_id = str(i)
            in_flight[request_id] = (index, clock())
            yield {"model_name": model, "inputs": inputs[index], "request_id": request_id}
            i += 1

    try:
        async for result, failure in client.stream_infer(requests()):
            slots.release()
            if result is None:  # tritonclient drops the response id of an error
                rec.error(str(failure))
                continue
            entry = in_flight.pop(result.get_response().id, None)
            if entry is None:
                rec.error(f"answer with unknown request id {result.get_response().id!r}")
                continue
            rec.record(entry[1], entry[0], result, None)
    except Exception as exc:
        for _ in range(max(1, len(in_flight))):
            rec.error(f"stream failed: {exc!r}")


async def _execution_counts(
    client: aioclient.InferenceServerClient, model: str, at: float
) -> tuple[int, int] | None:
    """(rows inferred, executions) from ModelStatistics at time ``at``."""
    await asyncio.sleep(max(0.0, at - time.perf_counter()))
    try:
        stats = await client.get_inference_statistics(model_name=model)
    except InferenceServerException:
        return None
    rows = sum(s.inference_count for s in stats.model_stats)
    executions = sum(s.execution_count for s in stats.model_stats)
    return rows, executions


CpuSample = tuple[float, dict[str, float]]


async def _cpu_times(clocks: CpuClocks, at: float) -> CpuSample:
    """(wall time, CPU seconds of every clock) read at time ``at``."""
    await asyncio.sleep(max(0.0, at - time.perf_counter()))
    return time.perf_counter(), {name: read() for name, read in clocks.items()}


def _busy(start: CpuSample, end: CpuSample) -> dict[str, float]:
    """Cores busy per clock between two samples (1.0 = one core all the time)."""
    wall = end[0] - start[0]
    return {name: (end[1][name] - start[1][name]) / wall for name in start[1]} if wall > 0 else {}


async def run_scenario(
    client: aioclient.InferenceServerClient,
    model: str,
    payload: Payload,
    scenario: Scenario,
    seconds: float,
    warmup_s: float,
    check_every: int,
    stream_mode: StreamMode = "per-worker",
    cpu_clocks: CpuClocks | None = None,
) -> LoadResult:
    """Drive ``model`` with ``scenario`` and measure it.

    ``cpu_clocks`` name functions returning CPU seconds used so far (e.g. by the server
    and by this process); the result reports each one's cores busy during the window.
    """
    start = time.perf_counter()
    rec = _Recorder(payload, start + warmup_s, start + warmup_s + seconds, check_every)
    before = asyncio.create_task(_execution_counts(client, model, rec.warm_end))
    after = asyncio.create_task(_execution_counts(client, model, rec.end))
    cpu_start = asyncio.create_task(_cpu_times(cpu_clocks or {}, rec.warm_end))
    cpu_end = asyncio.create_task(_cpu_times(cpu_clocks or {}, rec.end))
    if scenario.api == "open":
        await _open_loop(client, model, rec, scenario)
    elif scenario.api == "stream" and stream_mode == "shared":
        await _shared_stream(client, model, rec, scenario.concurrency)
    else:
        worker = _unary_worker if scenario.api == "unary" else _stream_worker
        await asyncio.gather(*(worker(client, model, rec, w) for w in range(scenario.concurrency)))
    counts = (await before, await after)
    rows_per_exec = None
    if counts[0] is not None and counts[1] is not None and counts[1][1] > counts[0][1]:
        rows_per_exec = (counts[1][0] - counts[0][0]) / (counts[1][1] - counts[0][1])
    return LoadResult(
        scenario=scenario,
        stream_mode=stream_mode if scenario.api == "stream" else None,
        seconds=seconds,
        requests=len(rec.latencies),
        latency=summarize(rec.latencies),
        errors=rec.errors,
        checked=rec.checked,
        wrong=rec.wrong,
        rows_per_execution=rows_per_exec,
        cpu_busy=_busy(await cpu_start, await cpu_end),
        error_samples=rec.error_samples,
    )
