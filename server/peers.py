"""The other worker processes of this host, for answers that cover "the server".

SO_REUSEPORT balances connections, not requests, so a client talks to one worker
per connection. Whatever it asks of the server as a whole is answered for every
worker: statistics are summed, readiness needs every worker, and load/unload act on
every worker. Each worker serves the inference service a second time, without
fan-out and without the public interceptors, on a Unix socket in the supervisor's
private run folder (mode 0700: only this user's processes can reach it); peers call
each other there with our own stubs.

``WorkerGroup.single()`` is the one-process case: no peers, nothing to merge.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc

from .errors import ModelLoadError, ModelNotReady
from .protocol.inference import grpc_service_pb2 as pb
from .protocol.inference import grpc_service_pb2_grpc as pb_grpc

log = logging.getLogger("osprey.peers")

PEER_TIMEOUT_S = 10.0
LOAD_TIMEOUT_S = 600.0

T = TypeVar("T")


def worker_socket(run_dir: Path, index: int) -> Path:
    """Where worker ``index`` serves its peers."""
    return run_dir / f"worker-{index}.sock"


@dataclass
class WorkerGroup:
    """This worker's place among the host's workers, and calls to the others."""

    index: int = 0
    count: int = 1
    run_dir: Path | None = None
    _stubs: dict[int, Any] = field(default_factory=dict)
    _channels: list[grpc.aio.Channel] = field(default_factory=list)

    @classmethod
    def single(cls) -> WorkerGroup:
        return cls()

    @property
    def peers(self) -> list[int]:
        return [i for i in range(self.count) if i != self.index]

    @property
    def identity(self) -> str:
        return f"worker {self.index}"

    def _stub(self, peer: int) -> Any:
        stub = self._stubs.get(peer)
        if stub is None:
            assert self.run_dir is not None
            channel = grpc.aio.insecure_channel(f"unix:{worker_socket(self.run_dir, peer)}")
            self._channels.append(channel)
            stub = self._stubs[peer] = pb_grpc.GRPCInferenceServiceStub(channel)
        return stub

    async def _each(
        self, call: Callable[[Any], Awaitable[T]]
    ) -> list[tuple[int, T | BaseException]]:
        peers = self.peers
        results = await asyncio.gather(
            *(call(self._stub(p)) for p in peers), return_exceptions=True
        )
        return list(zip(peers, results, strict=True))

    async def statistics(self, request: Any) -> list[pb.ModelStatisticsResponse]:
        """Every peer's own statistics for ``request`` (an unreachable peer is skipped:
        a restarting worker starts from zero anyway)."""
        out = []
        for peer, result in await self._each(
            lambda stub: stub.ModelStatistics(request, timeout=PEER_TIMEOUT_S)
        ):
            if isinstance(result, BaseException):
                log.warning("statistics of worker %d unavailable: %s", peer, _describe(result))
            else:
                out.append(result)
        return out

    async def all_ready(self) -> bool:
        """True when every peer answers ServerReady with ready."""
        for _, result in await self._each(
            lambda stub: stub.ServerReady(pb.ServerReadyRequest(), timeout=PEER_TIMEOUT_S)
        ):
            if isinstance(result, BaseException) or not result.ready:
                return False
        return True

    async def model_ready(self, name: str, version: str) -> bool:
        request = pb.ModelReadyRequest(name=name, version=version)
        for _, result in await self._each(
            lambda stub: stub.ModelReady(request, timeout=PEER_TIMEOUT_S)
        ):
            if isinstance(result, BaseException) or not result.ready:
                return False
        return True

    async def load(self, name: str) -> None:
        """Load ``name`` on every peer; ModelLoadError names the workers that failed."""
        request = pb.RepositoryModelLoadRequest(model_name=name)
        await self._control(
            "load", name, lambda stub: stub.RepositoryModelLoad(request, timeout=LOAD_TIMEOUT_S)
        )

    async def unload(self, name: str) -> None:
        request = pb.RepositoryModelUnloadRequest(model_name=name)
        await self._control(
            "unload", name,
            lambda stub: stub.RepositoryModelUnload(request, timeout=LOAD_TIMEOUT_S),
        )

    async def _control(
        self, verb: str, name: str, call: Callable[[Any], Awaitable[Any]]
    ) -> None:
        failures = [
            f"worker {peer}: {_describe(result)}"
            for peer, result in await self._each(call)
            if isinstance(result, BaseException)
        ]
        if failures:
            cls = ModelNotReady if verb == "unload" else ModelLoadError
            raise cls(
                f"{verb} of model '{name}' succeeded on {self.identity} but failed on "
                + "; ".join(failures)
            )

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"


def _add(into: pb.StatisticDuration, other: pb.StatisticDuration) -> None:
    into.count += other.count
    into.ns += other.ns


_DURATIONS = (
    "success", "fail", "queue", "compute_input", "compute_infer", "compute_output",
    "cache_hit", "cache_miss",
)
_BATCH_DURATIONS = ("compute_input", "compute_infer", "compute_output")


def merge_statistics(responses: list[pb.ModelStatisticsResponse]) -> pb.ModelStatisticsResponse:
    """Sum per (model, version) over workers: counts and durations add, the last
    inference is the latest, batch statistics add per batch size."""
    merged: dict[tuple[str, str], pb.ModelStatistics] = {}
    batches: dict[tuple[str, str], dict[int, pb.InferBatchStatistics]] = {}
    for response in responses:
        for stats in response.model_stats:
            key = (stats.name, stats.version)
            into = merged.get(key)
            if into is None:
                into = merged[key] = pb.ModelStatistics(name=stats.name, version=stats.version)
                into.inference_stats.SetInParent()
                for name in _DURATIONS:
                    getattr(into.inference_stats, name).SetInParent()
                batches[key] = {}
            into.last_inference = max(into.last_inference, stats.last_inference)
            into.inference_count += stats.inference_count
            into.execution_count += stats.execution_count
            for name in _DURATIONS:
                _add(getattr(into.inference_stats, name), getattr(stats.inference_stats, name))
            for batch in stats.batch_stats:
                have = batches[key].get(batch.batch_size)
                if have is None:
                    have = batches[key][batch.batch_size] = pb.InferBatchStatistics(
                        batch_size=batch.batch_size
                    )
                for name in _BATCH_DURATIONS:
                    _add(getattr(have, name), getattr(batch, name))
    out = pb.ModelStatisticsResponse()
    for key in sorted(merged):
        stats = merged[key]
        stats.batch_stats.extend(batches[key][size] for size in sorted(batches[key]))
        out.model_stats.append(stats)
    return out
