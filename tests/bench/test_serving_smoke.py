"""The benchmark harness cannot rot: its smoke mode runs in the suite.

``python -m bench.serving --smoke`` starts a real server, drives it unary and
streaming, runs raw ONNX Runtime beside it, and checks every answer against it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_bench_smoke(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.serving", "--smoke", "--output", str(tmp_path / "r.json")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=180,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "smoke ok" in out.stdout
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["server"]["exit_code"] == 0, "the server did not drain cleanly on SIGTERM"
    for model in data["models"]:
        runs = model["serving"]
        assert {r["scenario"]["api"] for r in runs} == {"unary", "stream"}, runs
        for run in runs:
            assert run["requests"] > 0 and run["checked"] > 0, run["scenario"]
            assert run["errors"] == 0 and run["wrong"] == 0, run
        assert all(ref["rows_per_s"] > 0 for ref in model["reference"])
