"""``python -m bench.soak --smoke`` runs in the suite: a real server under load while its
model is reloaded every second answers every request, every reload succeeds, and the
run samples the server's memory (the 10-minute run judges whether it stays flat)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_soak_smoke(tmp_path: Path) -> None:
    output = tmp_path / "soak.json"
    out = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--smoke", "--output", str(output)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=180,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    data = json.loads(output.read_text())
    assert data["problems"] == []
    assert data["requests"] > 100 and data["errors"] == 0 and data["wrong"] == 0
    assert data["reloads"] >= 3 and data["reload_failures"] == []
    assert len(data["samples"]) >= 10
    assert all(s["server_rss"] > 10 * 2**20 for s in data["samples"])
    assert data["summary"]["first_window_mb"] > 10
