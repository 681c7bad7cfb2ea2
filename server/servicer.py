"""``inference.GRPCInferenceService``: translation only.

Each RPC converts the request (``server.converters``), calls the core, and converts
the answer back. Errors are mapped to status codes by ``server.status`` in one
wrapper; nothing else decides a code.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from . import converters
from .auth import CALL_METADATA, peer_common_name
from .errors import ModelNotFound, OspreyError, Unsupported
from .inference import NO_CALLER, Caller, InferenceCore
from .loaded_models import LoadedModels
from .peers import WorkerGroup, merge_statistics
from .protocol.inference import grpc_service_pb2 as pb
from .protocol.inference import grpc_service_pb2_grpc as pb_grpc
from .status import status_for

log = logging.getLogger("osprey.server")

SERVER_NAME = "osprey"
# Exactly the Triton extensions implemented here.
EXTENSIONS = (
    "model_repository",
    "model_configuration",
    "schedule_policy",
    "parameters",
    "statistics",
)

T = TypeVar("T")


def translate_errors(
    method: Callable[..., Awaitable[T]],
) -> Callable[..., Awaitable[T]]:
    """Turn Osprey errors (and bugs) into gRPC status codes for a unary RPC."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> T:
        try:
            return await method(self, request, context)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            code, message = status_for(exc)
            await context.abort(code, message)
            raise  # unreachable: abort raises

    return wrapper


def caller_of(context: Any, tls: bool = True) -> Caller:
    """Who is calling: peer address, authenticated identity, W3C trace id. Without
    ``tls`` (a plaintext port) no client certificate can be there, and the auth
    context (several microseconds, and a GIL hand-off under load) is not asked."""
    peer = context.peer() or ""
    common_name = peer_common_name(context.auth_context() or {}) if tls else None
    metadata = CALL_METADATA.get()
    if metadata is None:
        metadata = context.invocation_metadata() or ()
    token = False
    traceparent: Any = ""
    for key, value in metadata:
        if key == "authorization":
            token = True
        elif key == "traceparent":
            traceparent = value
    principal = f"cert CN={common_name}" if common_name else ("client token" if token else "")
    trace_id = ""
    parts = traceparent.split("-") if isinstance(traceparent, str) else []
    if len(parts) == 4 and len(parts[1]) == 32:
        trace_id = parts[1]
    return Caller(peer, principal, trace_id)


