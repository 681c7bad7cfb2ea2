"""``python -m bench.sketch_cost --smoke`` runs in the suite: one server serving the
same spec model with and without the drift sketch, every answer checked against
the NumPy twin and ONNX Runtime, both target scenarios measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_sketch_cost_smoke(tmp_path: Path) -> None:
    output = tmp_path / "sketch.json"
    out = subprocess.run(
        [sys.executable, "-m", "bench.sketch_cost", "--smoke", "--output", str(output)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=180,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "smoke ok" in out.stdout
    data = json.loads(output.read_text())
    assert data["server"]["exit_code"] == 0, data["server"]["stderr_tail"]
    cells = {(r["scenario"]["rows"], r["scenario"]["concurrency"]) for r in data["rounds"]}
    assert cells == {(1, 1), (1, 64), (256, 8)}
    for cell in data["rounds"]:
        for which in ("sketch", "no-sketch"):
            result = cell[which]
            assert result["errors"] == 0 and result["wrong"] == 0, cell
            assert result["checked"] > 0 and result["requests_per_s"] > 0, cell
            assert result["cpu_us_per_request"] > 0, cell
    assert set(data["summary"]) == {"rows_1_c1", "rows_1_c64", "rows_256_c8"}
