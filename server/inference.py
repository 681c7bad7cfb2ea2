"""The transport-agnostic inference path: validate, batch, answer.

Servicers translate protobuf into an ``InferenceRequest`` (``server.converters``)
and call ``InferenceCore.infer``; nothing here knows about gRPC.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from native import bytes_codec

from .audit_entries import audit_failure, audit_refusal, audit_shadow, audit_success
from .audit_spool import AuditLog
from .errors import InvalidColumn, InvalidInput, ModelNotReady
from .ids import uuid7_str
from .loaded_models import LoadedModels, ServedVersion
from .router import ROUTING_KEY_PARAMETER, routing_key
from .shadow import ShadowRunner
from .status import failure_reason
from .tensors import DATATYPES, from_contents, from_raw

DECISION_ID_PARAMETER = "osprey_decision_id"


class InputTensor:
    """A request input: its declared datatype and shape, and its data.

    Fixed-size datatypes arrive decoded (``data``). BYTES stay as they came, the raw
    KServe buffer or the typed ``bytes_contents`` elements, until asked for: ``data``
    decodes them into an object array of UTF-8 ``str`` (what a plain ONNX string
    input takes; InvalidInput for an element that is malformed or not UTF-8), while
    ``buffer`` is the KServe buffer itself (typed elements encoded into one), which a
    feature-spec version's transform reads without a Python object per element.
    """

    __slots__ = ("_data", "_items", "_raw", "datatype", "name", "shape")

    def __init__(
        self,
        name: str,
        datatype: str,
        shape: tuple[int, ...],
        data: np.ndarray | None = None,
        *,
        raw: bytes | None = None,
        items: list[bytes] | None = None,
    ) -> None:
        if (data is None) + (raw is None) + (items is None) != 2:
            raise ValueError("an InputTensor holds exactly one of data, raw and items")
        self.name = name
        self.datatype = datatype
        self.shape = shape
        self._data = data
        self._raw = raw
        self._items = items

    @property
    def data(self) -> np.ndarray:
        """The tensor as an array of ``shape`` (BYTES: decoded once, as UTF-8 ``str``)."""
        if self._data is None:
            bytes_type = DATATYPES["BYTES"]
            if self._raw is not None:
                self._data = from_raw(self._raw, bytes_type, self.shape, self.name)
            else:
                self._data = from_contents(self._items, bytes_type, self.shape, self.name)
        return self._data

    def decode(self) -> None:
        """Decode now (BYTES), raising InvalidInput here rather than later."""
        self.data  # noqa: B018 - the property decodes and caches

    @property
    def buffer(self) -> bytes:
        """The KServe BYTES buffer (u32 LE length + bytes per element, C order)."""
        if self._raw is None:
            if self._items is None:
                raise InvalidInput(
                    f"input '{self.name}': {self.datatype} is not BYTES; it has no BYTES buffer"
                )
            elements = np.empty(len(self._items), dtype=object)
            elements[:] = self._items
            self._raw = bytes_codec.encode(elements)
        return self._raw


class Caller(NamedTuple):
    """Who sent a request (for the audit log): peer address, authenticated identity
    (a client certificate's CN, or that a client token was presented) and the W3C
    trace id from ``traceparent`` metadata. A named tuple: one is made per audited
    request, 0.3 µs against 1.6 for a frozen dataclass."""

    peer: str = ""
    principal: str = ""
    trace_id: str = ""


NO_CALLER = Caller()


# One of each per request: plain slotted dataclasses, not frozen ones (a frozen
# dataclass sets each field through object.__setattr__: 2.4 against 0.9 µs for nine
# fields). Nothing changes them after they are built.
@dataclass(slots=True)
class InferenceRequest:
    """One ModelInfer call, decoded."""

    model_name: str
    model_version: str
    id: str
    inputs: tuple[InputTensor, ...]
    requested_outputs: tuple[str, ...]  # empty = every output
    parameters: dict[str, Any] = field(default_factory=dict)
    deadline: float | None = None  # time.monotonic() seconds, from gRPC
    received_ns: int = field(default_factory=time.perf_counter_ns)
    caller: Caller = NO_CALLER


@dataclass(slots=True)
class OutputTensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray


@dataclass(slots=True)
class InferenceResult:
    model_name: str
    model_version: str
    id: str
    decision_id: str
    outputs: tuple[OutputTensor, ...]
    route: str = "stable"  # stable | canary (shadow copies never answer)
    queue_ns: int | None = None  # time spent in the batcher's queue


def _int_parameter(params: dict[str, Any], key: str, minimum: int) -> int | None:
    if key not in params:
        return None
    value = params[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInput(
            f"parameter '{key}' must be an integer >= {minimum}, got {value!r}"
        )
    return value


class InferenceCore:
    """Runs inference requests against the loaded models.

    A request that names no version is routed by the model's deployment
    (``LoadedModels.choose``, by routing key); one that names a version gets it.
    A shadow copy, when the route says so, starts after the answer is ready and
    never delays or fails it (``server.shadow``).
    """

    def __init__(
        self,
        models: LoadedModels,
        shadow: ShadowRunner | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self.models = models
        self.shadow = shadow
        self.audit = audit

    async def infer(self, request: InferenceRequest) -> InferenceResult:
        decision_id = uuid7_str()
        served: ServedVersion | None = None
        try:
            served, shadow, route = self._route(request, decision_id)
            try:
                result = await self._counted(served, request, decision_id, route)
            except ModelNotReady:
                if not served.retired or request.model_version:
                    raise
                # The version was swapped out between routing and queueing: route again.
                served, shadow, route = self._route(request, decision_id)
                result = await self._counted(served, request, decision_id, route)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self.audit is not None:
                await self.audit.record(audit_failure(request, decision_id, served, exc))
            raise
        if self.audit is not None:
            # strict: the answer waits until its record is on disk
            durable = self.audit.submit(audit_success, request, result, served,
                                        time.perf_counter_ns())
            if durable is not None:
                await durable
        if shadow is not None and self.shadow is not None:
            self.shadow.submit(shadow, decision_id, lambda: self._shadow_copy(shadow, request),
                               self._audit_shadow(request, decision_id, shadow))
        return result

    def _audit_shadow(
        self, request: InferenceRequest, decision_id: str, shadow: ServedVersion
    ) -> Callable[[dict[str, np.ndarray], float], None] | None:
        audit = self.audit
        if audit is None:
            return None

        def record(outputs: dict[str, np.ndarray], latency_ms: float) -> None:
            audit.record_nowait(audit_shadow(request, decision_id, shadow, outputs, latency_ms))

        return record

    async def record_refusal(self, request: Any, caller: Caller, exc: BaseException) -> None:
        """Audit a request refused before it could be decoded (its tensors unknown)."""
        if self.audit is not None:
            await self.audit.record(audit_refusal(request, caller, uuid7_str(), exc))

    def _route(
        self, request: InferenceRequest, decision_id: str
    ) -> tuple[ServedVersion, ServedVersion | None, str]:
        if request.model_version:
            return self.models.get(request.model_name, request.model_version), None, "stable"
        key = routing_key(request.parameters.get(ROUTING_KEY_PARAMETER), request.id, decision_id)
        return self.models.choose(request.model_name, key)

    async def _counted(
        self, served: ServedVersion, request: InferenceRequest, decision_id: str, route: str
    ) -> InferenceResult:
        if served.features is None:
            # A plain model takes BYTES as text: decode them now, refusing a malformed
            # tensor before the request counts against the model (as the converter did).
            for tensor in request.inputs:
                tensor.decode()
        try:
            result = await self._infer(served, request, decision_id, route)
        except asyncio.CancelledError:
            served.stats.failed(time.perf_counter_ns() - request.received_ns, "CANCELED")
            raise
        except ModelNotReady:
            if not served.retired:
                served.stats.failed(time.perf_counter_ns() - request.received_ns, "REJECTED")
            raise
        except Exception as exc:
            served.stats.failed(time.perf_counter_ns() - request.received_ns, failure_reason(exc))
            raise
        served.stats.succeeded(time.perf_counter_ns() - request.received_ns)
        return result

    async def _infer(
        self, served: ServedVersion, request: InferenceRequest, decision_id: str, route: str
    ) -> InferenceResult:
        if served.features is None:
            feeds, rows = self._validate_inputs(served, request)
        else:
            feeds, rows = self._validate_columns(served, request)
        wanted = self._requested_outputs(served, request)
        level = self._priority_level(served, request.parameters)
        deadline = self._deadline(request)
        waited: list[int] = []
        outputs = await served.batcher.infer(feeds, rows, level, deadline, waited)
        tensors = []
        for name in wanted:
            data = outputs[name]
            spec = next(o for o in served.model.outputs if o.name == name)
            tensors.append(OutputTensor(name, spec.datatype.name, tuple(data.shape), data))
        return InferenceResult(
            model_name=served.name,
            model_version=str(served.version),
            id=request.id,
            decision_id=decision_id,
            outputs=tuple(tensors),
            route=route,
            queue_ns=waited[0] if waited else None,
        )

    async def _shadow_copy(
        self, served: ServedVersion, request: InferenceRequest
    ) -> dict[str, np.ndarray]:
        """The candidate's answer to a mirrored request, at the lowest priority."""
        if served.features is None:
            feeds, rows = self._validate_inputs(served, request)
        else:
            feeds, rows = self._validate_columns(served, request)
        lowest = max(served.settings.priority_levels - 1, 0)
        outputs = await served.batcher.infer(feeds, rows, lowest, None)
        served.stats.succeeded(time.perf_counter_ns() - request.received_ns)
        return outputs

    @staticmethod
    def _validate_inputs(
        served: ServedVersion, request: InferenceRequest
    ) -> tuple[dict[str, np.ndarray], int]:
        model = served.model
        settings = served.settings
        where = f"model '{served.name}' version {served.version}"
        expected = {spec.name: spec for spec in model.inputs}
        seen: dict[str, InputTensor] = {}
        for tensor in request.inputs:
            if tensor.name in seen:
                raise InvalidInput(f"input '{tensor.name}' appears more than once")
            if tensor.name not in expected:
                raise InvalidInput(
                    f"unexpected input '{tensor.name}' for {where}; expected inputs: "
                    f"{', '.join(expected)}"
                )
            seen[tensor.name] = tensor
        missing = [name for name in expected if name not in seen]
        if missing:
            raise InvalidInput(
                f"missing input(s) {', '.join(repr(m) for m in missing)} for {where}; got "
                f"{', '.join(repr(n) for n in seen) or 'none'}"
            )
        rows = 1
        batch_of: str | None = None
        feeds: dict[str, np.ndarray] = {}
        for spec in model.inputs:
            tensor = seen[spec.name]
            if tensor.datatype != spec.datatype.name:
                raise InvalidInput(
                    f"input '{spec.name}': expected datatype {spec.datatype.name}, got "
                    f"{tensor.datatype}"
                )
            shape = tensor.shape
            model_shape = [-1, *spec.shape[1:]] if settings.batching else list(spec.shape)
            if len(shape) != len(model_shape) or any(
                m != -1 and m != s for m, s in zip(model_shape, shape, strict=True)
            ):
                raise InvalidInput(
                    f"input '{spec.name}': expected shape {model_shape} (-1 = any), got "
                    f"{list(shape)}"
                )
            if settings.batching:
                if batch_of is None:
                    rows, batch_of = shape[0], spec.name
                elif shape[0] != rows:
                    raise InvalidInput(
                        f"input '{spec.name}' has {shape[0]} rows but input '{batch_of}' has "
                        f"{rows}; all inputs must share the batch dimension"
                    )
            feeds[spec.name] = tensor.data
        if settings.batching:
            if rows == 0:
                raise InvalidInput(
                    f"input '{batch_of}' has 0 rows; a request must carry at least one row"
                )
            if rows > settings.max_request_rows:
                raise InvalidInput(
                    f"request has {rows} rows, more than the cap of {settings.max_request_rows} "
                    f"rows per request (max_request_rows) of {where}"
                )
        return feeds, rows

    @staticmethod
    def _validate_columns(
        served: ServedVersion, request: InferenceRequest
    ) -> tuple[dict[str, Any], int]:
        """The raw columns of a feature-spec version: names, datatypes, shapes, rows.

        Every error is InvalidColumn naming the column. BYTES columns are passed on as
        their KServe buffers; their elements (count, framing, length) are checked by
        the transform in the inference thread.
        """
        assert served.features is not None
        settings = served.settings
        where = f"model '{served.name}' version {served.version}"
        expected = {spec.name: spec for spec in served.features.inputs}
        seen: dict[str, InputTensor] = {}
        for tensor in request.inputs:
            if tensor.name in seen:
                raise InvalidColumn(tensor.name, f"column '{tensor.name}' appears more than once")
            if tensor.name not in expected:
                raise InvalidColumn(
                    tensor.name,
                    f"unknown column '{tensor.name}' for {where}: its feature spec has no such "
                    f"column; its columns are {', '.join(expected)}",
                )
            seen[tensor.name] = tensor
        missing = [name for name in expected if name not in seen]
        if missing:
            raise InvalidColumn(
                missing[0],
                f"missing column(s) {', '.join(repr(m) for m in missing)} for {where}: its "
                f"feature spec needs every column ({', '.join(expected)}); got "
                f"{', '.join(repr(n) for n in seen) or 'none'}",
            )
        rows = -1
        first = ""
        columns: dict[str, Any] = {}
        for spec in expected.values():
            tensor = seen[spec.name]
            kind = "categorical" if spec.datatype.name == "BYTES" else "numeric"
            if tensor.datatype != spec.datatype.name:
                raise InvalidColumn(
                    spec.name,
                    f"column '{spec.name}' ({kind}) must be {spec.datatype.name}, got "
                    f"{tensor.datatype}",
                )
            shape = tensor.shape
            fixed = spec.shape[0]
            if len(shape) != 2 or shape[1] != 1 or (fixed >= 0 and shape[0] != fixed):
                raise InvalidColumn(
                    spec.name,
                    f"column '{spec.name}' must have shape {list(spec.shape)} (-1 = any), got "
                    f"{list(shape)}",
                )
            if rows < 0:
                rows, first = shape[0], spec.name
            elif shape[0] != rows:
                raise InvalidColumn(
                    spec.name,
                    f"column '{spec.name}' has {shape[0]} rows but column '{first}' has "
                    f"{rows}; all columns must have the same number of rows",
                )
            columns[spec.name] = tensor.buffer if kind == "categorical" else tensor.data
        if rows == 0:
            raise InvalidColumn(
                first, f"column '{first}' has 0 rows; a request must carry at least one row"
            )
        if settings.batching and rows > settings.max_request_rows:
            raise InvalidInput(
                f"request has {rows} rows, more than the cap of {settings.max_request_rows} "
                f"rows per request (max_request_rows) of {where}"
            )
        return columns, rows

    @staticmethod
    def _requested_outputs(served: ServedVersion, request: InferenceRequest) -> list[str]:
        names = served.model.output_names
        if not request.requested_outputs:
            return list(names)
        for name in request.requested_outputs:
            if name not in names:
                raise InvalidInput(
                    f"unknown requested output '{name}' for model '{served.name}'; outputs: "
                    f"{', '.join(names)}"
                )
        if len(set(request.requested_outputs)) != len(request.requested_outputs):
            raise InvalidInput("an output is requested more than once")
        return list(request.requested_outputs)

    @staticmethod
    def _priority_level(served: ServedVersion, params: dict[str, Any]) -> int:
        """Queue index for the request: 0 is the highest priority level."""
        settings = served.settings
        levels = settings.priority_levels
        priority = _int_parameter(params, "priority", 0)
        if priority is None or priority == 0:
            priority = settings.default_priority_level
        if levels == 0:
            return 0  # priorities are off: every request shares one level
        if priority > levels:
            raise InvalidInput(
                f"parameter 'priority' is {priority} but model '{served.name}' has "
                f"{levels} priority level(s) (1 = highest)"
            )
        return max(priority, 1) - 1

    @staticmethod
    def _deadline(request: InferenceRequest) -> float | None:
        """The earlier of the gRPC deadline and the ``timeout`` parameter, loop time."""
        loop = asyncio.get_running_loop()
        candidates = []
        timeout_us = _int_parameter(request.parameters, "timeout", 0)
        if timeout_us:
            received_mono = time.monotonic() - (time.perf_counter_ns() - request.received_ns) / 1e9
            candidates.append(received_mono + timeout_us / 1e6)
        if request.deadline is not None:
            candidates.append(request.deadline)
        if not candidates:
            return None
        return loop.time() + (min(candidates) - time.monotonic())