def deadline_of(context: grpc.aio.ServicerContext) -> float | None:
    """The call's gRPC deadline as ``time.monotonic()`` seconds."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """KServe v2 / Triton inference service over the transport-agnostic core."""

    def __init__(
        self,
        core: InferenceCore,
        models: LoadedModels,
        version: str,
        is_ready: Callable[[], bool],
        group: WorkerGroup | None = None,
        fan_out: bool = True,
        tls: bool = True,
    ) -> None:
        """``group`` holds this worker's peers; with ``fan_out`` (the public port)
        server-wide answers cover every worker, without it (the peer socket) they
        cover this worker only."""
        self.core = core
        self.models = models
        self.version = version
        self.is_ready = is_ready
        self.group = group or WorkerGroup.single()
        self.fan_out = fan_out and bool(self.group.peers)
        self._worker_md = (("osprey-worker", f"{self.group.index}/{os.getpid()}"),)
        self.tls = tls  # callers may present client certificates (audited by their CN)

    def _tag_worker(self, context: Any) -> None:
        """Say which worker answered (trailing metadata), when there are several."""
        if self.group.count > 1:
            context.set_trailing_metadata(self._worker_md)

    def _versions(self, name: str, version: str) -> list[Any]:
        """One version, or every served version of ``name`` (NOT_FOUND if none)."""
        served = self.models.get(name, version)
        if version:
            return [served]
        return sorted((v for v in self.models.served() if v.name == name), key=lambda v: v.version)

    # -- health and metadata --------------------------------------------------------

    @translate_errors
    async def ServerLive(self, request: Any, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @translate_errors
    async def ServerReady(self, request: Any, context: Any) -> pb.ServerReadyResponse:
        ready = self.is_ready()
        if ready and self.fan_out:
            ready = await self.group.all_ready()
        return pb.ServerReadyResponse(ready=ready)

    @translate_errors
    async def ModelReady(self, request: Any, context: Any) -> pb.ModelReadyResponse:
        ready = self.models.is_ready(request.name, request.version)
        if ready and self.fan_out:
            ready = await self.group.model_ready(request.name, request.version)
        return pb.ModelReadyResponse(ready=ready)

    @translate_errors
    async def ServerMetadata(self, request: Any, context: Any) -> pb.ServerMetadataResponse:
        self._tag_worker(context)
        return pb.ServerMetadataResponse(
            name=SERVER_NAME, version=self.version, extensions=list(EXTENSIONS)
        )

    @translate_errors
    async def ModelMetadata(self, request: Any, context: Any) -> pb.ModelMetadataResponse:
        versions = self._versions(request.name, request.version)
        return converters.encode_model_metadata(request.name, versions)

    @translate_errors
    async def ModelConfig(self, request: Any, context: Any) -> pb.ModelConfigResponse:
        served = self.models.get(request.name, request.version)
        return pb.ModelConfigResponse(config=converters.encode_model_config(served))

    @translate_errors
    async def ModelStatistics(self, request: Any, context: Any) -> pb.ModelStatisticsResponse:
        if request.name:
            versions = self._versions(request.name, request.version)
        elif request.version:
            raise ModelNotFound("a version was given without a model name")
        else:
            versions = self.models.served()
        versions.sort(key=lambda v: (v.name, v.version))
        local = pb.ModelStatisticsResponse(
            model_stats=[converters.encode_statistics(v.stats) for v in versions]
        )
        if not self.fan_out:
            return local
        return merge_statistics([local, *await self.group.statistics(request)])

    # -- inference ------------------------------------------------------------------

    @translate_errors
    async def ModelInfer(self, request: Any, context: Any) -> pb.ModelInferResponse:
        caller = caller_of(context, self.tls) if self.core.audit is not None else NO_CALLER
        try:
            decoded = converters.decode_infer_request(request, deadline_of(context), caller)
        except OspreyError as exc:
            await self.core.record_refusal(request, caller, exc)
            raise
        result = await self.core.infer(decoded)
        self._tag_worker(context)
        return converters.encode_infer_response(result)

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Requests run concurrently; each answer (or error) is written as it completes.

        An error goes into ``error_message`` and the stream stays open.
        """
        answers: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        pending: set[asyncio.Task[None]] = set()
        deadline = deadline_of(context)
        caller = caller_of(context, self.tls) if self.core.audit is not None else NO_CALLER

        async def answer(request: Any) -> None:
            try:
                try:
                    decoded = converters.decode_infer_request(request, deadline, caller)
                except OspreyError as exc:
                    await self.core.record_refusal(request, caller, exc)
                    raise
                result = await self.core.infer(decoded)
                await answers.put(
                    pb.ModelStreamInferResponse(
                        infer_response=converters.encode_infer_response(result)
                    )
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _, message = status_for(exc)
                await answers.put(
                    pb.ModelStreamInferResponse(
                        error_message=message,
                        infer_response=pb.ModelInferResponse(
                            model_name=request.model_name,
                            model_version=request.model_version,
                            id=request.id,
                        ),
                    )
                )

        async def read() -> None:
            try:
                async for request in request_iterator:
                    task = asyncio.create_task(answer(request))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                while pending:
                    await asyncio.gather(*list(pending), return_exceptions=True)
            finally:
                await answers.put(None)

        reader = asyncio.create_task(read())
        try:
            while True:
                item = await answers.get()
                if item is None:
                    break
                yield item
        finally:
            reader.cancel()
            for task in list(pending):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    # -- repository -----------------------------------------------------------------

    @translate_errors
    async def RepositoryIndex(self, request: Any, context: Any) -> pb.RepositoryIndexResponse:
        return converters.encode_index(self.models.index(ready_only=request.ready))

    @translate_errors
    async def RepositoryModelLoad(
        self, request: Any, context: Any
    ) -> pb.RepositoryModelLoadResponse:
        if request.parameters:
            raise Unsupported(
                "RepositoryModelLoad parameters (config override, file content) are not "
                "supported; edit the model repository and load again"
            )
        await self.models.load(request.model_name)
        if self.fan_out:
            await self.group.load(request.model_name)
        return pb.RepositoryModelLoadResponse()

    @translate_errors
    async def RepositoryModelUnload(
        self, request: Any, context: Any
    ) -> pb.RepositoryModelUnloadResponse:
        await self.models.unload(request.model_name)
        if self.fan_out:
            await self.group.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    # -- not implemented ------------------------------------------------------------

    async def _unimplemented(self, what: str, context: Any) -> Any:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            f"{what} is not implemented by Osprey; send tensors in the request instead"
            if "SharedMemory" in what
            else f"{what} is not implemented by Osprey",
        )

    async def SystemSharedMemoryStatus(self, request: Any, context: Any) -> Any:
        return await self._unimplemented("SystemSharedMemoryStatus", context)

    async def SystemSharedMemoryRegister(self, request: Any, context: Any) -> Any:
        return await self._unimplemented("SystemSharedMemoryRegister", context)

    async def SystemSharedMemoryUnregister(self, request: Any, context: Any) -> Any:
        return await self._unimplemented("SystemSharedMemoryUnregister", context)

    async def CudaSharedMemoryStatus(self, request: Any, context: Any) -> Any:
        return await self._unimplemented("CudaSharedMemoryStatus", context)

    async def CudaSharedMemoryRegister(self, request: Any, context: Any) -> Any:
        return await self._unimplemented("CudaSharedMemoryRegister", context)

    async def CudaSharedMemoryUnregister(self, request: Any, context: Any) -> Any:
        return await self._unimplemented("CudaSharedMemoryUnregister", context)

    async def TraceSetting(self, request: Any, context: Any) -> Any:
        return await self._unimplemented("TraceSetting", context)

    async def LogSettings(self, request: Any, context: Any) -> Any:
        return await self._unimplemented("LogSettings", context)
