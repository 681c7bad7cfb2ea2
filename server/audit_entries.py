"""Audit entries: references to a request and its answer, never copies or encodings.

A failure's entry is built on the request path; a success's once per event-loop
iteration with the others (``AuditLog.submit``), and ``server.audit_spool`` turns
each into its JSON line. Inputs are the request's tensors as they arrived (BYTES
columns of a feature-spec version as their raw KServe buffer and element count);
outputs are the answer's arrays.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .audit_spool import AuditEntry
from .router import ROUTING_KEY_PARAMETER
from .status import describe_quietly

if TYPE_CHECKING:
    from .inference import Caller, InferenceRequest, InferenceResult
    from .loaded_models import ServedVersion


def _wall_ns(received_perf_ns: int) -> int:
    """When a request arrived, on the wall clock."""
    return time.time_ns() - (time.perf_counter_ns() - received_perf_ns)


def _inputs(request: InferenceRequest) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tensor in request.inputs:
        if tensor.datatype == "BYTES":
            count = 1
            for d in tensor.shape:
                count *= d
            out[tensor.name] = (tensor.buffer, count)
        else:
            out[tensor.name] = tensor.data
    return out


def _rows(request: InferenceRequest) -> int:
    for tensor in request.inputs:
        if tensor.shape:
            return int(tensor.shape[0])
    return 0


def _routing_key(request: InferenceRequest) -> str:
    value = request.parameters.get(ROUTING_KEY_PARAMETER)
    return str(value) if isinstance(value, str | int | float) and value != "" else ""


def _declared(served: ServedVersion | None) -> tuple[str | None, str | None, float | None]:
    if served is None:
        return None, None, None
    settings = served.settings
    decision = settings.decision
    return (
        settings.score_output,
        decision.output if decision is not None else None,
        decision.threshold if decision is not None else None,
    )


def audit_success(
    request: InferenceRequest, result: InferenceResult, served: ServedVersion | None,
    answered_ns: int,
) -> AuditEntry:
    """``answered_ns``: ``time.perf_counter_ns()`` when the answer was ready (the entry
    is built a little later, with the other records of the event-loop iteration)."""
    score, decision, threshold = _declared(served)
    caller = request.caller
    return AuditEntry(
        decision_id=result.decision_id,
        at_ns=_wall_ns(request.received_ns),
        request_id=request.id,
        routing_key=_routing_key(request),
        model=result.model_name,
        version=int(result.model_version),
        route=result.route,
        rows=_rows(request),
        status="OK",
        error="",
        latency_us=(answered_ns - request.received_ns) // 1000,
        caller=caller.peer,
        principal=caller.principal,
        trace_id=caller.trace_id,
        inputs=_inputs(request),
        outputs={t.name: t.data for t in result.outputs},
        score_output=score,
        decision_output=decision,
        threshold=threshold,
        queue_us=result.queue_ns // 1000 if result.queue_ns is not None else None,
        personal=_personal(served),
    )


def _personal(served: ServedVersion | None) -> frozenset[str]:
    if served is None or served.features is None:
        return frozenset()
    return frozenset(served.features.spec.personal_columns)


def audit_shadow(
    request: InferenceRequest, decision_id: str, served: ServedVersion,
    outputs: dict[str, Any], latency_ms: float,
) -> AuditEntry:
    """The candidate's answer to a mirrored request (never returned to the client)."""
    score, decision, threshold = _declared(served)
    caller = request.caller
    return AuditEntry(
        decision_id=decision_id,
        at_ns=_wall_ns(request.received_ns),
        request_id=request.id,
        routing_key=_routing_key(request),
        model=served.name,
        version=served.version,
        route="shadow",
        rows=_rows(request),
        status="OK",
        error="",
        latency_us=int(latency_ms * 1000),
        caller=caller.peer,
        principal=caller.principal,
        trace_id=caller.trace_id,
        inputs=_inputs(request),
        outputs=outputs,
        score_output=score,
        decision_output=decision,
        threshold=threshold,
        personal=_personal(served),
    )


def audit_failure(
    request: InferenceRequest, decision_id: str, served: ServedVersion | None,
    exc: BaseException,
) -> AuditEntry:
    code, message = describe_quietly(exc)
    caller = request.caller
    try:
        inputs = _inputs(request)
    except Exception:  # a malformed tensor: the failure is recorded without it
        inputs = {}
    return AuditEntry(
        decision_id=decision_id,
        at_ns=_wall_ns(request.received_ns),
        request_id=request.id,
        routing_key=_routing_key(request),
        model=request.model_name,
        version=served.version if served is not None else (
            int(request.model_version) if request.model_version.isdigit() else None),
        route="stable",
        rows=_rows(request),
        status=code.name,
        error=message,
        latency_us=(time.perf_counter_ns() - request.received_ns) // 1000,
        caller=caller.peer,
        principal=caller.principal,
        trace_id=caller.trace_id,
        inputs=inputs,
        outputs={},
        personal=_personal(served),
    )


def audit_refusal(request: Any, caller: Caller, decision_id: str,
                  exc: BaseException) -> AuditEntry:
    """A ModelInferRequest that could not even be decoded."""
    code, message = describe_quietly(exc)
    version = str(getattr(request, "model_version", ""))
    return AuditEntry(
        decision_id=decision_id,
        at_ns=time.time_ns(),
        request_id=str(getattr(request, "id", "")),
        routing_key="",
        model=str(getattr(request, "model_name", "")),
        version=int(version) if version.isdigit() else None,
        route="stable",
        rows=0,
        status=code.name,
        error=message,
        latency_us=0,
        caller=caller.peer,
        principal=caller.principal,
        trace_id=caller.trace_id,
        inputs={},
        outputs={},
    )
