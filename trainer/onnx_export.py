"""Export a fitted scikit-learn binary classifier as a serving-shaped ONNX scorer.

skl2onnx emits a ``label`` and a ``probabilities`` [N, 2] output. The graph is then
edited so the artifact has exactly one input and two outputs::

    features        FP32 [batch, F]
    fraud_score     FP32 [batch, 1]   probability of class 1
    fraud_decision  BOOL [batch, 1]   fraud_score >= threshold (a constant in the graph)

The threshold is stored as float32, the type the comparison runs in, so the value
written to ``config.json`` and the one in the graph are the same number.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.pipeline import Pipeline

log = logging.getLogger("osprey.trainer")

# Pinned rather than "newest skl2onnx knows": opset 17 runs on every onnxruntime >= 1.13
# (and on the ORT builds inside Triton images), so the artifact does not depend on the
# skl2onnx release that wrote it. "ai.onnx.ml" is a ceiling: skl2onnx 1.20 writes tree
# ensembles with ai.onnx.ml 1.
TARGET_OPSET: dict[str, int] = {"": 17, "ai.onnx.ml": 3}
BATCH_DIM = "batch"


@dataclass(frozen=True)
class ScorerSignature:
    """Tensor names of the exported scorer."""

    input: str = "features"
    score: str = "fraud_score"
    decision: str = "fraud_decision"


def float32_threshold(threshold: float) -> float:
    """``threshold`` rounded to the float32 the graph compares in (as a Python float)."""
    return float(np.float32(threshold))


def _probability_output(model: onnx.ModelProto) -> str:
    outputs = model.graph.output
    for out in outputs:
        if out.name == "probabilities":
            return out.name
    for out in outputs:
        if out.type.tensor_type.elem_type == TensorProto.FLOAT:
            return out.name
    raise ValueError(f"no probability output among {[o.name for o in outputs]}")


def _prune(graph: onnx.GraphProto) -> None:
    """Drop nodes and initializers nothing reachable from the graph outputs uses."""
    needed = {o.name for o in graph.output}
    kept: list[onnx.NodeProto] = []
    for node in reversed(graph.node):
        if needed.intersection(node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    kept.reverse()
    del graph.node[:]
    graph.node.extend(kept)
    inits = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)


def _dedupe_opsets(model: onnx.ModelProto) -> None:
    versions: dict[str, int] = {}
    for op in model.opset_import:
        versions[op.domain] = max(op.version, versions.get(op.domain, 0))
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(d, v) for d, v in sorted(versions.items()))


def _classifier(estimator: Any) -> Any:
    return estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator


def export_scorer(
    estimator: Any,
    n_features: int,
    threshold: float,
    *,
    signature: ScorerSignature | None = None,
    metadata: dict[str, str] | None = None,
) -> onnx.ModelProto:
    """Convert a fitted binary classifier (or Pipeline) into a score + decision graph.

    ``metadata`` lands in the model's ``metadata_props`` (string key/values).
    Raises ``ValueError`` if the classifier is not binary.
    """
    sig = signature or ScorerSignature()
    classes = list(getattr(_classifier(estimator), "classes_", []))
    if classes != [0, 1]:
        raise ValueError(f"expected a binary classifier with classes [0, 1], got {classes}")
    model = convert_sklearn(
        estimator,
        initial_types=[(sig.input, FloatTensorType([None, n_features]))],
        options={id(_classifier(estimator)): {"zipmap": False}},
        target_opset=TARGET_OPSET,
    )
    graph = model.graph
    if [i.name for i in graph.input] != [sig.input]:
        raise ValueError(f"unexpected inputs {[i.name for i in graph.input]}")
    probabilities = _probability_output(model)
    column = f"{sig.score}__positive_column"
    cutoff = f"{sig.decision}__threshold"
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([1], dtype=np.int64), name=column),
            numpy_helper.from_array(np.array(threshold, dtype=np.float32), name=cutoff),
        ]
    )
    graph.node.extend(
        [
            helper.make_node(
                "Gather", [probabilities, column], [sig.score], axis=1, name="osprey_score"
            ),
            helper.make_node(
                "GreaterOrEqual", [sig.score, cutoff], [sig.decision], name="osprey_decision"
            ),
        ]
    )
    del graph.output[:]
    graph.output.extend(
        [
            helper.make_tensor_value_info(sig.score, TensorProto.FLOAT, [BATCH_DIM, 1]),
            helper.make_tensor_value_info(sig.decision, TensorProto.BOOL, [BATCH_DIM, 1]),
        ]
    )
    del graph.input[:]
    graph.input.append(
        helper.make_tensor_value_info(sig.input, TensorProto.FLOAT, [BATCH_DIM, n_features])
    )
    del graph.value_info[:]
    _prune(graph)
    _dedupe_opsets(model)
    graph.name = "osprey_scorer"
    model.producer_name = "osprey.trainer"
    model.doc_string = (
        f"{type(_classifier(estimator)).__name__} via skl2onnx; {sig.score} = P(class 1), "
        f"{sig.decision} = {sig.score} >= {float32_threshold(threshold)!r}"
    )
    props = {"threshold": repr(float32_threshold(threshold)), **(metadata or {})}
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model, full_check=True)
    return model


def ort_score(
    model_bytes: bytes, features: npt.NDArray[np.float32], signature: ScorerSignature | None = None
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """Run the exported scorer with ONNX Runtime (CPU); returns (scores [N], decisions [N])."""
    try:
        import onnxruntime as ort
    except ImportError as exc:  # the runtime is an extra: cpu or gpu
        raise RuntimeError(
            "checking the exported model needs ONNX Runtime: pip install 'osprey[cpu]' "
            "(or 'osprey[gpu]')"
        ) from exc
    sig = signature or ScorerSignature()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    score, decision = session.run(
        [sig.score, sig.decision], {sig.input: np.ascontiguousarray(features, np.float32)}
    )
    return np.asarray(score, np.float32)[:, 0], np.asarray(decision, np.bool_)[:, 0]
