"""``python -m bench.transform --smoke`` runs in the suite: the kernel and its twin
are timed side by side (and checked equal) at 1 and 64 rows, with and without the
fused sketch, so the transform benchmark cannot rot."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^\| (\d+) \| (cython|numpy twin) \| (yes|no) \| ([\d,.]+) \|")


def test_transform_bench_smoke() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.transform", "--smoke"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=180,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    cells = {
        (int(m[1]), m[2], m[3]): float(m[4].replace(",", ""))
        for m in map(ROW.match, out.stdout.splitlines()) if m
    }
    expected = {(rows, impl, sketch) for rows in (1, 64) for impl in ("cython", "numpy twin")
                for sketch in ("yes", "no")}
    assert set(cells) == expected, out.stdout
    assert all(us > 0 for us in cells.values()), cells
    assert "Fixed cost per call (Cython, 1 row, sketch" in out.stdout
