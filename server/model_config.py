"""Per-model serving settings: the ``config.json`` beside a model's versions.

Example (every key optional; these are the defaults except the last two)::

    {
      "max_batch_size": 256,          # rows per execution; 0 = the model does not batch
      "max_queue_delay_us": 0,        # wait this long only while a batch is short of rows
      "max_queue_size": 1024,         # queued requests before UNAVAILABLE "queue full"
      "max_request_rows": 1048576,    # larger requests are split up to this cap
      "instance_count": 1,            # ONNX Runtime sessions (and threads) per version
      "priority_levels": 0,           # 0 = no priorities; else 1 (highest) .. N
      "default_priority_level": 0,    # level of requests without `priority`
      "intra_op_threads": 1,
      "execution_providers": ["cuda", "cpu"],
      "warmup_batch_sizes": [1],
      "drift_sketch": true,           # feature-spec versions count drift bins per row
      "version_policy": {"latest": 1},   # or {"all": true} or {"specific": [1, 3]}
      "score_output": "fraud_score",
      "decision": {"output": "fraud_decision", "threshold": 0.5}
    }
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

PROVIDERS = ("cuda", "cpu")


@dataclass(frozen=True)
class VersionPolicy:
    """Which of a model's versions are served: latest N, all, or a specific list."""

    latest: int | None = 1
    specific: tuple[int, ...] = ()
    all: bool = False

    def select(self, available: list[int]) -> list[int]:
        """The versions to serve out of ``available``, ascending."""
        ordered = sorted(available)
        if self.all:
            return ordered
        if self.specific:
            return [v for v in ordered if v in self.specific]
        return ordered[-(self.latest or 1) :]

    def describe(self) -> str:
        if self.all:
            return "all"
        if self.specific:
            return "specific " + ",".join(map(str, self.specific))
        return f"latest {self.latest}"


@dataclass(frozen=True)
class Decision:
    """How a version's decision is read: an output, and/or a threshold on the score."""

    output: str | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class ModelSettings:
    """Validated settings of one model (all its versions)."""

    max_batch_size: int = 256
    # Triton's default: a batch is what is queued when an instance frees up (under load
    # requests queue while one executes, so batches form without waiting; a lone
    # request is never held back)
    max_queue_delay_us: int = 0
    max_queue_size: int = 1024
    max_request_rows: int = 1 << 20
    instance_count: int = 1
    priority_levels: int = 0
    default_priority_level: int = 0
    intra_op_threads: int = 1
    execution_providers: tuple[str, ...] = PROVIDERS
    warmup_batch_sizes: tuple[int, ...] = (1,)
    drift_sketch: bool = True
    version_policy: VersionPolicy = field(default_factory=VersionPolicy)
    score_output: str | None = None
    decision: Decision | None = None

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 0


def _int(data: dict[str, Any], key: str, default: int, minimum: int, where: str) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: '{key}' must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{where}: '{key}' must be >= {minimum}, got {value}")
    return value


def _policy(raw: Any, where: str) -> VersionPolicy:
    if not isinstance(raw, dict) or len(raw) != 1:
        raise ConfigError(
            f"{where}: 'version_policy' must be one of {{\"latest\": N}}, "
            f"{{\"all\": true}}, {{\"specific\": [versions]}}; got {raw!r}"
        )
    (kind, value), = raw.items()
    if kind == "latest" and isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return VersionPolicy(latest=value)
    if kind == "all" and value is True:
        return VersionPolicy(latest=None, all=True)
    if (
        kind == "specific"
        and isinstance(value, list)
        and value
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
    ):
        return VersionPolicy(latest=None, specific=tuple(sorted(set(value))))
    raise ConfigError(f"{where}: invalid version_policy {raw!r}")


def _decision(raw: Any, where: str) -> Decision | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not raw or set(raw) - {"output", "threshold"}:
        raise ConfigError(
            f"{where}: 'decision' must be an object with 'output' and/or 'threshold', "
            f"got {raw!r}"
        )
    output = raw.get("output")
    threshold = raw.get("threshold")
    if output is not None and not isinstance(output, str):
        raise ConfigError(f"{where}: decision.output must be a string, got {output!r}")
    if threshold is not None and (
        isinstance(threshold, bool) or not isinstance(threshold, int | float)
    ):
        raise ConfigError(f"{where}: decision.threshold must be a number, got {threshold!r}")
    if threshold is not None and not math.isfinite(threshold):
        # json.loads accepts NaN and Infinity; a NaN threshold would silently decide "no".
        raise ConfigError(f"{where}: decision.threshold must be a finite number, got {threshold!r}")
    return Decision(output=output, threshold=None if threshold is None else float(threshold))


def parse_model_settings(data: Any, where: str) -> ModelSettings:
    """Validate a decoded ``config.json``; ``where`` names it in error messages."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__}")
    known = set(ModelSettings.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known keys are "
            f"{', '.join(sorted(known))}"
        )
    d = ModelSettings()
    providers = data.get("execution_providers", list(d.execution_providers))
    if (
        not isinstance(providers, list)
        or not providers
        or any(p not in PROVIDERS for p in providers)
    ):
        raise ConfigError(
            f"{where}: 'execution_providers' must be a non-empty list of {PROVIDERS}, "
            f"got {providers!r}"
        )
    warmup = data.get("warmup_batch_sizes", list(d.warmup_batch_sizes))
    if not isinstance(warmup, list) or any(
        isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in warmup
    ):
        raise ConfigError(
            f"{where}: 'warmup_batch_sizes' must be a list of positive integers, got {warmup!r}"
        )
    drift_sketch = data.get("drift_sketch", d.drift_sketch)
    if not isinstance(drift_sketch, bool):
        raise ConfigError(f"{where}: 'drift_sketch' must be true or false, got {drift_sketch!r}")
    score = data.get("score_output")
    if score is not None and not isinstance(score, str):
        raise ConfigError(f"{where}: 'score_output' must be a string, got {score!r}")
    settings = ModelSettings(
        max_batch_size=_int(data, "max_batch_size", d.max_batch_size, 0, where),
        max_queue_delay_us=_int(data, "max_queue_delay_us", d.max_queue_delay_us, 0, where),
        max_queue_size=_int(data, "max_queue_size", d.max_queue_size, 1, where),
        max_request_rows=_int(data, "max_request_rows", d.max_request_rows, 1, where),
        instance_count=_int(data, "instance_count", d.instance_count, 1, where),
        priority_levels=_int(data, "priority_levels", d.priority_levels, 0, where),
        default_priority_level=_int(
            data, "default_priority_level", d.default_priority_level, 0, where
        ),
        intra_op_threads=_int(data, "intra_op_threads", d.intra_op_threads, 1, where),
        execution_providers=tuple(providers),
        warmup_batch_sizes=tuple(warmup),
        drift_sketch=drift_sketch,
        version_policy=_policy(data["version_policy"], where)
        if "version_policy" in data
        else d.version_policy,
        score_output=score,
        decision=_decision(data.get("decision"), where),
    )
    if settings.default_priority_level > settings.priority_levels:
        raise ConfigError(
            f"{where}: 'default_priority_level' {settings.default_priority_level} exceeds "
            f"'priority_levels' {settings.priority_levels}"
        )
    if settings.decision and settings.decision.threshold is not None and not settings.score_output:
        raise ConfigError(f"{where}: a decision threshold needs a 'score_output' to apply to")
    return settings


def load_model_settings(path: Path) -> ModelSettings:
    """Read and validate ``path``; a missing file means all defaults."""
    if not path.exists():
        return ModelSettings()
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    return parse_model_settings(data, str(path))
