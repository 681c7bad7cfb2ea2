"""Triton's perf_analyzer runs against Osprey unchanged (unary and --streaming, 1 and 2 workers).

Each case is ``python -m bench.perf_analyzer --smoke`` (a few seconds): a real server, the
real perf_analyzer binary, and checks that the server-side breakdown perf_analyzer prints
(queue, compute infer) came from our ModelStatistics, which moved by at least as much as
perf_analyzer says it sent. perf_analyzer must be installed (``make perf-analyzer``, which
``make test`` runs first): a missing binary fails here, it is never skipped.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.perf_analyzer import PerfAnalyzerMissing, locate

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def perf_analyzer_installed() -> None:
    try:
        locate()
    except PerfAnalyzerMissing as exc:
        pytest.fail(f"perf_analyzer is not usable: {exc}", pytrace=False)


@pytest.mark.usefixtures("perf_analyzer_installed")
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "streaming"])
def test_perf_analyzer_smoke(tmp_path: Path, workers: int, streaming: bool) -> None:
    command = [sys.executable, "-m", "bench.perf_analyzer", "--smoke",
               "--workers", str(workers), "--output", str(tmp_path / "r.json")]
    if streaming:
        command.append("--streaming")
    out = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["exit_code"] == 0, data["stdout_tail"] + data["stderr_tail"]
    rows = data["rows"]
    assert rows, f"no CSV rows from perf_analyzer:\n{data['stdout_tail']}"

    sent = 0
    for row in rows:
        where = f"concurrency {row['concurrency']}"
        assert row["infer_per_s"] > 0, where
        # perf_analyzer's server-side columns are ModelStatistics deltas it read from us.
        assert row["server_queue_us"] > 0, (where, row)
        assert row["server_compute_infer_us"] > 0, (where, row)
        server = row["server"]
        assert server.get("success_count", 0) > 0, (where, data["stdout_tail"])
        assert server.get("inference_count", 0) > 0 and server.get("execution_count", 0) > 0
        assert row["client_requests"] > 0, where
        sent += row["client_requests"]

    # Our own reading of ModelStatistics before and after the run (warm-up included).
    delta = data["model_statistics_delta"]
    assert delta["success_count"] >= sent, (delta, sent)
    assert delta["inference_count"] >= sent and delta["execution_count"] > 0, delta
    assert delta.get("fail_count", 0) == 0, delta
    for part in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert delta[f"{part}_ns"] > 0, (part, delta)
        assert delta[f"{part}_count"] > 0, (part, delta)
