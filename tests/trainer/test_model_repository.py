"""Model repository layout, config.json schema, reuse, retrain on sha mismatch, atomicity."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from trainer.datasets import CreditCardData
from trainer.fraud_demo import (
    TrainedFraudModel,
    ensure_demo_model,
    train_fraud_model,
    write_model_repository,
)

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
        "max_queue_delay_us": 200,
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


def hidden_entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_layout_and_files(tmp_path: Path, trained: TrainedFraudModel) -> None:
    version_dir = write_model_repository(trained, tmp_path / "models")
    assert version_dir == tmp_path / "models" / "fraud" / "1"
    model_dir = version_dir.parent
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "config.json"]
    assert sorted(p.name for p in version_dir.iterdir()) == ["evaluation.json", "model.onnx"]
    assert (version_dir / "model.onnx").read_bytes() == trained.onnx_bytes

    evaluation = json.loads((version_dir / "evaluation.json").read_text())
    assert evaluation["sha256"] == hashlib.sha256(trained.onnx_bytes).hexdigest()
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


def test_crash_leaves_previous_version(tmp_path: Path, trained: TrainedFraudModel) -> None:
    version_dir = write_model_repository(trained, tmp_path)
    before = {p.name: p.read_bytes() for p in version_dir.parent.rglob("*") if p.is_file()}
    with pytest.raises(RuntimeError, match="crash while writing"):
        write_model_repository(Exploding(trained), tmp_path)
    after = {p.name: p.read_bytes() for p in version_dir.parent.rglob("*") if p.is_file()}
    assert after == before
    assert hidden_entries(version_dir.parent) == []
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


def test_ensure_demo_model_explicit_repository(
    tmp_path: Path, trained: TrainedFraudModel, synthetic: CreditCardData
) -> None:
    repo = tmp_path / "elsewhere"
    out = ensure_demo_model(
        tmp_path / "home", repo=repo, load=lambda: synthetic, train=lambda _data: trained
    )
    assert out == repo / "fraud" / "1" and (out / "model.onnx").is_file()
    assert not (tmp_path / "home" / "models").exists()
