"""``python -m bench.compare --smoke`` runs in the suite, so the harness cannot rot: the
floor, raw ONNX Runtime and Osprey (audit off, relaxed and strict) each answer, and
correctly (Osprey's answers against ORT, the floor's shape and echoed id), in every
kind of scenario (unary, streaming, open loop; 1 to 1024 rows), and the run writes
its JSON, markdown table and plot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_compare_smoke(tmp_path: Path) -> None:
    output = tmp_path / "compare.json"
    out = subprocess.run(
        [sys.executable, "-m", "bench.compare", "--smoke", "--output", str(output)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=240,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    data = json.loads(output.read_text())
    assert data["problems"] == []
    assert {c["system"] for c in data["cells"]} == {
        "floor", "osprey-off", "osprey-relaxed", "osprey-strict"}
    for cell in data["cells"]:
        assert cell["requests_per_s"] > 0 and cell["errors"] == 0 and cell["wrong"] == 0
        assert cell["server_cpu_us_per_request"] > 0
        if cell["system"] != "floor":
            assert cell["checked"] > 0  # every Osprey answer compared with ORT
    assert {c["scenario"]["api"] for c in data["cells"]} == {"unary", "stream", "open"}
    assert {c["scenario"]["rows"] for c in data["cells"]} == {1, 256, 1024}
    assert set(data["summary"]["raw_ort_us_per_call"]) == {"1", "256", "1024"}
    assert any(v.startswith("p50 at c=1") for v in data["summary"]["verdicts"])
    assert any("server CPU per request, 256 row(s) c=8" in v for v in data["summary"]["verdicts"])
    assert output.with_suffix(".md").read_text().startswith("| system | scenario |")
    assert output.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("bad", ["PROBABILITY", "P:FP32", "P:FLOAT:1", "P:FP32:0", "P:FP32:x"])
def test_the_floor_refuses_a_bad_output_spec(bad: str) -> None:
    """In a fresh interpreter: the floor imports Osprey's inference stubs, which share
    their protobuf symbols with tritonclient's (this process holds those)."""
    out = subprocess.run([sys.executable, "-m", "bench.floor", "--output", bad],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert f"--output {bad!r}" in out.stderr
    assert "NAME:DATATYPE:WIDTH" in out.stderr or "DATATYPE one of" in out.stderr
