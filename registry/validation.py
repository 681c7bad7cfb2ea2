"""Checking a version before it is registered, and the signature it is recorded with.

A version is validated the way the server will load it: ONNX Runtime (CPU) opens
the file under the model's settings, the feature spec and reference profile (when
given) are parsed and compiled against the model's input, and the declared score
output and decision output must be outputs of the model. Anything wrong is an
``InvalidArtifact`` naming the file and the problem; nothing is registered.

The signature is what clients see: the public inputs (a spec version's raw
columns, else the ONNX inputs) and the outputs, each with datatype and shape
(-1 = any). Two versions are switch-compatible when their signatures are equal.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.errors import ConfigError, ModelLoadError
from server.model_config import ModelSettings

from .errors import InvalidArtifact


@dataclass(frozen=True)
class Checked:
    """What validation learned about a version."""

    signature: dict[str, Any]
    feature_spec: str | None
    reference_profile: str | None


def _tensors(specs: Any) -> list[dict[str, Any]]:
    return [{"name": s.name, "datatype": s.datatype.name, "shape": list(s.shape)} for s in specs]


def validate_version(
    name: str,
    onnx_path: Path,
    settings: ModelSettings,
    feature_spec: str | None,
    reference_profile: str | None,
    score_output: str | None,
    decision_output: str | None,
) -> Checked:
    """Load the version as the server would (CPU), or InvalidArtifact."""
    from native.feature_errors import DocumentError
    from native.feature_spec import FeatureSpec
    from native.reference_profile import ReferenceProfile
    from server.features import FeatureTransform
    from server.runtime import OnnxModel

    where = f"model '{name}': {onnx_path}"
    if (feature_spec is None) != (reference_profile is None):
        raise InvalidArtifact(
            f"{where}: a feature spec and a reference profile go together; give both or neither"
        )
    cpu = dataclasses.replace(settings, execution_providers=("cpu",), instance_count=1)
    try:
        model = OnnxModel(name, 0, onnx_path, cpu)
    except (ModelLoadError, ConfigError) as exc:
        detail = exc.message.removeprefix(f"model '{name}' version 0: ")
        raise InvalidArtifact(f"{where}: not a loadable ONNX model: {detail}") from None
    inputs = model.inputs
    if feature_spec is not None and reference_profile is not None:
        try:
            spec = FeatureSpec.from_json(feature_spec)
            profile = ReferenceProfile.from_json(reference_profile)
            features = FeatureTransform(where, spec, profile, model, sketch=False)
        except DocumentError as exc:
            raise InvalidArtifact(f"{where}: feature spec or profile: {exc}") from None
        except ModelLoadError as exc:
            raise InvalidArtifact(exc.message) from None
        inputs = features.inputs
        feature_spec, reference_profile = spec.to_json(), profile.to_json()
    outputs = [o.name for o in model.outputs]
    for label, output in (("score output", score_output), ("decision output", decision_output)):
        if output is not None and output not in outputs:
            raise InvalidArtifact(
                f"{where}: {label} '{output}' is not an output of the model (outputs: "
                f"{', '.join(outputs)})"
            )
    signature = {
        "inputs": _tensors(inputs),
        "outputs": _tensors(model.outputs),
        "onnx_inputs": _tensors(model.inputs),
    }
    return Checked(signature, feature_spec, reference_profile)


def public_signature(signature: dict[str, Any]) -> dict[str, Any]:
    """The part clients depend on: inputs and outputs (not the internal ONNX inputs)."""
    return {"inputs": signature.get("inputs"), "outputs": signature.get("outputs")}


def signature_difference(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """How ``new``'s public signature differs from ``old``'s (None when equal)."""
    changes = []
    for side in ("inputs", "outputs"):
        before = {t["name"]: t for t in old.get(side) or []}
        after = {t["name"]: t for t in new.get(side) or []}
        for tensor in sorted(before.keys() - after.keys()):
            changes.append(f"{side[:-1]} '{tensor}' removed")
        for tensor in sorted(after.keys() - before.keys()):
            changes.append(f"{side[:-1]} '{tensor}' added")
        for tensor in sorted(before.keys() & after.keys()):
            a, b = before[tensor], after[tensor]
            if (a["datatype"], a["shape"]) != (b["datatype"], b["shape"]):
                changes.append(
                    f"{side[:-1]} '{tensor}' {a['datatype']} {a['shape']} -> "
                    f"{b['datatype']} {b['shape']}"
                )
        if not changes and [t["name"] for t in old.get(side) or []] != [
            t["name"] for t in new.get(side) or []
        ]:
            changes.append(f"{side} reordered")
    return "; ".join(changes) or None
