"""Shadow traffic: a mirrored copy of a request to the candidate, off the response path.

The client's answer never waits for the shadow: ``ShadowRunner.submit`` starts a
task after the stable answer is ready and returns at once. Shadow work is the
first thing dropped under load: a copy is dropped (and counted in
``osprey_shadow_dropped_total``) when ``max_in_flight`` copies are already running
or the candidate's queue is over half full, and shadow requests take the lowest
priority level. The candidate's answers go to the audit log with route
``shadow`` (same decision id as the answer the client got), or, with the audit log
off, to a ``ShadowSink`` (the registry's ``shadow_results`` table, written in
batches from a thread); they are never returned to anyone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .errors import OspreyError
from .loaded_models import ServedVersion

log = logging.getLogger("osprey.shadow")

MAX_IN_FLIGHT = 32
MAX_PENDING_RESULTS = 10_000
FLUSH_SECONDS = 0.5


@dataclass(frozen=True)
class ShadowResult:
    decision_id: str
    model: str
    version: int
    outputs: dict[str, Any]
    latency_ms: float


class ShadowSink(Protocol):
    def write(self, results: list[ShadowResult]) -> None:
        """Store results (called from a worker thread)."""
        ...


def _jsonable(array: np.ndarray) -> Any:
    if array.dtype == object:
        return [
            v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
            for v in array.reshape(-1)
        ]
    return array.tolist()


class ShadowRunner:
    """Runs shadow copies and hands their answers to a sink in the background."""

    def __init__(
        self,
        sink: ShadowSink,
        on_drop: Callable[[str, int], None],
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self.sink = sink
        self.on_drop = on_drop
        self.max_in_flight = max_in_flight
        self._in_flight: set[asyncio.Task[None]] = set()
        self._pending: deque[ShadowResult] = deque(maxlen=MAX_PENDING_RESULTS)
        self._flusher: asyncio.Task[None] | None = None

    def submit(
        self,
        served: ServedVersion,
        decision_id: str,
        run: Callable[[], Awaitable[dict[str, np.ndarray]]],
        on_answer: Callable[[dict[str, np.ndarray], float], None] | None = None,
    ) -> None:
        """Start ``run`` (the candidate's inference) unless shadow work must be shed.

        ``on_answer(outputs, latency_ms)`` takes the answer (the audit log, route
        shadow); without it the answer goes to this runner's sink.
        """
        queue_half = served.settings.max_queue_size // 2
        if len(self._in_flight) >= self.max_in_flight or served.batcher.queued > queue_half:
            self.on_drop(served.name, served.version)
            return
        task = asyncio.get_running_loop().create_task(
            self._run(served, decision_id, run, on_answer))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_forever())

    async def _run(
        self,
        served: ServedVersion,
        decision_id: str,
        run: Callable[[], Awaitable[dict[str, np.ndarray]]],
        on_answer: Callable[[dict[str, np.ndarray], float], None] | None,
    ) -> None:
        start = time.perf_counter()
        try:
            outputs = await run()
        except OspreyError as exc:
            log.debug("shadow copy to %s v%d failed: %s", served.name, served.version, exc.message)
            self.on_drop(served.name, served.version)
            return
        except Exception:
            log.exception("shadow copy to %s v%d failed", served.name, served.version)
            self.on_drop(served.name, served.version)
            return
        latency_ms = (time.perf_counter() - start) * 1000.0
        if on_answer is not None:
            on_answer(outputs, latency_ms)
            return
        self._pending.append(ShadowResult(
            decision_id, served.name, served.version,
            {name: _jsonable(value) for name, value in outputs.items()}, latency_ms,
        ))

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            await self.flush()

    async def flush(self) -> None:
        """Write what is pending (in a thread); a failed write is logged and dropped."""
        if not self._pending:
            return
        batch = list(self._pending)
        self._pending.clear()
        try:
            await asyncio.to_thread(self.sink.write, batch)
        except OspreyError as exc:
            log.warning("could not record %d shadow result(s): %s", len(batch), exc.message)
        except Exception:
            log.exception("could not record %d shadow result(s)", len(batch))

    async def close(self) -> None:
        """Let running copies finish (briefly), then write what is pending."""
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=5.0)
        if self._flusher is not None:
            self._flusher.cancel()
        await self.flush()
