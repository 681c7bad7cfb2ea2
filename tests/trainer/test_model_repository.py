"""Model repository layout, config.json schema, feature documents, reuse, retrain on sha
mismatch or a missing spec, atomicity."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import onnx
import pytest

from native.feature_spec import FeatureSpec
from native.reference_profile import ReferenceProfile
from trainer.datasets import CreditCardData
from trainer.fraud_demo import (
    TrainedFraudModel,
    ensure_demo_model,
    train_fraud_model,
    write_model_repository,
)
from trainer.model_repository import verified_evaluation

from .synthetic import FAST_PARAMS

EXPECTED_CONFIG_KEYS = [
    "max_batch_size",
    "max_queue_delay_us",
    "max_queue_size",
    "max_request_rows",
    "instance_count",
    "intra_op_threads",
    "execution_providers",
    "warmup_batch_sizes",
    "version_policy",
    "score_output",
    "decision",
]


def expected_config(threshold: float) -> dict[str, Any]:
    return {
        "max_batch_size": 1024,
        "max_queue_delay_us": 0,
        "max_queue_size": 4096,
        "max_request_rows": 1048576,
        "instance_count": 1,
        "intra_op_threads": 1,
        "execution_providers": ["cuda", "cpu"],
        "warmup_batch_sizes": [1, 64],
        "version_policy": {"latest": 1},
        "score_output": "fraud_score",
        "decision": {"output": "fraud_decision", "threshold": threshold},
    }


VERSION_FILES = ["evaluation.json", "feature_spec.json", "model.onnx", "reference_profile.json"]


def hidden_entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_layout_and_files(tmp_path: Path, trained: TrainedFraudModel) -> None:
    version_dir = write_model_repository(trained, tmp_path / "models")
    assert version_dir == tmp_path / "models" / "fraud" / "1"
    model_dir = version_dir.parent
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "config.json"]
    assert sorted(p.name for p in version_dir.iterdir()) == VERSION_FILES
    assert (version_dir / "model.onnx").read_bytes() == trained.onnx_bytes
    spec = FeatureSpec.from_json((version_dir / "feature_spec.json").read_bytes())
    profile = ReferenceProfile.from_json((version_dir / "reference_profile.json").read_bytes())
    assert spec == trained.feature_spec and profile == trained.reference_profile
    assert spec.column_names == tuple(trained.raw_columns)
    assert profile.score is not None and profile.rows == trained.report.train_rows

    evaluation = json.loads((version_dir / "evaluation.json").read_text())
    assert evaluation["sha256"] == hashlib.sha256(trained.onnx_bytes).hexdigest()
    assert evaluation["feature_spec_sha256"] == sha256(version_dir / "feature_spec.json")
    assert evaluation["reference_profile_sha256"] == sha256(version_dir / "reference_profile.json")
    # the artifact names the spec it was trained with
    props = {p.key: p.value for p in onnx.load_from_string(trained.onnx_bytes).metadata_props}
    assert props["feature_spec_sha256"] == evaluation["feature_spec_sha256"]
    assert evaluation["raw_columns"] == trained.raw_columns
    assert evaluation["feature_transform"] == trained.report.feature_transform
    assert evaluation["model"] == "fraud" and evaluation["version"] == 1
    for key in (
        "auprc",
        "roc_auc",
        "threshold",
        "precision_at_threshold",
        "recall_at_threshold",
        "train_rows",
        "train_fraud",
        "eval_rows",
        "eval_fraud",
        "train_window_s",
        "eval_window_s",
        "model_family",
        "feature_names",
        "ort_vs_sklearn_max_abs_diff",
    ):
        assert key in evaluation, key
    assert evaluation["threshold"] == trained.threshold
    assert evaluation["auprc"] == trained.report.auprc

    config = json.loads((model_dir / "config.json").read_text())
    assert list(config) == EXPECTED_CONFIG_KEYS
    assert config == expected_config(trained.threshold)
    assert isinstance(config["decision"]["threshold"], float)
    # readable by a server running as another user (mkdtemp/mkstemp default to 0700/0600)
    assert version_dir.stat().st_mode & 0o755 == 0o755
    assert (model_dir / "config.json").stat().st_mode & 0o644 == 0o644


def test_config_is_accepted_by_the_server(tmp_path: Path, trained: TrainedFraudModel) -> None:
    from server import model_config
    version_dir = write_model_repository(trained, tmp_path, name="fraud", version=3)
    settings = model_config.load_model_settings(version_dir.parent / "config.json")
    assert settings.max_batch_size == 1024 and settings.warmup_batch_sizes == (1, 64)
    assert settings.score_output == "fraud_score"
    assert settings.decision.output == "fraud_decision"
    assert settings.decision.threshold == trained.threshold


def test_rewrite_replaces_version(tmp_path: Path, trained: TrainedFraudModel) -> None:
    version_dir = write_model_repository(trained, tmp_path)
    (version_dir / "stray.txt").write_text("old")
    assert write_model_repository(trained, tmp_path) == version_dir
    assert not (version_dir / "stray.txt").exists()
    assert hidden_entries(version_dir.parent) == []


class Exploding:
    """A model whose evaluation fails after model.onnx has been written."""

    def __init__(self, real: TrainedFraudModel) -> None:
        self.real = real

    @property
    def onnx_bytes(self) -> bytes:
        return b"half a model"

    def evaluation(self) -> dict[str, Any]:
        raise RuntimeError("crash while writing")

    def serving_config(self) -> dict[str, Any]:
        return self.real.serving_config()

    def feature_files(self) -> dict[str, bytes]:
        return self.real.feature_files()


class Plain:
    """A model without a feature spec (served as plain ONNX)."""

    def __init__(self, real: TrainedFraudModel, files: dict[str, bytes] | None = None) -> None:
        self.real = real
        self.files = files or {}

    @property
    def onnx_bytes(self) -> bytes:
        return self.real.onnx_bytes

    def evaluation(self) -> dict[str, Any]:
        return self.real.evaluation()

    def serving_config(self) -> dict[str, Any]:
        return self.real.serving_config()

    def feature_files(self) -> dict[str, bytes]:
        return self.files


def test_plain_version_without_spec(tmp_path: Path, trained: TrainedFraudModel) -> None:
    version_dir = write_model_repository(Plain(trained), tmp_path)
    assert sorted(p.name for p in version_dir.iterdir()) == ["evaluation.json", "model.onnx"]
    evaluation, reason = verified_evaluation(version_dir)
    assert evaluation is not None and reason == ""
    assert "feature_spec_sha256" not in evaluation
    evaluation, reason = verified_evaluation(version_dir, require_features=True)
    assert evaluation is None and "records no feature_spec_sha256" in reason
    # a spec nobody recorded is not trusted (the server would serve by it)
    (version_dir / "feature_spec.json").write_bytes(trained.feature_files()["feature_spec.json"])
    evaluation, reason = verified_evaluation(version_dir)
    assert evaluation is None and "records no feature_spec_sha256" in reason


def test_feature_files_come_in_pairs(tmp_path: Path, trained: TrainedFraudModel) -> None:
    only_spec = {"feature_spec.json": trained.feature_files()["feature_spec.json"]}
    with pytest.raises(ValueError, match="feature files"):
        write_model_repository(Plain(trained, only_spec), tmp_path)
    unknown = {**trained.feature_files(), "notes.txt": b""}
    with pytest.raises(ValueError, match="feature files"):
        write_model_repository(Plain(trained, unknown), tmp_path)
    assert not (tmp_path / "fraud" / "1").exists()


def test_verified_evaluation_checks_feature_files(
    tmp_path: Path, trained: TrainedFraudModel
) -> None:
    version_dir = write_model_repository(trained, tmp_path)
    assert verified_evaluation(version_dir, require_features=True)[0] is not None
    for name in ("feature_spec.json", "reference_profile.json"):
        path = version_dir / name
        original = path.read_bytes()
        path.write_bytes(original + b" ")  # same document, other bytes
        evaluation, reason = verified_evaluation(version_dir)
        assert evaluation is None and f"sha256 of {path}" in reason
        path.unlink()
        evaluation, reason = verified_evaluation(version_dir)
        assert evaluation is None and f"{path} does not exist" in reason
        path.write_bytes(original)
        assert verified_evaluation(version_dir, require_features=True)[0] is not None


def test_crash_leaves_previous_version(tmp_path: Path, trained: TrainedFraudModel) -> None:
    version_dir = write_model_repository(trained, tmp_path)
    before = {p.name: p.read_bytes() for p in version_dir.parent.rglob("*") if p.is_file()}
    with pytest.raises(RuntimeError, match="crash while writing"):
        write_model_repository(Exploding(trained), tmp_path)
    after = {p.name: p.read_bytes() for p in version_dir.parent.rglob("*") if p.is_file()}
    assert after == before
    assert hidden_entries(version_dir.parent) == []
    assert sorted(p.name for p in version_dir.iterdir()) == VERSION_FILES
    with pytest.raises(RuntimeError):
        write_model_repository(Exploding(trained), tmp_path, name="fresh")
    assert [p.name for p in (tmp_path / "fresh").iterdir()] == []


def test_leftover_staging_is_cleaned(tmp_path: Path, trained: TrainedFraudModel) -> None:
    stale = tmp_path / "fraud" / ".staging-1-abc"
    stale.mkdir(parents=True)
    (stale / "model.onnx").write_bytes(b"partial")
    write_model_repository(trained, tmp_path)
    assert not stale.exists()


def test_bad_version(tmp_path: Path, trained: TrainedFraudModel) -> None:
    with pytest.raises(ValueError, match="positive"):
        write_model_repository(trained, tmp_path, version=0)


def test_ensure_demo_model_reuses_and_retrains(
    tmp_path: Path, synthetic: CreditCardData, caplog: pytest.LogCaptureFixture
) -> None:
    loads: list[int] = []

    def load() -> CreditCardData:
        loads.append(1)
        return synthetic

    def train(data: CreditCardData) -> TrainedFraudModel:
        return train_fraud_model(data, params=FAST_PARAMS)

    caplog.set_level(logging.INFO, logger="osprey.trainer")
    home = tmp_path / "home"
    version_dir = ensure_demo_model(home, load=load, train=train)
    assert version_dir == home / "models" / "fraud" / "1"
    assert len(loads) == 1
    artifact = version_dir / "model.onnx"
    first = artifact.read_bytes()

    caplog.clear()
    assert ensure_demo_model(home, load=load, train=train) == version_dir
    assert len(loads) == 1, "a verified model must be reused, not retrained"
    assert "reusing" in caplog.text
    assert artifact.read_bytes() == first

    # a lost config.json is restored from evaluation.json without retraining
    config = version_dir.parent / "config.json"
    threshold = json.loads((version_dir / "evaluation.json").read_text())["threshold"]
    config.unlink()
    ensure_demo_model(home, load=load, train=train)
    assert len(loads) == 1
    assert json.loads(config.read_text()) == expected_config(threshold)

    # a tampered artifact fails its sha256 check and is retrained
    artifact.write_bytes(first + b"\0")
    caplog.clear()
    ensure_demo_model(home, load=load, train=train)
    assert len(loads) == 2
    assert "sha256" in caplog.text and "reusing" not in caplog.text
    evaluation = json.loads((version_dir / "evaluation.json").read_text())
    assert evaluation["sha256"] == hashlib.sha256(artifact.read_bytes()).hexdigest()

    # so is a version whose evaluation.json is gone
    (version_dir / "evaluation.json").unlink()
    ensure_demo_model(home, load=load, train=train)
    assert len(loads) == 3
    assert hidden_entries(version_dir.parent) == []

    # a tampered or missing feature document is retrained
    spec_file = version_dir / "feature_spec.json"
    spec_file.write_bytes(spec_file.read_bytes().replace(b'"median"', b'"mean"', 1))
    caplog.clear()
    ensure_demo_model(home, load=load, train=train)
    assert len(loads) == 4
    assert f"sha256 of {spec_file}" in caplog.text and "reusing" not in caplog.text
    (version_dir / "reference_profile.json").unlink()
    ensure_demo_model(home, load=load, train=train)
    assert len(loads) == 5
    assert sorted(p.name for p in version_dir.iterdir()) == VERSION_FILES

    # a version from before feature specs (no spec files, none recorded) is stale
    evaluation_file = version_dir / "evaluation.json"
    old = json.loads(evaluation_file.read_text())
    del old["feature_spec_sha256"], old["reference_profile_sha256"]
    evaluation_file.write_text(json.dumps(old))
    spec_file.unlink()
    (version_dir / "reference_profile.json").unlink()
    caplog.clear()
    ensure_demo_model(home, load=load, train=train)
    assert len(loads) == 6
    assert "records no feature_spec_sha256" in caplog.text
    assert sorted(p.name for p in version_dir.iterdir()) == VERSION_FILES

    # recorded and intact but unreadable by this build (say, an older schema): retrained
    spec_file.write_text('{"schema": "osprey.feature_spec/0", "columns": []}')
    current = json.loads(evaluation_file.read_text())
    current["feature_spec_sha256"] = sha256(spec_file)
    evaluation_file.write_text(json.dumps(current))
    caplog.clear()
    ensure_demo_model(home, load=load, train=train)
    assert len(loads) == 7
    assert "feature documents do not load" in caplog.text
    FeatureSpec.from_json(spec_file.read_bytes())

    # and a reused version is verified by all its hashes
    caplog.clear()
    ensure_demo_model(home, load=load, train=train)
    assert len(loads) == 7 and "reusing" in caplog.text
    assert hidden_entries(version_dir.parent) == []


def test_ensure_demo_model_explicit_repository(
    tmp_path: Path, trained: TrainedFraudModel, synthetic: CreditCardData
) -> None:
    repo = tmp_path / "elsewhere"
    out = ensure_demo_model(
        tmp_path / "home", repo=repo, load=lambda: synthetic, train=lambda _data: trained
    )
    assert out == repo / "fraud" / "1" and (out / "model.onnx").is_file()
    assert not (tmp_path / "home" / "models").exists()
