"""Registering versions: validation, numbering in SQL, artifacts, signatures, events."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from native.feature_spec import FeatureSpec, NumericColumn, Standardize
from registry.errors import InvalidArtifact, UnknownModel, UnknownVersion
from registry.service import NewVersion, Registry
from server.errors import InvalidInput
from tests.server.onnx_models import features_graph, write_model

from .conftest import Models


def test_versions_are_numbered_from_one(registry: Registry, models: Models) -> None:
    records = [registry.register("fraud", models.offset(k), actor="ana", reason="r")
               for k in (1.0, 2.0, 3.0)]
    assert [r.version for r in records] == [1, 2, 3]
    assert [v.version for v in registry.versions("fraud")] == [1, 2, 3]
    other = registry.register("churn", models.offset(9.0), actor="ana", reason="r")
    assert other.version == 1


def test_record_carries_digest_signature_and_lineage(
    registry: Registry, models: Models
) -> None:
    import datetime as dt

    window = (dt.datetime(2026, 1, 1, tzinfo=dt.UTC), dt.datetime(2026, 2, 1, tzinfo=dt.UTC))
    path = models.offset(1.0)
    record = registry.register(
        "fraud", path, actor="ana", reason="first",
        new=NewVersion(metrics={"auprc": 0.78}, parent_version=None, data_window=window,
                       training_job="job-7", code_version="abc123", tags={"team": "risk"},
                       score_output="OUTPUT"),
    )
    import hashlib

    assert record.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record.size_bytes == path.stat().st_size
    assert record.signature["inputs"] == [{"name": "INPUT", "datatype": "FP32", "shape": [-1, 1]}]
    assert record.signature["outputs"] == [{"name": "OUTPUT", "datatype": "FP32", "shape": [-1, 1]}]
    assert record.score_output == "OUTPUT"
    assert record.metrics == {"auprc": 0.78}
    assert record.lineage["training_job"] == "job-7"
    assert record.lineage["data_window_start"] == "2026-01-01T00:00:00+00:00"
    assert record.status == "ready" and record.created_by == "ana"
    assert registry.version("fraud", 1) == record
    assert registry.version("fraud", 1).tags == {"team": "risk"}
    events = registry.history("fraud")
    assert [e.kind for e in events] == ["model_created", "version_registered"]
    assert events[1].version == 1 and events[1].after["sha256"] == record.sha256
    assert all(e.actor == "ana" for e in events)


def test_artifact_is_copied_and_fetch_checks_it(
    registry: Registry, models: Models, home: Path
) -> None:
    path = models.offset(1.0)
    record = registry.register("fraud", path, actor="ana", reason="r")
    path.unlink()  # the registry keeps its own copy
    local = registry.fetch_artifact(record)
    assert local.is_relative_to(home / "artifacts")
    assert record.artifact_uri == local.resolve().as_uri()


def test_spec_version_signature_is_the_raw_columns(
    registry: Registry, tmp_path: Path
) -> None:
    rng = np.random.default_rng(0)
    frame = {"amount": rng.lognormal(3, 1, 500).astype(np.float32),
             "age": rng.integers(18, 90, 500).astype(np.float32)}
    spec = FeatureSpec((NumericColumn("amount", standardize=Standardize()),
                        NumericColumn("age", standardize=Standardize()))).fit(frame)
    profile = spec.reference_profile(frame)
    path = write_model(tmp_path / "repo", "spec", features_graph(2), None)
    record = registry.register(
        "scored", path, actor="ana", reason="r",
        new=NewVersion(feature_spec=spec.to_json(), reference_profile=profile.to_json()),
    )
    assert record.has_feature_spec
    assert [i["name"] for i in record.signature["inputs"]] == ["amount", "age"]
    assert record.signature["onnx_inputs"][0]["shape"] == [-1, 2]
    spec_text, profile_text = registry.feature_documents("scored", 1)
    assert spec_text is not None and FeatureSpec.from_json(spec_text) == spec
    assert profile_text is not None


# -- refused registrations register nothing ---------------------------------------------


def _nothing_registered(registry: Registry) -> None:
    with pytest.raises(UnknownModel):
        registry.versions("fraud")


def test_non_onnx_file_is_refused(registry: Registry, tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"this is not a protobuf")
    with pytest.raises(InvalidArtifact, match=r"model\.onnx: not a loadable ONNX model"):
        registry.register("fraud", bad, actor="ana", reason="r")
    _nothing_registered(registry)
    (event,) = registry.history()  # the attempt is on record, with why it failed
    assert (event.kind, event.model, event.actor) == ("registration_refused", "fraud", "ana")
    assert event.after is not None and "not a loadable ONNX model" in event.after["error"]


def test_missing_file_is_refused(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(InvalidArtifact, match="no such file"):
        registry.register("fraud", tmp_path / "absent.onnx", actor="ana", reason="r")
    _nothing_registered(registry)


def test_unknown_score_output_is_refused(registry: Registry, models: Models) -> None:
    with pytest.raises(InvalidArtifact, match="score output 'SCORE' is not an output"):
        registry.register("fraud", models.offset(1.0), actor="ana", reason="r",
                          new=NewVersion(score_output="SCORE"))
    _nothing_registered(registry)


def test_spec_without_profile_is_refused(registry: Registry, models: Models) -> None:
    with pytest.raises(InvalidArtifact, match="give both or neither"):
        registry.register("fraud", models.offset(1.0), actor="ana", reason="r",
                          new=NewVersion(feature_spec="{}"))
    _nothing_registered(registry)


def test_spec_that_does_not_fit_the_model_is_refused(
    registry: Registry, tmp_path: Path
) -> None:
    frame = {"amount": np.linspace(1, 100, 200).astype(np.float32)}
    spec = FeatureSpec((NumericColumn("amount"),)).fit(frame)
    path = write_model(tmp_path / "repo", "wide", features_graph(5), None)
    with pytest.raises(InvalidArtifact, match="produces 1 features per row but ONNX input"):
        registry.register("fraud", path, actor="ana", reason="r", new=NewVersion(
            feature_spec=spec.to_json(),
            reference_profile=spec.reference_profile(frame).to_json()))
    _nothing_registered(registry)


def test_invalid_settings_are_refused(registry: Registry, models: Models) -> None:
    with pytest.raises(InvalidArtifact, match="unknown key"):
        registry.register("fraud", models.offset(1.0), actor="ana", reason="r",
                          settings={"max_batch_sise": 8})
    _nothing_registered(registry)


@pytest.mark.parametrize("name", ["", "-x", "a/b", "x" * 129, "spaced name"])
def test_invalid_model_names_are_refused(registry: Registry, models: Models, name: str) -> None:
    with pytest.raises(InvalidInput, match="model name"):
        registry.register(name, models.offset(1.0), actor="ana", reason="r")


def test_reason_is_required(registry: Registry, models: Models) -> None:
    with pytest.raises(InvalidInput, match="a reason is required"):
        registry.register("fraud", models.offset(1.0), actor="ana", reason="  ")


def test_unknown_model_and_version_name_what_exists(registry: Registry, models: Models) -> None:
    registry.register("fraud", models.offset(1.0), actor="ana", reason="r")
    with pytest.raises(UnknownModel, match="model 'churn' is not registered; registered "
                                           "models: fraud"):
        registry.versions("churn")
    with pytest.raises(UnknownVersion, match=r"model 'fraud' has no version 7 \(versions: 1\)"):
        registry.version("fraud", 7)


def test_settings_are_kept_and_replaced_with_an_event(
    registry: Registry, models: Models
) -> None:
    registry.register("fraud", models.offset(1.0), actor="ana", reason="r",
                      settings={"max_batch_size": 64})
    registry.register("fraud", models.offset(2.0), actor="ana", reason="r")
    assert registry.model("fraud").settings == {"max_batch_size": 64}
    registry.set_settings("fraud", {"max_batch_size": 32}, actor="bo", reason="smaller")
    assert registry.model("fraud").settings == {"max_batch_size": 32}
    last = registry.history("fraud")[-1]
    assert last.kind == "model_settings_changed" and last.actor == "bo"
    assert json.dumps(last.before) == json.dumps({"settings": {"max_batch_size": 64}})
