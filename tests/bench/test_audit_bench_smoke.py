"""``python -m bench.audit --smoke`` runs in the suite: three real servers (audit off,
relaxed, strict) answer correctly, and the shipper loads into SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_audit_bench_smoke(tmp_path: Path) -> None:
    output = tmp_path / "audit.json"
    out = subprocess.run(
        [sys.executable, "-m", "bench.audit", "--smoke", "--output", str(output)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=240,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "smoke ok" in out.stdout
    data = json.loads(output.read_text())
    assert data["exit_codes"] == {"off": 0, "relaxed": 0, "strict": 0}
    assert {c["mode"] for c in data["cells"]} == {"off", "relaxed", "strict"}
    assert all(c["errors"] == 0 and c["wrong"] == 0 and c["checked"] > 0 for c in data["cells"])
    assert data["shipping_rates"]["sqlite"] > 0 and data["shipping_rates"]["postgresql"] > 0
    assert data["fsync_ms"]["p99"] > 0
