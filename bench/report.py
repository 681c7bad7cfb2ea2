"""The results table (markdown) and the JSON record of a run."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .loadgen import LoadResult
from .reference import ReferenceResult

HEADER = (
    "| model | path | rows/req | conc. | req/s | rows/s | p50 ms | p99 ms | p99.9 ms "
    "| rows/exec | CPU server / client / other | errors |"
)
RULE = "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"


@dataclass(frozen=True)
class ModelResults:
    """Everything measured on one model."""

    model: str
    reference: list[ReferenceResult]
    serving: list[LoadResult]


def _ms(value: float) -> str:
    if math.isnan(value):
        return "—"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}"


def other_load(result: LoadResult) -> float:
    """Cores kept busy during the window by processes other than the server and client."""
    busy = result.cpu_busy
    if not {"machine", "server", "client"} <= busy.keys():
        return float("nan")
    return max(0.0, busy["machine"] - busy["server"] - busy["client"])


def _percent(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.0%}"


def _count(value: float) -> str:
    return f"{value:,.0f}"


def _reference_row(model: str, r: ReferenceResult) -> str:
    lat = r.latency
    return (
        f"| {model} | ORT in-process | {r.rows} | 1 | {_count(r.calls_per_s)} | "
        f"{_count(r.rows_per_s)} | {_ms(lat.p50_ms)} | {_ms(lat.p99_ms)} | {_ms(lat.p999_ms)} "
        f"| {r.rows} | — / 100% / — | — |"
    )


def _serving_row(model: str, r: LoadResult) -> str:
    s, lat = r.scenario, r.latency
    path = "gRPC unary" if s.api == "unary" else f"gRPC stream ({r.stream_mode})"
    per_exec = "—" if r.rows_per_execution is None else f"{r.rows_per_execution:.1f}"
    cpu = " / ".join(_percent(r.cpu_busy.get(k)) for k in ("server", "client"))
    cpu += f" / {_percent(other_load(r))}"
    errors = str(r.errors) + (f" ({r.wrong} wrong)" if r.wrong else "")
    return (
        f"| {model} | {path} | {s.rows} | {s.concurrency} | {_count(r.requests_per_s)} | "
        f"{_count(r.rows_per_s)} | {_ms(lat.p50_ms)} | {_ms(lat.p99_ms)} | {_ms(lat.p999_ms)} "
        f"| {per_exec} | {cpu} | {errors} |"
    )


def markdown_table(results: list[ModelResults]) -> str:
    """One row per ORT batch size and per serving scenario."""
    lines = [HEADER, RULE]
    for m in results:
        lines += [_reference_row(m.model, r) for r in m.reference]
        lines += [_serving_row(m.model, r) for r in m.serving]
    return "\n".join(lines)


def _load_json(r: LoadResult) -> dict[str, Any]:
    data = asdict(r)
    data["requests_per_s"] = r.requests_per_s
    data["rows_per_s"] = r.rows_per_s
    return data


def _reference_json(r: ReferenceResult) -> dict[str, Any]:
    data = asdict(r)
    data["calls_per_s"] = r.calls_per_s
    data["rows_per_s"] = r.rows_per_s
    return data


def write_json(path: Path, header: dict[str, Any], results: list[ModelResults]) -> None:
    """The run's settings, machine, and every measurement (NaN written as null)."""
    record = {
        **header,
        "models": [
            {
                "model": m.model,
                "reference": [_reference_json(r) for r in m.reference],
                "serving": [_load_json(r) for r in m.serving],
            }
            for m in results
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_nan_to_none(record), indent=2) + "\n")


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_to_none(v) for v in value]
    return value
