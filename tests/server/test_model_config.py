"""Per-model settings (``config.json``): defaults, validation, version policies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from server.errors import ConfigError
from server.model_config import (
    Decision,
    ModelSettings,
    VersionPolicy,
    load_model_settings,
    parse_model_settings,
)

WHERE = "models/fraud/config.json"


def parse(data: Any) -> ModelSettings:
    return parse_model_settings(data, WHERE)


def test_defaults() -> None:
    s = parse({})
    assert s == ModelSettings()
    assert s.max_batch_size == 256
    assert s.max_queue_delay_us == 0
    assert s.max_queue_size == 1024
    assert s.max_request_rows == 1 << 20
    assert s.instance_count == 1
    assert s.priority_levels == 0
    assert s.default_priority_level == 0
    assert s.intra_op_threads == 1
    assert s.execution_providers == ("cuda", "cpu")
    assert s.warmup_batch_sizes == (1,)
    assert s.version_policy == VersionPolicy(latest=1)
    assert s.score_output is None and s.decision is None
    assert s.drift_sketch is True
    assert s.batching is True
    assert parse({"max_batch_size": 0}).batching is False


def test_every_key(tmp_path: Path) -> None:
    data = {
        "max_batch_size": 64,
        "max_queue_delay_us": 0,
        "max_queue_size": 5,
        "max_request_rows": 1000,
        "instance_count": 3,
        "priority_levels": 3,
        "default_priority_level": 2,
        "intra_op_threads": 2,
        "execution_providers": ["cpu"],
        "warmup_batch_sizes": [1, 8, 64],
        "drift_sketch": False,
        "version_policy": {"specific": [3, 1, 3]},
        "score_output": "fraud_score",
        "decision": {"output": "fraud_decision", "threshold": 0.5},
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    s = load_model_settings(path)
    assert s.max_batch_size == 64 and s.max_queue_delay_us == 0 and s.max_queue_size == 5
    assert s.max_request_rows == 1000 and s.instance_count == 3
    assert s.priority_levels == 3 and s.default_priority_level == 2
    assert s.intra_op_threads == 2
    assert s.execution_providers == ("cpu",)
    assert s.warmup_batch_sizes == (1, 8, 64)
    assert s.drift_sketch is False
    assert s.version_policy.specific == (1, 3)
    assert s.score_output == "fraud_score"
    assert s.decision == Decision(output="fraud_decision", threshold=0.5)


def test_missing_file_means_defaults(tmp_path: Path) -> None:
    assert load_model_settings(tmp_path / "config.json") == ModelSettings()


def test_invalid_json_names_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"max_batch_size": 8,}')
    with pytest.raises(ConfigError) as err:
        load_model_settings(path)
    assert str(path) in err.value.message and "JSON" in err.value.message


def test_decision_threshold_only() -> None:
    s = parse({"score_output": "p", "decision": {"threshold": 1}})
    assert s.decision == Decision(output=None, threshold=1.0)
    assert isinstance(s.decision.threshold, float)
    assert parse({"decision": None}).decision is None


@pytest.mark.parametrize(
    ("data", "fragments"),
    [
        ([1, 2], ["JSON object", "list"]),
        ({"max_batch_sise": 8}, ["unknown key", "max_batch_sise", "max_batch_size"]),
        ({"max_batch_size": -1}, ["'max_batch_size'", ">= 0", "-1"]),
        ({"max_batch_size": "8"}, ["'max_batch_size'", "integer", "'8'"]),
        ({"max_batch_size": 8.0}, ["'max_batch_size'", "integer"]),
        ({"max_batch_size": True}, ["'max_batch_size'", "integer", "True"]),
        ({"max_queue_delay_us": -5}, ["'max_queue_delay_us'", ">= 0"]),
        ({"max_queue_size": 0}, ["'max_queue_size'", ">= 1", "0"]),
        ({"max_request_rows": 0}, ["'max_request_rows'", ">= 1"]),
        ({"instance_count": 0}, ["'instance_count'", ">= 1"]),
        ({"priority_levels": -1}, ["'priority_levels'", ">= 0"]),
        ({"default_priority_level": -1}, ["'default_priority_level'", ">= 0"]),
        (
            {"priority_levels": 2, "default_priority_level": 3},
            ["'default_priority_level' 3", "'priority_levels' 2"],
        ),
        ({"intra_op_threads": 0}, ["'intra_op_threads'", ">= 1"]),
        ({"execution_providers": []}, ["'execution_providers'", "non-empty"]),
        ({"execution_providers": ["tensorrt"]}, ["'execution_providers'", "tensorrt"]),
        ({"execution_providers": "cpu"}, ["'execution_providers'", "'cpu'"]),
        ({"warmup_batch_sizes": [0]}, ["'warmup_batch_sizes'", "positive"]),
        ({"warmup_batch_sizes": 4}, ["'warmup_batch_sizes'", "list"]),
        ({"warmup_batch_sizes": [True]}, ["'warmup_batch_sizes'"]),
        ({"version_policy": "latest"}, ["'version_policy'", "latest", "all", "specific"]),
        ({"version_policy": {"latest": 1, "all": True}}, ["'version_policy'"]),
        ({"version_policy": {"latest": 0}}, ["version_policy", "'latest': 0"]),
        ({"version_policy": {"latest": True}}, ["version_policy"]),
        ({"version_policy": {"all": False}}, ["version_policy", "'all': False"]),
        ({"version_policy": {"specific": []}}, ["version_policy", "'specific': []"]),
        ({"version_policy": {"specific": [0, 1]}}, ["version_policy"]),
        ({"version_policy": {"specific": ["1"]}}, ["version_policy"]),
        ({"version_policy": {"newest": 1}}, ["version_policy", "newest"]),
        ({"score_output": 3}, ["'score_output'", "string", "3"]),
        ({"decision": "yes"}, ["'decision'", "output", "threshold", "'yes'"]),
        ({"decision": {}}, ["'decision'"]),
        ({"decision": {"output": "d", "limit": 1}}, ["'decision'", "limit"]),
        ({"decision": {"output": 1}}, ["decision.output", "string"]),
        (
            {"decision": {"threshold": "0.5"}, "score_output": "p"},
            ["decision.threshold", "number", "'0.5'"],
        ),
        ({"decision": {"threshold": True}, "score_output": "p"}, ["decision.threshold"]),
        (
            {"decision": {"threshold": float("nan")}, "score_output": "p"},
            ["decision.threshold", "finite"],
        ),
        ({"decision": {"threshold": 0.5}}, ["threshold", "'score_output'"]),
    ],
)
def test_validation_errors(data: Any, fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        parse(data)
    message = err.value.message
    assert message.startswith(WHERE), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


@pytest.mark.parametrize(
    ("policy", "available", "selected"),
    [
        (VersionPolicy(), [1, 2, 3], [3]),
        (VersionPolicy(), [3, 1, 2], [3]),
        (VersionPolicy(latest=2), [1, 2, 3], [2, 3]),
        (VersionPolicy(latest=5), [2, 7], [2, 7]),
        (VersionPolicy(latest=None, all=True), [3, 1, 10], [1, 3, 10]),
        (VersionPolicy(latest=None, specific=(1, 3)), [1, 2, 3], [1, 3]),
        (VersionPolicy(latest=None, specific=(4,)), [1, 2, 3], []),
        (VersionPolicy(latest=2), [], []),
    ],
)
def test_version_policy_select(
    policy: VersionPolicy, available: list[int], selected: list[int]
) -> None:
    assert policy.select(available) == selected


def test_version_policy_parsed_and_described() -> None:
    assert parse({"version_policy": {"latest": 2}}).version_policy.describe() == "latest 2"
    every = parse({"version_policy": {"all": True}}).version_policy
    assert every.all and every.describe() == "all"
    assert every.select([2, 1]) == [1, 2]
    picked = parse({"version_policy": {"specific": [3, 1]}}).version_policy
    assert picked.describe() == "specific 1,3"
    assert picked.select([1, 2, 3, 4]) == [1, 3]


@pytest.mark.parametrize("value", [0, 1, "false", None, [True]])
def test_drift_sketch_must_be_a_boolean(value: Any) -> None:
    with pytest.raises(ConfigError, match=f"{WHERE}: 'drift_sketch' must be true or false"):
        parse({"drift_sketch": value})
