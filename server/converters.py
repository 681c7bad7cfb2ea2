"""Protobuf ⇄ domain objects for the KServe v2 / Triton protocol. No policy here."""

from __future__ import annotations

import time
from typing import Any

from .errors import InvalidInput, Unsupported
from .inference import (
    DECISION_ID_PARAMETER,
    NO_CALLER,
    Caller,
    InferenceRequest,
    InferenceResult,
    InputTensor,
)
from .loaded_models import IndexRow, ServedVersion
from .protocol.inference import grpc_service_pb2 as pb
from .protocol.inference import model_config_pb2 as mc
from .stats import Duration, VersionStats
from .tensors import datatype, element_count, from_contents, from_raw, to_raw

PLATFORM = "onnxruntime_onnx"
BACKEND = "onnxruntime"


def parameter_value(p: pb.InferParameter) -> Any:
    """The Python value of an InferParameter (None when unset)."""
    kind = p.WhichOneof("parameter_choice")
    return None if kind is None else getattr(p, kind)


def _check_no_shared_memory(params: Any, what: str) -> None:
    if "shared_memory_region" in params:
        raise Unsupported(
            f"{what} uses shared memory (parameter 'shared_memory_region'); Osprey does not "
            f"implement the shared-memory extension: send the data in the request"
        )


def decode_infer_request(
    request: pb.ModelInferRequest, deadline: float | None = None, caller: Caller = NO_CALLER
) -> InferenceRequest:
    """Decode inputs (raw or typed), parameters and requested outputs."""
    received = time.perf_counter_ns()
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(
            f"request has {len(raw)} raw_input_contents for {len(request.inputs)} inputs; "
            f"either every input is raw (in input order) or none is"
        )
    inputs = []
    for i, tensor in enumerate(request.inputs):
        name = tensor.name
        _check_no_shared_memory(tensor.parameters, f"input '{name}'")
        try:
            dt = datatype(tensor.datatype)
        except InvalidInput:
            raise InvalidInput(
                f"input '{name}': unknown datatype '{tensor.datatype}'"
            ) from None
        shape = tuple(tensor.shape)  # int64 dims: Python ints already
        if shape and min(shape) < 0:
            raise InvalidInput(f"input '{name}': shape {list(shape)} has a negative dimension")
        has_typed = tensor.HasField("contents") and tensor.contents.ByteSize() > 0
        if raw and has_typed:
            raise InvalidInput(
                f"input '{name}': both raw_input_contents and typed contents were sent; "
                f"send one of them"
            )
        if not raw and dt.contents_field is None:
            raise InvalidInput(
                f"input '{name}': {dt.name} travels only in raw_input_contents, not in "
                f"typed contents"
            )
        if dt.name == "BYTES":
            # Kept as sent: decoded as text for a plain model, read as a KServe
            # buffer by a feature spec's transform (see InputTensor).
            if raw:
                inputs.append(InputTensor(name, dt.name, shape, raw=raw[i]))
                continue
            items = list(tensor.contents.bytes_contents)
            count = element_count(shape)
            if len(items) != count:
                raise InvalidInput(
                    f"input '{name}': bytes_contents holds {len(items)} elements but shape "
                    f"{list(shape)} needs {count}"
                )
            inputs.append(InputTensor(name, dt.name, shape, items=items))
            continue
        if raw:
            data = from_raw(raw[i], dt, shape, name)
        else:
            assert dt.contents_field is not None  # refused above
            data = from_contents(getattr(tensor.contents, dt.contents_field), dt, shape, name)
        inputs.append(InputTensor(name, dt.name, shape, data))
    outputs = request.outputs
    for out in outputs:
        _check_no_shared_memory(out.parameters, f"output '{out.name}'")
        if "classification" in out.parameters:
            raise Unsupported(
                f"output '{out.name}' asks for classification, an extension Osprey does not "
                f"implement"
            )
    parameters = request.parameters
    return InferenceRequest(
        model_name=request.model_name,
        model_version=request.model_version,
        id=request.id,
        inputs=tuple(inputs),
        requested_outputs=tuple(o.name for o in outputs) if outputs else (),
        parameters={k: parameter_value(v) for k, v in parameters.items()} if parameters
        else {},
        deadline=deadline,
        received_ns=received,
        caller=caller,
    )


def encode_infer_response(result: InferenceResult) -> pb.ModelInferResponse:
    """Always ``raw_output_contents``, in output order; ``osprey_decision_id`` set."""
    response = pb.ModelInferResponse(
        model_name=result.model_name, model_version=result.model_version, id=result.id
    )
    response.parameters[DECISION_ID_PARAMETER].string_param = result.decision_id
    for out in result.outputs:
        response.outputs.add(name=out.name, datatype=out.datatype, shape=out.shape)
        response.raw_output_contents.append(to_raw(out.data))
    return response


