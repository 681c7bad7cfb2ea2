"""The dynamic batcher of one model version (Triton semantics, counted in rows).

- A batch is formed as soon as an instance is free; it waits at most
  ``max_queue_delay_us`` (from the arrival of its first request), never past the
  deadline of a request in it, and only while it is short of ``max_batch_size`` rows.
- The queue is bounded (``max_queue_size`` requests; beyond it: Overloaded) and has
  priority levels (1 is the highest); within a level it is FIFO.
- Requests whose non-batch dimensions or datatypes differ never share a batch.
- A request's deadline (gRPC deadline or ``timeout`` parameter) evicts it while it
  waits; a cancelled caller's request leaves the queue. Once running, a request
  completes.
- When an execution of several requests fails, each of them runs again alone, so
  a request whose values break the model fails only itself.
- A request larger than ``max_batch_size`` is split into chunks that travel as
  separate queue entries and are reassembled in order.
- Packing (one contiguous array per input, by the native packer ``native.pack``),
  execution and splitting (zero-copy views by row offsets) run in the version's
  inference thread pool so the event loop keeps accepting calls (and requests that
  arrive meanwhile form the next batch). When there is nothing to batch (the last
  ``LONE_BATCHES`` batches each held a single request) and executions of that many
  rows were measured to take less than ``INLINE_BELOW_NS``, the execution runs on the
  event loop itself: handing it to a thread and back costs more of the loop's time
  than it does (a 1-row MLP: ~6 us in ONNX Runtime, ~50 us of hand-off and wake-ups).
  Each power-of-two size class of rows keeps its own measurement (a moving average);
  a class not measured yet, or measured slow, runs in the thread, and the first batch
  of several requests sends the version back to the thread.
- A version with a feature spec (``server.features``) queues the requests' raw
  columns (numeric [n, 1] arrays, BYTES buffers); all its requests may share a
  batch. In the inference thread the columns are packed and run through the
  compiled transform (which counts the drift sketch) before ONNX Runtime; the
  sketch keeps a batch's counts only once the batch has succeeded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from native import pack

from .errors import DeadlineExceeded, ModelNotReady, Overloaded, RequestCancelled
from .features import FeatureTransform
from .runtime import OnnxModel
from .stats import ExecutionTiming, VersionStats

log = logging.getLogger("osprey.batcher")

Arrays = dict[str, np.ndarray]
# A request's inputs: arrays, or for a feature-spec version its raw columns (numeric
# arrays and BYTES buffers).
Inputs = dict[str, Any]

# epoll/select wait in whole milliseconds: shorter waits are done by yielding.
_TIMER_RESOLUTION_S = 0.001
# Executions measured faster than this run on the event loop (see the module doc).
INLINE_BELOW_NS = 100_000
LONE_BATCHES = 8
_COST_WEIGHT = 0.25  # of the newest execution in a size class's moving average


class _State(Enum):
    QUEUED = 1
    RUNNING = 2
    DONE = 3
    GONE = 4  # evicted (deadline) or cancelled while queued


@dataclass(eq=False)
class _Entry:
    inputs: Inputs
    rows: int
    shape_key: tuple[Any, ...]
    level: int
    deadline: float | None  # loop.time() seconds
    future: asyncio.Future[Arrays]
    enqueued_ns: int = field(default_factory=time.perf_counter_ns)
    enqueued_at: float = 0.0  # loop.time()
    state: _State = _State.QUEUED
    first_part: bool = True  # False for the later chunks of a split request
    waited_ns: int = 0  # from enqueued to the start of its batch


def _shape_key(inputs: Inputs) -> tuple[Any, ...]:
    return tuple((name, a.dtype.str, a.shape[1:]) for name, a in inputs.items())


_FEATURES_KEY = ("feature spec columns",)  # every request of a spec version is [n, 1]


class DynamicBatcher:
    """Queues requests for one model version and runs them in batches."""

    def __init__(
        self, model: OnnxModel, stats: VersionStats, features: FeatureTransform | None = None
    ) -> None:
        self.model = model
        self.features = features
        self.settings = model.settings
        self.stats = stats
        self._levels: list[deque[_Entry]] = [
            deque() for _ in range(max(1, self.settings.priority_levels))
        ]
        self._queued = 0
        self._inflight = 0
        self._closing = False
        self._executor = ThreadPoolExecutor(
            max_workers=len(model.sessions),
            thread_name_prefix=f"infer-{model.name}-{model.version}",
        )
        self._free: asyncio.Queue[int] = asyncio.Queue()
        for instance in range(len(model.sessions)):
            self._free.put_nowait(instance)
        self._running: set[asyncio.Task[None]] = set()
        # ns per execution, moving average, by size class (rows.bit_length()); a class's
        # first execution is not counted (it pays one-time costs: ~140 us for a 1-row MLP)
        self._cost_ns: dict[int, float | None] = {}
        self._lone = 0  # consecutive batches of a single request
        self._arrived = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._scheduler = asyncio.get_running_loop().create_task(
            self._schedule(), name=f"batcher-{model.name}-{model.version}"
        )

    # -- submission ---------------------------------------------------------------

    async def infer(self, inputs: Inputs, rows: int, level: int, deadline: float | None,
                    waited: list[int] | None = None) -> Arrays:
        """Run ``inputs`` (``rows`` rows) at priority ``level`` (0 = highest).

        ``deadline`` is in ``loop.time()`` seconds. Returns every output of the model;
        ``waited`` (when given) receives the ns the request spent queued (its longest
        chunk's wait, for the audit log).
        """
        if self._closing:
            raise ModelNotReady(
                f"model '{self.model.name}' version {self.model.version} is unloading"
            )
        cap = self.settings.max_batch_size
        chunks: list[tuple[Inputs, int]]
        if not self.settings.batching or rows <= cap:
            chunks = [(inputs, rows)]
        elif self.features is not None:
            chunks = self.features.chunk(inputs, rows, cap)
        else:
            chunks = [
                ({name: a[s : s + cap] for name, a in inputs.items()}, min(cap, rows - s))
                for s in range(0, rows, cap)
            ]
        # The bound counts queue entries; a split request is admitted whole or not at all.
        if self._queued >= self.settings.max_queue_size:
            raise Overloaded(
                f"queue full: model '{self.model.name}' version {self.model.version} has "
                f"{self._queued} request(s) waiting (max_queue_size "
                f"{self.settings.max_queue_size}); retry later"
            )
        loop = asyncio.get_running_loop()
        entries = []
        for part, (chunk, n) in enumerate(chunks):
            key = _FEATURES_KEY if self.features is not None else _shape_key(chunk)
            entry = _Entry(chunk, n, key, level, deadline, loop.create_future())
            entry.first_part = part == 0
            entry.enqueued_at = loop.time()
            self._levels[level].append(entry)
            entries.append(entry)
        self._queued += len(entries)
        self.stats.queued(len(entries))
        self._idle.clear()
        self._arrived.set()
        try:
            results = [await self._wait(entry, loop) for entry in entries]
        except BaseException:
            for entry in entries:
                self._leave_queue(entry)
            raise
        if waited is not None:
            waited.append(max(entry.waited_ns for entry in entries))
        if len(results) == 1:
            return results[0]
        return {name: np.concatenate([r[name] for r in results]) for name in results[0]}

    async def _wait(self, entry: _Entry, loop: asyncio.AbstractEventLoop) -> Arrays:
        if entry.deadline is None:
            return await entry.future
        remaining = entry.deadline - loop.time()
        try:
            return await asyncio.wait_for(asyncio.shield(entry.future), max(remaining, 0.0))
        except TimeoutError:
            if entry.state is _State.QUEUED:
                self._leave_queue(entry)
                raise DeadlineExceeded(
                    f"deadline exceeded: the request waited "
                    f"{(loop.time() - entry.enqueued_at) * 1000:.1f} ms in the queue of "
                    f"model '{self.model.name}' version {self.model.version}"
                ) from None
            return await entry.future  # already running: let it finish

    def _leave_queue(self, entry: _Entry) -> None:
        if entry.state is _State.QUEUED:
            entry.state = _State.GONE
            self._queued -= 1
            self.stats.queued(-1)
            if not entry.future.done():
                entry.future.cancel()
            self._check_idle()

    # -- scheduling ---------------------------------------------------------------

    def _pop_head(self, loop: asyncio.AbstractEventLoop) -> _Entry | None:
        """The first live entry of the highest non-empty level (evicting expired ones)."""
        now = loop.time()
        for level in self._levels:
            while level:
                entry = level[0]
                if entry.state is not _State.QUEUED:
                    level.popleft()
                    continue
                if entry.deadline is not None and entry.deadline <= now:
                    level.popleft()
                    self._expire(entry, now)
                    continue
                level.popleft()
                return entry
        return None

    def _peek_head(self) -> _Entry | None:
        for level in self._levels:
            while level and level[0].state is not _State.QUEUED:
                level.popleft()
            if level:
                return level[0]
        return None

    def _expire(self, entry: _Entry, now: float) -> None:
        entry.state = _State.GONE
        self._queued -= 1
        self.stats.queued(-1)
        if not entry.future.done():
            entry.future.set_exception(
                DeadlineExceeded(
                    f"deadline exceeded: the request waited {(now - entry.enqueued_at) * 1000:.1f}"
                    f" ms in the queue of model '{self.model.name}' version "
                    f"{self.model.version}"
                )
            )

    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            instance = await self._free.get()
            batch = await self._form_batch(loop)
            if batch is None:
                self._free.put_nowait(instance)
                return
            task = loop.create_task(self._execute(instance, batch))
            self._running.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(self._running.discard)

    async def _form_batch(self, loop: asyncio.AbstractEventLoop) -> list[_Entry] | None:
        while True:
            head = self._pop_head(loop)
            if head is not None:
                break
            if self._closing:
                return None
            self._arrived.clear()
            await self._arrived.wait()
        batch = [head]
        head.state = _State.RUNNING
        self._queued -= 1
        self._inflight += 1  # counts the batch being formed, so close() waits for it
        if not self.settings.batching:
            self.stats.queued(-1)
            return batch
        rows = head.rows
        cap = self.settings.max_batch_size
        flush_at = head.enqueued_at + self.settings.max_queue_delay_us / 1e6
        if head.deadline is not None:  # a short batch never waits past a member's deadline
            flush_at = min(flush_at, head.deadline)
        while rows < cap:
            nxt = self._peek_head()
            if nxt is not None:
                if nxt.shape_key != head.shape_key or rows + nxt.rows > cap:
                    break  # never reorder: the next request starts the next batch
                entry = self._pop_head(loop)
                if entry is None:
                    continue
                if entry.shape_key != head.shape_key or rows + entry.rows > cap:
                    # _pop_head skipped an expired head; put the new head back in front.
                    self._levels[entry.level].appendleft(entry)
                    break
                entry.state = _State.RUNNING
                self._queued -= 1
                batch.append(entry)
                rows += entry.rows
                if entry.deadline is not None:
                    flush_at = min(flush_at, entry.deadline)
                continue
            remaining = flush_at - loop.time()
            if remaining <= 0 or self._closing:
                break
            if remaining < _TIMER_RESOLUTION_S:
                # The selector rounds timeouts up to a whole millisecond, so a timer
                # would turn a 100 us delay into ~1 ms. Below that, yield to the loop
                # (which polls the sockets without blocking) until the delay is spent.
                await asyncio.sleep(0)
                continue
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                # Stop short by the resolution; the yields above finish the wait.
                await asyncio.wait_for(self._arrived.wait(), remaining - _TIMER_RESOLUTION_S)
        self.stats.queued(-len(batch))
        return batch

    async def _execute(self, instance: int, batch: list[_Entry]) -> None:
        loop = asyncio.get_running_loop()
        start_ns = time.perf_counter_ns()
        for entry in batch:
            entry.waited_ns = start_ns - entry.enqueued_ns
            if entry.first_part:  # statistics count requests, not the chunks of one
                self.stats.waited(entry.waited_ns)
        try:
            outputs, timing = await self._run(loop, instance, [(e.inputs, e.rows) for e in batch])
        except Exception as exc:
            if len(batch) == 1:
                self._finish(batch[0], error=exc)
            else:
                # One request's values can break the whole execution (an index out of
                # range, say): run each request alone so that only the culprit fails.
                try:
                    for entry in batch:
                        await self._run_alone(loop, instance, entry)
                except BaseException as again:
                    for entry in batch:
                        self._finish(entry, error=again)  # those not answered yet
                    raise
        except BaseException as exc:
            for entry in batch:
                self._finish(entry, error=exc)
        else:
            self.stats.execution(timing, len(batch), sum(e.first_part for e in batch))
            for entry, result in zip(batch, outputs, strict=True):
                self._finish(entry, result)
        finally:
            self._inflight -= 1
            self._free.put_nowait(instance)
            self._check_idle()

    async def _run_alone(
        self, loop: asyncio.AbstractEventLoop, instance: int, entry: _Entry
    ) -> None:
        try:
            outputs, timing = await self._run(loop, instance, [(entry.inputs, entry.rows)])
        except Exception as exc:
            self._finish(entry, error=exc)
        else:
            self.stats.execution(timing, 1, int(entry.first_part))
            self._finish(entry, outputs[0])

    async def _run(
        self, loop: asyncio.AbstractEventLoop, instance: int, parts: list[tuple[Inputs, int]]
    ) -> tuple[list[Arrays], ExecutionTiming]:
        """``_run_batch`` on the event loop when there is nothing to batch and
        executions of this size were measured cheaper than a hand-off to the inference
        thread, else in that thread; either way the execution's time updates its size
        class's average."""
        self._lone = self._lone + 1 if len(parts) == 1 else 0
        size_class = sum(rows for _, rows in parts).bit_length()
        seen = size_class in self._cost_ns
        cost = self._cost_ns.get(size_class)
        if self._lone >= LONE_BATCHES and cost is not None and cost < INLINE_BELOW_NS:
            result = self._run_batch(instance, parts)
        else:
            result = await loop.run_in_executor(self._executor, self._run_batch, instance, parts)
        timing = result[1]
        took = timing.input_ns + timing.infer_ns + timing.output_ns
        if seen:
            self._cost_ns[size_class] = took if cost is None else cost + _COST_WEIGHT * (
                took - cost)
        else:
            self._cost_ns[size_class] = None
        return result

    @staticmethod
    def _finish(
        entry: _Entry, result: Arrays | None = None, error: BaseException | None = None
    ) -> None:
        entry.state = _State.DONE
        if entry.future.done():
            return
        if error is not None:
            entry.future.set_exception(error)
        else:
            entry.future.set_result(result)  # type: ignore[arg-type]

    def _run_batch(
        self, instance: int, parts: list[tuple[Inputs, int]]
    ) -> tuple[list[Arrays], ExecutionTiming]:
        """Pack, (transform,) run and split one batch of (inputs, rows) (inference thread)."""
        t0 = time.perf_counter_ns()
        offsets: np.ndarray | None
        if self.features is not None:
            # Pack the raw columns, transform them into the model's matrix and count
            # the drift sketch (into this instance's scratch, kept on success below).
            feeds, offsets, transformed = self.features.prepare(instance, parts)
        elif len(parts) == 1:
            feeds = {name: np.ascontiguousarray(a) for name, a in parts[0][0].items()}
            offsets = None
        else:
            # One allocation and one memcpy per request per input (native packer); the
            # row offsets of the first input split every output back per request.
            packed = {name: pack.pack([p[name] for p, _ in parts]) for name in parts[0][0]}
            feeds = {name: batch for name, (batch, _) in packed.items()}
            offsets = next(iter(packed.values()))[1]
        t1 = time.perf_counter_ns()
        results = self.model.run(instance, feeds)
        t2 = time.perf_counter_ns()
        names = self.model.output_names
        rows = next(iter(feeds.values())).shape[0] if self.settings.batching else 1
        if len(parts) == 1:
            split = [dict(zip(names, results, strict=True))]
        else:
            assert offsets is not None  # packed above: several parts
            for name, out in zip(names, results, strict=True):
                if out.ndim == 0 or out.shape[0] != rows:
                    raise RuntimeError(
                        f"model '{self.model.name}' output '{name}' has shape {out.shape} "
                        f"for a batch of {rows} rows"
                    )
            per_output = [pack.split(out, offsets) for out in results]  # views, no copy
            split = [
                {name: per_output[k][i] for k, name in enumerate(names)}
                for i in range(len(parts))
            ]
        sketched = 0
        if self.features is not None:
            self.features.commit(instance, transformed)  # it succeeded: keep its counts
            sketched = transformed if self.features.sketching else 0
        t3 = time.perf_counter_ns()
        return split, ExecutionTiming(rows, t1 - t0, t2 - t1, t3 - t2, sketched)

    # -- lifecycle ----------------------------------------------------------------

    def _check_idle(self) -> None:
        if self._queued == 0 and self._inflight == 0:
            self._idle.set()

    @property
    def pending(self) -> int:
        return self._queued

    @property
    def queued(self) -> int:
        """Requests waiting for a batch now."""
        return self._queued

    async def close(self, drain: bool = True) -> None:
        """Stop accepting; finish queued and running work (or cancel it), then stop."""
        self._closing = True
        if not drain:
            for level in self._levels:
                for entry in level:
                    if entry.state is _State.QUEUED and not entry.future.done():
                        entry.future.set_exception(
                            RequestCancelled(f"model '{self.model.name}' was unloaded")
                        )
                    self._leave_queue(entry)
        self._check_idle()
        await self._idle.wait()
        self._arrived.set()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(self._scheduler, 5)
        self._executor.shutdown(wait=False)  # idle: no job is left in it