def _tensor_metadata(versions: list[ServedVersion], inputs: bool) -> list[Any]:
    served = versions[-1]
    specs = served.inputs if inputs else served.model.outputs
    return [
        pb.ModelMetadataResponse.TensorMetadata(
            name=s.name, datatype=s.datatype.name, shape=list(s.shape)
        )
        for s in specs
    ]


def encode_model_metadata(name: str, versions: list[ServedVersion]) -> pb.ModelMetadataResponse:
    """Shapes include the batch dimension as -1 when the model batches (as Triton)."""
    return pb.ModelMetadataResponse(
        name=name,
        versions=[str(v.version) for v in versions],
        platform=PLATFORM,
        inputs=_tensor_metadata(versions, True),
        outputs=_tensor_metadata(versions, False),
    )


def _config_type(dt_name: str) -> int:
    return int(mc.DataType.Value("TYPE_STRING" if dt_name == "BYTES" else f"TYPE_{dt_name}"))


def encode_model_config(served: ServedVersion) -> mc.ModelConfig:
    """The ModelConfig subset clients read (perf_analyzer included)."""
    s = served.settings
    model = served.model
    skip = 1 if s.batching else 0
    config = mc.ModelConfig(
        name=served.name,
        platform=PLATFORM,
        backend=BACKEND,
        max_batch_size=s.max_batch_size,
        default_model_filename="model.onnx",
    )
    policy = s.version_policy
    if policy.all:
        config.version_policy.all.SetInParent()
    elif policy.specific:
        config.version_policy.specific.versions.extend(policy.specific)
    else:
        config.version_policy.latest.num_versions = policy.latest or 1
    for spec in served.inputs:  # a feature spec's raw columns, or the ONNX inputs
        config.input.add(
            name=spec.name, data_type=_config_type(spec.datatype.name), dims=spec.shape[skip:]
        )
    for spec in model.outputs:
        config.output.add(
            name=spec.name, data_type=_config_type(spec.datatype.name), dims=spec.shape[skip:]
        )
    if s.batching:
        db = config.dynamic_batching
        db.max_queue_delay_microseconds = s.max_queue_delay_us
        db.priority_levels = s.priority_levels
        db.default_priority_level = s.default_priority_level
        db.default_queue_policy.max_queue_size = s.max_queue_size
        db.default_queue_policy.allow_timeout_override = True
        db.preserve_ordering = True
    gpu = model.provider == "CUDAExecutionProvider"
    config.instance_group.add(
        name=f"{served.name}_0",
        kind=mc.ModelInstanceGroup.KIND_GPU if gpu else mc.ModelInstanceGroup.KIND_CPU,
        count=s.instance_count,
    )
    config.model_transaction_policy.decoupled = False
    config.parameters["execution_provider"].string_value = model.provider
    config.parameters["max_request_rows"].string_value = str(s.max_request_rows)
    if s.score_output:
        config.parameters["score_output"].string_value = s.score_output
    if s.decision and s.decision.output:
        config.parameters["decision_output"].string_value = s.decision.output
    if s.decision and s.decision.threshold is not None:
        config.parameters["decision_threshold"].string_value = repr(s.decision.threshold)
    if served.features is not None:
        f = served.features
        config.parameters["feature_spec"].string_value = f.spec.schema
        config.parameters["feature_count"].string_value = str(f.plan.n_features)
        config.parameters["model_input"].string_value = f.model_input
    return config


def _duration(d: Duration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=d.count, ns=d.ns)


def encode_statistics(stats: VersionStats) -> pb.ModelStatistics:
    out = pb.ModelStatistics(
        name=stats.model,
        version=str(stats.version),
        last_inference=stats.last_inference_ms,
        inference_count=stats.inference_count,
        execution_count=stats.execution_count,
    )
    inf = out.inference_stats
    inf.success.CopyFrom(_duration(stats.success))
    inf.fail.CopyFrom(_duration(stats.fail))
    inf.queue.CopyFrom(_duration(stats.queue))
    inf.compute_input.CopyFrom(_duration(stats.compute_input))
    inf.compute_infer.CopyFrom(_duration(stats.compute_infer))
    inf.compute_output.CopyFrom(_duration(stats.compute_output))
    inf.cache_hit.SetInParent()
    inf.cache_miss.SetInParent()
    for size in sorted(stats.batches):
        b = stats.batches[size]
        out.batch_stats.add(
            batch_size=size,
            compute_input=_duration(b.compute_input),
            compute_infer=_duration(b.compute_infer),
            compute_output=_duration(b.compute_output),
        )
    return out


def encode_index(rows: list[IndexRow]) -> pb.RepositoryIndexResponse:
    response = pb.RepositoryIndexResponse()
    for row in rows:
        response.models.add(name=row.name, version=row.version, state=row.state, reason=row.reason)
    return response
